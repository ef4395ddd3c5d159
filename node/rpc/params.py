"""Declarative parameter schemas for RPC methods: validate JSON values, convert, describe.

Owns the small type language methods use to declare their params (``Int``, ``Bool``,
``Str``, ``Hex``, ``Choice``, ``ListOf``) and ``Param`` (a name, a schema, a default,
a description). Each schema does two things and nothing else:

- ``check(value, where)`` takes a value exactly as ``json.loads`` produced it and returns
  the Python value the handler receives (``Hex`` gives ``bytes``), or raises
  ``InvalidParams`` whose message names the parameter (``where``, e.g. ``ids[3]``) and
  says what was expected and what arrived;
- ``json_schema()`` describes it for the OpenRPC document.

Rules:
- Strict JSON types: ``true`` is not an integer, ``1.0`` is not an integer, ``"1"`` is
  not a number. Clients in other languages must not depend on lenient coercions.
- Integers are bounded; nothing outside [-2^63, 2^64 - 1] is ever accepted, and the
  parser turns longer literals into ``OutOfRange`` so they cannot cost big-int work.
- Hex is lowercase, no ``0x``, even length: one spelling per byte string.
- Pure: no I/O, no clock.
"""

from __future__ import annotations

import copy
import keyword
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Final

from ledger.codec import UINT64_MAX
from node.rpc.errors import InvalidParams

__all__ = [
    "INT64_MIN",
    "MISSING",
    "UINT64_MAX",
    "Bool",
    "Choice",
    "Hex",
    "Int",
    "ListOf",
    "OutOfRange",
    "Param",
    "Schema",
    "Str",
    "json_type_name",
]

INT64_MIN: Final = -(2**63)


class OutOfRange:
    """An integer literal outside [-2^64, 2^64], kept as text by the JSON parser.

    Produced only by the parser hook; every schema rejects it, so a client sending
    ``1e400``-sized integers gets -32602 naming the parameter, not a parse error.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"OutOfRange({self.text[:24]}{'...' if len(self.text) > 24 else ''})"


def json_type_name(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, OutOfRange):
        return "integer beyond 2^64"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _fail(where: str, reason: str) -> InvalidParams:
    return InvalidParams(f"invalid param '{where}': {reason}", param=where, reason=reason)


class Schema(ABC):
    """A parameter type: validation + conversion + description."""

    @abstractmethod
    def check(self, value: object, where: str) -> Any:
        """Return the converted value or raise ``InvalidParams`` naming ``where``."""

    @abstractmethod
    def json_schema(self) -> dict[str, Any]:
        """JSON Schema (draft 7 subset) for OpenRPC."""


class Int(Schema):
    """An integer in [min_value, max_value] (inclusive); defaults to uint64."""

    def __init__(self, min_value: int = 0, max_value: int = UINT64_MAX) -> None:
        if not INT64_MIN <= min_value <= max_value <= UINT64_MAX:
            raise ValueError(f"Int range [{min_value}, {max_value}] outside int64/uint64")
        self.min_value = min_value
        self.max_value = max_value

    def check(self, value: object, where: str) -> int:
        # type() rather than isinstance(): bool is a subclass of int in Python.
        if type(value) is not int:
            if isinstance(value, OutOfRange):
                raise _fail(where, f"integer out of range, expected {self._range()}")
            got = json_type_name(value)
            raise _fail(where, f"expected an integer in {self._range()}, got {got}")
        if not self.min_value <= value <= self.max_value:
            raise _fail(where, f"{value} is out of range, expected {self._range()}")
        return value

    def _range(self) -> str:
        return f"[{self.min_value}, {self.max_value}]"

    def json_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.min_value, "maximum": self.max_value}


class Bool(Schema):
    """``true`` or ``false``."""

    def check(self, value: object, where: str) -> bool:
        if type(value) is not bool:
            raise _fail(where, f"expected a boolean, got {json_type_name(value)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


class Str(Schema):
    """A string of at most ``max_length`` characters, optionally matching ``pattern``."""

    def __init__(self, max_length: int, *, min_length: int = 0, pattern: str | None = None):
        if not 0 <= min_length <= max_length:
            raise ValueError("Str needs 0 <= min_length <= max_length")
        self.max_length = max_length
        self.min_length = min_length
        self.pattern = pattern
        self._regex = re.compile(pattern) if pattern is not None else None

    def check(self, value: object, where: str) -> str:
        if type(value) is not str:
            raise _fail(where, f"expected a string, got {json_type_name(value)}")
        if not self.min_length <= len(value) <= self.max_length:
            raise _fail(
                where,
                f"length {len(value)} outside [{self.min_length}, {self.max_length}] characters",
            )
        if not value.isascii():
            # JSON escapes can smuggle lone surrogates ("\ud800") that are not Unicode
            # text and would break any UTF-8 encoder downstream (logs, storage).
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise _fail(where, "string contains a lone surrogate") from None
        if self._regex is not None and self._regex.fullmatch(value) is None:
            raise _fail(where, f"does not match pattern {self.pattern}")
        return value

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "maxLength": self.max_length}
        if self.min_length:
            schema["minLength"] = self.min_length
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        return schema


_HEX = re.compile(r"[0-9a-f]*")


class Hex(Schema):
    """Lowercase hex decoded to ``bytes``: exactly ``length`` bytes, or within bounds.

    ``Hex(32)`` is a 32-byte hash; ``Hex(max_length=65536)`` a variable-size blob.
    """

    def __init__(
        self, length: int | None = None, *, min_length: int = 0, max_length: int | None = None
    ) -> None:
        if length is not None:
            if max_length is not None or min_length:
                raise ValueError("Hex: give either length or min_length/max_length")
            min_length = max_length = length
        if max_length is None or not 0 <= min_length <= max_length:
            raise ValueError("Hex needs a length or 0 <= min_length <= max_length")
        self.min_length = min_length
        self.max_length = max_length

    def _expected(self) -> str:
        if self.min_length == self.max_length:
            n = self.max_length
            return f"{2 * n} lowercase hex characters ({n} bytes)"
        return (
            f"lowercase hex of {self.min_length} to {self.max_length} bytes "
            f"({2 * self.min_length}-{2 * self.max_length} characters)"
        )

    def check(self, value: object, where: str) -> bytes:
        if type(value) is not str:
            raise _fail(where, f"expected {self._expected()}, got {json_type_name(value)}")
        n = len(value)
        # Length first: the regex below must never run over an oversized string.
        if n % 2 or not 2 * self.min_length <= n <= 2 * self.max_length:
            raise _fail(where, f"expected {self._expected()}, got {n} characters")
        if _HEX.fullmatch(value) is None:
            if value.startswith("0x"):
                raise _fail(where, f"expected {self._expected()} without a 0x prefix")
            raise _fail(where, f"expected {self._expected()}, got non-hex or uppercase characters")
        return bytes.fromhex(value)

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "string",
            "pattern": "^([0-9a-f]{2})*$",
            "maxLength": 2 * self.max_length,
            "contentEncoding": "base16",
        }
        if self.min_length:
            schema["minLength"] = 2 * self.min_length
        return schema


class Choice(Schema):
    """One of a fixed set of strings (an enum)."""

    def __init__(self, *values: str) -> None:
        if not values or not all(isinstance(v, str) for v in values):
            raise ValueError("Choice needs at least one string")
        self.values = tuple(values)
        self._set = frozenset(values)

    def check(self, value: object, where: str) -> str:
        if type(value) is not str or value not in self._set:
            shown = repr(value)[:40] if type(value) is str else json_type_name(value)
            raise _fail(where, f"expected one of {', '.join(self.values)}, got {shown}")
        return value

    def json_schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(self.values)}


class ListOf(Schema):
    """An array of ``item`` with a bounded length; converts each element."""

    def __init__(self, item: Schema, *, max_items: int, min_items: int = 0) -> None:
        if not 0 <= min_items <= max_items:
            raise ValueError("ListOf needs 0 <= min_items <= max_items")
        self.item = item
        self.max_items = max_items
        self.min_items = min_items

    def check(self, value: object, where: str) -> list[Any]:
        if type(value) is not list:
            raise _fail(where, f"expected an array, got {json_type_name(value)}")
        if not self.min_items <= len(value) <= self.max_items:
            raise _fail(where, f"{len(value)} items, expected {self.min_items} to {self.max_items}")
        check = self.item.check
        return [check(v, f"{where}[{i}]") for i, v in enumerate(value)]

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "type": "array",
            "items": self.item.json_schema(),
            "maxItems": self.max_items,
        }
        if self.min_items:
            schema["minItems"] = self.min_items
        return schema


class _Missing:
    """Sentinel for 'no default: the param is required'."""

    _instance: _Missing | None = None

    def __new__(cls) -> _Missing:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


class Param:
    """One named parameter.

    ``default`` is written in its JSON form and converted by the schema once, at
    declaration (so ``Hex`` defaults are given as hex and arrive as bytes). A default
    of ``None`` means optional-without-value: the handler receives ``None``. No default
    means required.
    """

    __slots__ = (
        "default",
        "description",
        "name",
        "schema",
        "json_default",
        "required",
        "copy_default",
    )

    def __init__(
        self, name: str, schema: Schema, *, default: Any = MISSING, description: str = ""
    ) -> None:
        if not name.isidentifier() or keyword.iskeyword(name) or name == "ctx":
            raise ValueError(f"param name {name!r} must be a Python identifier other than ctx")
        self.name = name
        self.schema = schema
        self.description = description
        self.required = default is MISSING
        self.json_default = None if self.required else default
        if self.required or default is None:
            self.default: Any = None
        else:
            self.default = schema.check(default, name)
        # A list default must not be shared between calls: a handler may mutate it.
        self.copy_default = isinstance(self.default, list)

    def describe(self) -> dict[str, Any]:
        """The OpenRPC ContentDescriptor of this param."""
        schema = self.schema.json_schema()
        if not self.required and self.json_default is not None:
            schema = {**schema, "default": self.json_default}
        descriptor: dict[str, Any] = {
            "name": self.name,
            "required": self.required,
            "schema": schema,
        }
        if self.description:
            descriptor["description"] = self.description
        return descriptor


def check_params(
    declared: Sequence[Param], by_name: dict[str, Param], params: dict[str, Any]
) -> dict[str, Any]:
    """Validate a by-name ``params`` object against the declaration; return handler kwargs."""
    for name in params:
        if name not in by_name:
            reason = f"unknown param '{name[:64]}'"
            if declared:
                reason += f"; expected {', '.join(p.name for p in declared)}"
            else:
                reason += "; this method takes no params"
            raise InvalidParams(reason, param=name[:64], reason="unknown param")
    kwargs: dict[str, Any] = {}
    for p in declared:
        if p.name in params:
            value = params[p.name]
            if value is None and not p.required and p.json_default is None:
                kwargs[p.name] = None  # explicit null for an optional-without-value param
            else:
                kwargs[p.name] = p.schema.check(value, p.name)
        elif p.required:
            raise InvalidParams(
                f"missing required param '{p.name}'", param=p.name, reason="missing"
            )
        else:
            kwargs[p.name] = copy.deepcopy(p.default) if p.copy_default else p.default
    return kwargs
