"""What every ledger type shares: size limits, the transaction id, identifiers, roles.

Part of ``ledger.types`` (the public entry point, which re-exports this module's names).
This module owns the wire limits (``MAX_TX_BYTES``, ``MAX_BLOCK_BYTES``, ...), the one
definition of a transaction's id (``tx_id_of``), what an identifier is
(``check_identifier``: member ids, roles, document types, chain ids), ``Role``, and a
lock-free ``cached_property`` for the decoded types.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from enum import IntEnum
from typing import Any, Generic, TypeVar, overload

from ledger.codec import (
    Domain,
    as_str,
    tagged,
)
from ledger.errors import DecodeError

_T = TypeVar("_T")


class cached_property(Generic[_T]):  # noqa: N801 - named like functools' on purpose
    """``functools.cached_property`` without its per-access lock (Python 3.11 takes an
    RLock on every first access, a measurable cost when decoding thousands of
    transactions per block). Objects here are built and read by one task at a time."""

    def __init__(self, fn: Callable[[Any], _T]) -> None:
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, cls: type) -> cached_property[_T]: ...

    @overload
    def __get__(self, obj: object, cls: type) -> _T: ...

    def __get__(self, obj: object | None, cls: type) -> Any:
        if obj is None:
            return self
        value = self.fn(obj)
        obj.__dict__[self.name] = value
        return value


MAX_TX_BYTES = 4096
_TX_SIGN_PREFIX = tagged(Domain.TX, b"")
_TX_ID_PREFIX = tagged(Domain.TX_ID, b"")
_sha256 = hashlib.sha256
MAX_BLOCK_BYTES = 16 * 1024 * 1024
MAX_BLOCK_TXS = 20_000
MAX_VALIDATORS = 256
MAX_MEMBERS = 4096
MAX_NAME = 64
ZERO_HASH = b"\x00" * 32


def tx_id_of(encoded: bytes) -> bytes:
    """The id of the transaction whose canonical signed encoding is ``encoded``."""
    return _sha256(_TX_ID_PREFIX + encoded).digest()


# ---------------------------------------------------------------------------
# Identifiers
# ---------------------------------------------------------------------------

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_.")


def check_identifier(value: str, what: str) -> str:
    """Member ids, roles, document types and chain ids: short lowercase ASCII."""
    if not 1 <= len(value) <= MAX_NAME or not set(value) <= _ID_CHARS:
        raise DecodeError(
            f"{what} {value!r}: use 1-{MAX_NAME} characters of a-z, 0-9, '-', '_', '.'"
        )
    return value


_KNOWN_IDENTS: set[str] = set()


def _ident(value: Any, what: str) -> str:
    # Chain ids and document types repeat in every transaction: remember good ones.
    if type(value) is str and value in _KNOWN_IDENTS:
        return value
    ident = check_identifier(as_str(value, what, MAX_NAME, 1), what)
    if len(_KNOWN_IDENTS) < 4096:
        _KNOWN_IDENTS.add(ident)
    return ident


class Role(IntEnum):
    """What a member may do. Encoded as its integer."""

    VALIDATOR = 1
    ISSUER = 2
    VERIFIER = 3
    AUDITOR = 4
