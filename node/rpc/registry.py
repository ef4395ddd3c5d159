"""The RPC method registry: what a server exposes, and its OpenRPC description.

Owns ``MethodRegistry`` (methods by name with declared params, roles, result, errors
and deadline), ``Method``, ``Result``, ``CallContext`` (what a handler learns about its
caller) and the OpenRPC document generated from the registry and served by the
built-in ``rpc.discover``.

How the node mounts a method::

    rpc = MethodRegistry(title="dvp node", version="0.1.0")

    @rpc.method("dvp_getAttestation",
                Param("commitment", Hex(32), description="salted document hash"),
                Param("with_proof", Bool(), default=False),
                roles={"verifier", "auditor"}, errors=(NotFound,),
                result=Result("attestation", "issuer, time, status and proofs"))
    async def get_attestation(ctx: CallContext, commitment: bytes, with_proof: bool):
        ...  # raise NotFound(...) / Busy(...) / Rejected(code, msg); return JSON-able

Rules:
- A handler is ``async def handler(ctx, **params)`` and returns a JSON-able value
  (bytes as hex: the encoder refuses anything JSON cannot carry).
- Registration fails loudly (TypeError/ValueError) on a sync handler, a handler whose
  keyword arguments differ from the declared params, a duplicate name, or a name in
  the ``rpc.`` namespace that JSON-RPC reserves.
- ``roles=None``: public; ``roles=()``: any authenticated member; otherwise the
  caller needs one of the roles. The OpenRPC document says which (``x-access``).
- ``timeout_s=None`` takes the server's default deadline.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from node.rpc.auth import Principal
from node.rpc.errors import InvalidParams, RpcError, Unauthorised
from node.rpc.params import Param

__all__ = ["CallContext", "Handler", "Method", "MethodRegistry", "OPENRPC_VERSION", "Result"]

JsonValue = Any
Handler = Callable[..., Awaitable[JsonValue]]

OPENRPC_VERSION: Final = "1.2.6"


def _fixed(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {**required, **(optional or {})},
        "required": sorted(required),
        "additionalProperties": False,
    }


_STR: Final = {"type": "string"}
_SCHEMA: Final = {"type": "object"}  # a JSON Schema (its own meta-schema checks the rest)
# The subset of OpenRPC 1.2.6 that ``Method.describe`` produces (self-contained: a
# validator needs no network to check ``rpc.discover``'s own answer).
_OPENRPC_SCHEMA: Final = _fixed(
    {
        "openrpc": {"const": OPENRPC_VERSION},
        "info": _fixed({"title": _STR, "version": _STR}),
        "methods": {
            "type": "array",
            "items": _fixed(
                {
                    "name": _STR,
                    "paramStructure": {"const": "by-name"},
                    "params": {
                        "type": "array",
                        "items": _fixed(
                            {"name": _STR, "required": {"type": "boolean"}, "schema": _SCHEMA},
                            {"description": _STR},
                        ),
                    },
                    "result": _fixed({"name": _STR, "description": _STR, "schema": _SCHEMA}),
                    "errors": {
                        "type": "array",
                        "items": _fixed({"code": {"type": "integer"}, "message": _STR}),
                    },
                    "x-access": {
                        "anyOf": [
                            {"enum": ["public", "member"]},
                            {"type": "array", "items": _STR, "minItems": 1},
                        ]
                    },
                },
                {"summary": _STR, "description": _STR},
            ),
        },
    }
)


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a handler knows about its caller. ``principal`` is None for anonymous."""

    method: str
    principal: Principal | None
    request_id: JsonValue
    is_notification: bool
    remote: str | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """The OpenRPC description of a method's result (``schema`` is JSON Schema)."""

    name: str = "result"
    description: str = ""
    schema: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Method:
    """One registered method. ``roles`` None = public; empty = any authenticated member."""

    name: str
    handler: Handler
    params: tuple[Param, ...]
    by_name: dict[str, Param]
    roles: frozenset[str] | None
    summary: str
    description: str
    result: Result
    errors: tuple[type[RpcError], ...]
    timeout_s: float | None

    def describe(self) -> dict[str, Any]:
        """This method as an OpenRPC Method object."""
        errors: dict[int, type[RpcError]] = {}
        if self.params:
            errors[InvalidParams.code] = InvalidParams
        if self.roles is not None:
            errors[Unauthorised.code] = Unauthorised
        for err in self.errors:
            errors[err.code] = err
        doc: dict[str, Any] = {
            "name": self.name,
            "paramStructure": "by-name",
            "params": [p.describe() for p in self.params],
            "result": {
                "name": self.result.name,
                "description": self.result.description,
                "schema": self.result.schema,
            },
            "errors": [{"code": c, "message": e.title} for c, e in sorted(errors.items())],
            # Not part of OpenRPC: who may call it. "public", "member" (any
            # authenticated caller), or the list of roles of which one is needed.
            "x-access": (
                "public" if self.roles is None else sorted(self.roles) if self.roles else "member"
            ),
        }
        if self.summary:
            doc["summary"] = self.summary
        if self.description:
            doc["description"] = self.description
        return doc


class MethodRegistry:
    """The methods a server exposes. ``rpc.discover`` is built in; ``rpc.*`` is reserved."""

    def __init__(self, *, title: str = "dvp node", version: str = "0.1.0") -> None:
        self.title = title
        self.version = version
        self._methods: dict[str, Method] = {}
        self._openrpc: dict[str, Any] | None = None
        self._add(
            "rpc.discover",
            self._discover,
            params=(),
            roles=None,
            summary="This API's OpenRPC document.",
            description="",
            result=Result(
                "OpenRPC document",
                "OpenRPC 1.2.6 description of every method, its params, result and errors",
                _OPENRPC_SCHEMA,
            ),
            errors=(),
            timeout_s=None,
        )

    async def _discover(self, ctx: CallContext) -> JsonValue:
        return self.openrpc()

    def add(
        self,
        name: str,
        handler: Handler,
        *,
        params: Collection[Param] = (),
        roles: Collection[str] | None = None,
        summary: str = "",
        description: str = "",
        result: Result | None = None,
        errors: Collection[type[RpcError]] = (),
        timeout_s: float | None = None,
    ) -> Method:
        """Register ``handler`` (``async def handler(ctx, **params)``) under ``name``."""
        if name.startswith("rpc."):
            raise ValueError("method names starting with 'rpc.' are reserved by JSON-RPC")
        return self._add(
            name,
            handler,
            params=tuple(params),
            roles=None if roles is None else frozenset(roles),
            summary=summary,
            description=description,
            result=result if result is not None else Result(),
            errors=tuple(errors),
            timeout_s=timeout_s,
        )

    def method(self, name: str, *params: Param, **options: Any) -> Callable[[Handler], Handler]:
        """Decorator form of ``add``: ``@rpc.method("name", Param(...), roles=...)``."""

        def register(handler: Handler) -> Handler:
            self.add(name, handler, params=params, **options)
            return handler

        return register

    def _add(
        self,
        name: str,
        handler: Handler,
        *,
        params: tuple[Param, ...],
        roles: frozenset[str] | None,
        summary: str,
        description: str,
        result: Result,
        errors: tuple[type[RpcError], ...],
        timeout_s: float | None,
    ) -> Method:
        if not name or len(name) > 128 or not name.isprintable():
            raise ValueError(f"bad method name {name!r}")
        if name in self._methods:
            raise ValueError(f"method {name} registered twice")
        if not inspect.iscoroutinefunction(handler):
            raise TypeError(f"handler of {name} must be an async def")
        by_name = {p.name: p for p in params}
        if len(by_name) != len(params):
            raise ValueError(f"{name}: duplicate param names")
        _check_signature(name, handler, by_name)
        if not all(isinstance(e, type) and issubclass(e, RpcError) for e in errors):
            raise TypeError(f"{name}: errors must be RpcError subclasses")
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"{name}: timeout_s must be positive")
        method = Method(
            name, handler, params, by_name, roles, summary, description, result, errors, timeout_s
        )
        self._methods[name] = method
        self._openrpc = None
        return method

    def get(self, name: str) -> Method | None:
        return self._methods.get(name)

    def __iter__(self) -> Iterator[Method]:
        return iter(self._methods.values())

    def __len__(self) -> int:
        return len(self._methods)

    def openrpc(self) -> dict[str, Any]:
        """The OpenRPC document (cached until the next registration)."""
        if self._openrpc is None:
            self._openrpc = {
                "openrpc": OPENRPC_VERSION,
                "info": {"title": self.title, "version": self.version},
                "methods": [m.describe() for m in sorted(self, key=lambda m: m.name)],
            }
        return self._openrpc


def _check_signature(name: str, handler: Handler, by_name: dict[str, Param]) -> None:
    """Refuse at registration a handler whose keyword params differ from the declaration."""
    sig = inspect.signature(handler)
    args = list(sig.parameters.values())
    if not args or args[0].kind not in (args[0].POSITIONAL_ONLY, args[0].POSITIONAL_OR_KEYWORD):
        raise TypeError(f"{name}: handler must take ctx as its first positional argument")
    accepts_any = any(a.kind is a.VAR_KEYWORD for a in args)
    keyword_args = {
        a.name: a for a in args[1:] if a.kind in (a.POSITIONAL_OR_KEYWORD, a.KEYWORD_ONLY)
    }
    for pname in by_name:
        if pname not in keyword_args and not accepts_any:
            raise TypeError(f"{name}: declared param {pname!r} missing from handler signature")
    for aname, arg in keyword_args.items():
        if aname not in by_name and arg.default is arg.empty:
            raise TypeError(f"{name}: handler argument {aname!r} is not a declared param")
