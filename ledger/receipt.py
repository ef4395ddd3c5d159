"""Verification receipts: what a verifier checked, kept as evidence and re-checkable offline.

A receipt (docs/PROOFS.md §12, format ``dvp-receipt`` version 1) holds the proof bundle
exactly as the node served it, the answer the verifier reached (``Verdict.to_json`` or
``VerificationError.to_json``), the verifier's clock at the check (``checked_at_ms``),
the freshness limit it used and the genesis hash it trusted. ``reverify`` needs no node:
it re-runs ``ledger.verify`` on the bundle as of ``checked_at_ms`` and requires the same
answer. Pure functions, no I/O and no clock; the CLI (``dvp verify --receipt``) reads
and writes the files.
"""

from __future__ import annotations

import json
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ledger.types import Genesis
from ledger.verify import TrustAnchor, Verdict, VerificationError, verify_bundle_json

__all__ = [
    "FORMAT",
    "VERSION",
    "Receipt",
    "ReceiptError",
    "ReceiptMismatch",
    "build",
    "decode",
    "encode",
    "reverify",
]

FORMAT: Final = "dvp-receipt"
VERSION: Final = 1

_HEX32 = r"^[0-9a-f]{64}$"
#: The verdict's JSON values: strings, integers (never booleans or floats) and nulls, and
#: for ``access`` (a bound document's recorded access, docs/CONSENT.md §5) an object of them.
Scalar = str | int | None
Answer = Scalar | dict[str, Scalar]


class ReceiptError(ValueError):
    """The receipt does not decode, or is not for this genesis or this file and code."""


class ReceiptMismatch(ReceiptError):
    """The bundle re-verified, but not to the answer the receipt records."""


class Receipt(BaseModel):
    """The receipt document; strict: unknown fields and wrong types are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    format: Literal["dvp-receipt"]
    version: int = Field(ge=VERSION, le=VERSION)  # strict int: not True, not 1.0
    genesis_hash: str = Field(pattern=_HEX32)
    commitment: str = Field(pattern=_HEX32)
    checked_at_ms: int = Field(ge=0)
    max_age_ms: int | None = Field(ge=0)
    verdict: dict[str, Answer]
    bundle: dict[str, Any]


def _answer(result: Verdict | VerificationError) -> dict[str, Answer]:
    return result.to_json()  # type: ignore[return-value]


def build(
    bundle: dict[str, Any],
    result: Verdict | VerificationError,
    genesis: Genesis,
    commitment: bytes,
    *,
    checked_at_ms: int,
    max_age_ms: int | None,
) -> Receipt:
    """The receipt of one verification: ``bundle`` as served, ``result`` as reached;
    ``ReceiptError`` if they cannot be kept (a node answered with something not a
    JSON object)."""
    try:
        return Receipt(
            format=FORMAT,
            version=VERSION,
            genesis_hash=genesis.hash.hex(),
            commitment=commitment.hex(),
            checked_at_ms=checked_at_ms,
            max_age_ms=max_age_ms,
            verdict=_answer(result),
            bundle=bundle,
        )
    except ValidationError as exc:
        raise ReceiptError(_first(exc)) from None


def encode(receipt: Receipt) -> bytes:
    """UTF-8 JSON, keys sorted, indented: readable in a loan file, stable to diff."""
    return (json.dumps(receipt.model_dump(), sort_keys=True, indent=2) + "\n").encode()


def decode(data: bytes) -> Receipt:
    """The receipt in ``data``, or ``ReceiptError`` saying the first thing wrong."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReceiptError(f"not JSON ({exc})") from None
    if isinstance(doc, dict) and doc.get("format") == FORMAT and doc.get("version") != VERSION:
        raise ReceiptError(f"{FORMAT} version {doc.get('version')!r}: only {VERSION} is known")
    try:
        return Receipt.model_validate(doc)
    except ValidationError as exc:
        raise ReceiptError(f"not a {FORMAT} v{VERSION}: {_first(exc)}") from None


def _first(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or 'document'}: {err['msg']}"


def reverify(receipt: Receipt, genesis: Genesis, commitment: bytes) -> Verdict | VerificationError:
    """Re-check ``receipt`` with no node: the same genesis, the same commitment (the
    caller's file and code), and ``ledger.verify`` on its bundle as of its
    ``checked_at_ms`` with its ``max_age_ms`` giving exactly the recorded answer.

    Returns that answer (a ``Verdict``, or the ``VerificationError`` the receipt
    recorded); ``ReceiptError`` for another genesis or document, ``ReceiptMismatch`` when
    the answer differs (the receipt was altered)."""
    if receipt.genesis_hash != genesis.hash.hex():
        raise ReceiptError(
            f"it was made against genesis {receipt.genesis_hash[:16]}..., not this one "
            f"({genesis.hash.hex()[:16]}...): another consortium or the wrong genesis file"
        )
    if receipt.commitment != commitment.hex() or receipt.bundle.get("commitment") != (
        commitment.hex()
    ):
        raise ReceiptError(
            "it is for another document: this file and code give commitment "
            f"{commitment.hex()[:16]}..., the receipt's is {receipt.commitment[:16]}..."
        )
    result: Verdict | VerificationError
    try:
        result = verify_bundle_json(
            receipt.bundle,
            TrustAnchor.from_genesis(genesis),
            now_ms=receipt.checked_at_ms,
            max_age_ms=receipt.max_age_ms,
        )
    except VerificationError as exc:
        result = exc
    again = _answer(result)
    if again != receipt.verdict:
        keys = sorted(set(again) | set(receipt.verdict))
        diff = [k for k in keys if again.get(k) != receipt.verdict.get(k)]
        raise ReceiptMismatch(
            f"its recorded answer does not hold: it says {receipt.verdict.get('status')}, "
            f"its bundle re-verifies to {again['status']} (differing: {', '.join(diff)})"
        )
    return result
