"""JSON-RPC 2.0 on the wire: parse a body, check it, run its calls, encode. No I/O.

Owns ``parse_body`` (strict JSON under ``Limits``), ``Dispatcher`` (one HTTP body in,
one HTTP body or nothing out, against a ``MethodRegistry``) and ``Call`` (a validated
call handed to the executor, the shell's hook that runs calls under deadlines).

Rules:
- Strict input. The body must be UTF-8 JSON within ``Limits`` (size, nesting depth,
  batch length); duplicate object keys and NaN/Infinity are parse errors; integer
  literals beyond 2^64 are kept as ``OutOfRange`` and refused by every schema.
  Params are by name only; a positional array gets -32602 saying so.
- Order of checks for one call: request shape (-32600), method (-32601), credentials
  and roles (-32002), params (-32602), then the handler. Unauthenticated callers learn
  nothing about a protected method's params.
- Notifications (no ``id``) never get a response, whatever happens; a request whose
  shape is invalid is answered with ``id: null`` as the spec requires, since we cannot
  tell whether it was meant as a notification.
- Everything in a body is parsed, authorised and validated before any handler runs;
  the calls that passed go to the executor together (the HTTP shell's runs them in
  order under deadlines); responses keep request order.
- ``dispatch`` never raises ``Exception``: a handler bug becomes -32603 with an
  incident id, logged here with its traceback. Cancellation (BaseException) passes
  through untouched so the caller's cancel scopes keep working.
- Pure: the clock is injected (for latency metrics) and so is the executor (the HTTP
  shell adds deadlines); this module imports no async library.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

from ledger.errors import BodyPruned, RuleError
from node.rpc.auth import CredentialStore, Principal
from node.rpc.errors import (
    InternalError,
    InvalidParams,
    InvalidRequest,
    MethodNotFound,
    ParseError,
    Pruned,
    Rejected,
    RpcError,
    Unauthorised,
)
from node.rpc.params import OutOfRange, check_params
from node.rpc.registry import CallContext, Method, MethodRegistry

__all__ = ["Call", "Dispatcher", "Executor", "Limits", "Observer", "parse_body", "run_in_order"]

log = logging.getLogger("dvp.rpc")  # dvp.*: a JSON line in the node's log

JsonValue = Any
# Metric labels must be a bounded set: unknown method names all share one label.
UNKNOWN_METHOD_LABEL: Final = "<unknown>"
INVALID_REQUEST_LABEL: Final = "<invalid>"
_REQUEST_KEYS: Final = frozenset({"jsonrpc", "method", "params", "id"})
_MAX_ID_CHARS: Final = 256
_NO_PARAMS: Final[dict[str, Any]] = {}  # shared, never mutated


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on one HTTP body. ``max_body_bytes`` is also enforced by the HTTP shell."""

    max_body_bytes: int = 1 << 20
    max_depth: int = 32
    max_batch: int = 100


# --- parsing -----------------------------------------------------------------------


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ParseError(f"duplicate object key {key[:64]!r}")
            seen.add(key)
    return obj


def _parse_constant(name: str) -> Any:
    raise ParseError(f"{name} is not valid JSON")


def _parse_int(text: str) -> int | OutOfRange:
    # 20 characters hold every value up to 2^64 (and "-" + 19 digits); only longer
    # literals need the careful path, and those never become big ints.
    if len(text) <= 20:
        value = int(text)
        if -(2**64) <= value <= 2**64:
            return value
    return OutOfRange(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 overflows to inf, which JSON cannot carry back
        raise ParseError("number out of range")
    return value


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_object_pairs,
    parse_constant=_parse_constant,
    parse_int=_parse_int,
    parse_float=_parse_float,
)
_ENCODE: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def _too_deep(value: JsonValue, max_depth: int) -> bool:
    """True if containers nest deeper than ``max_depth`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return True
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                stack.append((child, depth + 1))
    return False


def parse_body(body: bytes, limits: Limits) -> JsonValue:
    """Decode a request body under ``limits`` or raise ParseError / InvalidRequest."""
    if len(body) > limits.max_body_bytes:
        raise InvalidRequest(f"body of {len(body)} bytes exceeds {limits.max_body_bytes}")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        raise ParseError(f"JSON nested deeper than {limits.max_depth}") from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ParseError(f"invalid JSON: {exc.msg} at {where}") from None
    except ValueError:  # int() of a pathological literal; the hooks raise ParseError
        raise ParseError("invalid JSON number") from None
    # Counting brackets is C-speed and bounds the depth from above; only bodies with
    # more brackets than the limit (batches, list params) pay for the walk.
    if (type(value) is dict or type(value) is list) and (
        body.count(b"[") + body.count(b"{") > limits.max_depth
    ):
        if _too_deep(value, limits.max_depth):
            raise ParseError(f"JSON nested deeper than {limits.max_depth}")
    return value


# --- dispatch ----------------------------------------------------------------------

Observer = Callable[[str, str, float], None]  # (method label, outcome, seconds)


class Call:
    """One validated call, ready to run. The executor runs it; the dispatcher encodes.

    Exactly one of ``run()`` (to completion) or ``fail(error)`` settles a call;
    ``response`` is then its encoded response, or None for a notification.
    """

    __slots__ = ("method", "ctx", "kwargs", "response", "settled", "_owner", "_started")

    def __init__(
        self,
        owner: Dispatcher,
        method: Method,
        ctx: CallContext,
        kwargs: dict[str, Any],
        started: float,
    ) -> None:
        self.method = method
        self.ctx = ctx
        self.kwargs = kwargs
        self.response: bytes | None = None
        self.settled = False
        self._owner = owner
        self._started = started

    async def run(self) -> None:
        """Await the handler and record its result or error (cancellation passes through)."""
        owner = self._owner
        # Latency counts from here: in a batch, waiting for earlier calls is not ours.
        self._started = owner._clock()
        try:
            result = await self.method.handler(self.ctx, **self.kwargs)
            if not self.ctx.is_notification:
                payload = {"jsonrpc": "2.0", "result": result, "id": self.ctx.request_id}
                self.response = _ENCODE(payload).encode()
        except RpcError as error:
            self.fail(error)
            return
        except RuleError as exc:
            self.fail(Rejected(exc.code, exc.message))
            return
        except BodyPruned as exc:  # any method whose answer needs a pruned block body
            self.fail(Pruned(str(exc), exc.height, exc.bodies_from))
            return
        except Exception as exc:
            # A bug (or a result json cannot encode): log the traceback here, send none.
            incident = secrets.token_hex(6)
            log.error("rpc %s failed (incident %s)", self.method.name, incident, exc_info=exc)
            self.fail(InternalError(data={"incident": incident}))
            return
        self.settled = True
        owner._observe(self.method.name, "ok", owner._clock() - self._started)

    def fail(self, error: RpcError) -> None:
        """Settle with ``error`` (the executor uses this for deadlines)."""
        ctx = self.ctx
        self.response = self._owner._failed(
            self.method.name, error, ctx.request_id, ctx.is_notification, self._started
        )
        self.settled = True


Executor = Callable[[list[Call]], Awaitable[None]]


async def run_in_order(calls: list[Call]) -> None:
    """The default executor: each call in turn, no deadlines."""
    for call in calls:
        await call.run()


def _ignore(label: str, outcome: str, seconds: float) -> None:
    pass


def _error_response(error: RpcError, request_id: JsonValue) -> bytes:
    return _ENCODE({"jsonrpc": "2.0", "error": error.to_json(), "id": request_id}).encode()


class Dispatcher:
    """Runs JSON-RPC bodies against a registry, with credentials and limits.

    ``dispatch`` parses and validates everything first, hands the calls that passed to
    ``execute`` (the shell's hook: it owns deadlines and cancellation), then encodes.
    """

    def __init__(
        self,
        registry: MethodRegistry,
        credentials: CredentialStore,
        *,
        limits: Limits | None = None,
        execute: Executor = run_in_order,
        observe: Observer = _ignore,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self.limits = limits if limits is not None else Limits()
        self._execute = execute
        self._observe = observe
        self._clock = clock

    async def dispatch(
        self, body: bytes, *, authorization: str | None = None, remote: str | None = None
    ) -> bytes | None:
        """Handle one body; return the response body, or None if nothing to answer."""
        try:
            return await self._dispatch(body, authorization, remote)
        except Exception:  # last resort: a bug in this module or the executor
            incident = secrets.token_hex(6)
            log.exception("rpc dispatcher failed (incident %s)", incident)
            return _error_response(InternalError(data={"incident": incident}), None)

    async def _dispatch(
        self, body: bytes, authorization: str | None, remote: str | None
    ) -> bytes | None:
        try:
            value = parse_body(body, self.limits)
        except RpcError as error:
            self._observe(INVALID_REQUEST_LABEL, error.outcome, 0.0)
            return _error_response(error, None)

        principal: Principal | None = None
        auth_error: Unauthorised | None = None
        try:
            principal = self.credentials.authenticate(authorization)
        except Unauthorised as error:
            auth_error = error

        if type(value) is not list:
            slot = self._prepare(value, principal, auth_error, remote)
            if not isinstance(slot, Call):
                return slot
            await self._execute([slot])
            return self._settled(slot)
        if not value:
            self._observe(INVALID_REQUEST_LABEL, InvalidRequest.outcome, 0.0)
            return _error_response(InvalidRequest("empty batch"), None)
        if len(value) > self.limits.max_batch:
            self._observe(INVALID_REQUEST_LABEL, InvalidRequest.outcome, 0.0)
            return _error_response(
                InvalidRequest(f"batch of {len(value)} exceeds {self.limits.max_batch} calls"),
                None,
            )
        slots = [self._prepare(request, principal, auth_error, remote) for request in value]
        calls = [slot for slot in slots if isinstance(slot, Call)]
        if calls:
            await self._execute(calls)
        parts = [self._settled(s) if isinstance(s, Call) else s for s in slots]
        present = [part for part in parts if part is not None]
        if not present:  # a batch of notifications only
            return None
        return b"[" + b",".join(present) + b"]"

    def _settled(self, call: Call) -> bytes | None:
        if not call.settled:  # the executor broke its contract: a bug, not the caller's
            raise RuntimeError(f"executor left call {call.method.name} unsettled")
        return call.response

    def _prepare(
        self,
        request: JsonValue,
        principal: Principal | None,
        auth_error: Unauthorised | None,
        remote: str | None,
    ) -> Call | bytes | None:
        """Validate one request object: a Call to run, or its final (error) response."""
        started = self._clock()
        # Shape first: these errors are answered even without an id.
        if type(request) is not dict:
            return self._invalid("request must be a JSON object", None, started)
        request_id = request.get("id")
        is_notification = "id" not in request
        if not (request_id is None or type(request_id) is int or type(request_id) is str):
            return self._invalid("id must be a string, an integer or null", None, started)
        if type(request_id) is str and len(request_id) > _MAX_ID_CHARS:
            return self._invalid(f"id longer than {_MAX_ID_CHARS} characters", None, started)
        if request.get("jsonrpc") != "2.0":
            return self._invalid('"jsonrpc" must be exactly "2.0"', request_id, started)
        name = request.get("method")
        if type(name) is not str:
            return self._invalid('"method" must be a string', request_id, started)
        if len(request) > 2 and not _REQUEST_KEYS.issuperset(request):
            extra = sorted(k[:32] for k in request if k not in _REQUEST_KEYS)
            message = f"unknown request members: {', '.join(extra)}"
            return self._invalid(message, request_id, started)
        params = request.get("params", _NO_PARAMS)
        if type(params) is not dict and type(params) is not list:
            return self._invalid('"params" must be an object', request_id, started)

        method = self.registry.get(name)
        try:
            if method is None:
                raise MethodNotFound(f"method '{name[:64]}' not found")
            if method.roles is not None:
                self._authorise(method, principal, auth_error)
            elif auth_error is not None:
                raise auth_error
            if not isinstance(params, dict):
                raise InvalidParams(
                    "params must be an object of named params (by-name); "
                    "positional arrays are not supported"
                )
            kwargs = check_params(method.params, method.by_name, params)
        except RpcError as error:
            label = name if method is not None else UNKNOWN_METHOD_LABEL
            return self._failed(label, error, request_id, is_notification, started)
        ctx = CallContext(name, principal, request_id, is_notification, remote)
        return Call(self, method, ctx, kwargs, started)

    def _authorise(
        self, method: Method, principal: Principal | None, auth_error: Unauthorised | None
    ) -> None:
        assert method.roles is not None
        if auth_error is not None:
            raise auth_error
        if principal is None:
            raise Unauthorised(
                f"method {method.name} requires credentials (Authorization: Bearer <api key>)"
            )
        if not principal.has_any_role(method.roles):
            raise Unauthorised(
                f"method {method.name} requires role {' or '.join(sorted(method.roles))}; "
                f"{principal.member_id} has {', '.join(sorted(principal.roles)) or 'none'}"
            )

    def _invalid(self, message: str, request_id: JsonValue, started: float) -> bytes:
        self._observe(INVALID_REQUEST_LABEL, InvalidRequest.outcome, self._clock() - started)
        return _error_response(InvalidRequest(message), request_id)

    def _failed(
        self,
        label: str,
        error: RpcError,
        request_id: JsonValue,
        is_notification: bool,
        started: float,
    ) -> bytes | None:
        self._observe(label, error.outcome, self._clock() - started)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("rpc %s -> %d %s", label, error.code, error.message)
        if is_notification:
            return None
        try:
            return _error_response(error, request_id)
        except (TypeError, ValueError):  # a handler put something unencodable in data
            incident = secrets.token_hex(6)
            log.error("rpc %s: error data not JSON-able (incident %s)", label, incident)
            return _error_response(InternalError(data={"incident": incident}), request_id)
