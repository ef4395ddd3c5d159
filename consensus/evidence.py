"""Accountability: proof that one validator signed two conflicting messages.

Owns ``Evidence`` (two signed messages, canonical encoding) and ``verify_evidence``,
a pure function anyone can run offline with the validator set and a ``Crypto``.

What counts as equivocation (each pair has the same sender and the same
``messages.slot_key`` but a different ``messages.content_key``):

- two PRE-PREPAREs for one (height, view)          -- an equivocating primary;
- two PREPAREs or two COMMITs for one (height, view) with different blocks;
- two VIEW-CHANGEs for one (epoch, view);
- two NEW-VIEWs for one (epoch, view);
- two CHECKPOINTs for one height with different (block id, state root).

An honest replica never produces such a pair: ``consensus.record.SigningGuard``
refuses the second signature, even across restarts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consensus.messages import (
    MAX_MESSAGE_BYTES,
    Message,
    content_key,
    decode_message,
    slot_key,
)
from consensus.signer import Crypto
from ledger.codec import as_bytes, decode, encode, fields
from ledger.errors import DecodeError
from ledger.types import ValidatorSet


@dataclass(frozen=True)
class Evidence:
    """Two conflicting messages signed by ``first.sender``."""

    first: Message
    second: Message

    @property
    def sender(self) -> bytes:
        return self.first.sender

    @property
    def slot(self) -> tuple[Any, ...]:
        return slot_key(self.first)

    def to_wire(self) -> list[Any]:
        return [self.first.encoded, self.second.encoded]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> Evidence:
        f = fields(decode(data, 2 * MAX_MESSAGE_BYTES + 64), 2, "evidence")
        return cls(
            decode_message(as_bytes(f[0], "evidence.first", max_size=MAX_MESSAGE_BYTES)),
            decode_message(as_bytes(f[1], "evidence.second", max_size=MAX_MESSAGE_BYTES)),
        )

    def __repr__(self) -> str:
        return f"Evidence({self.first!r} vs {self.second!r})"


def conflicting(a: Message, b: Message) -> bool:
    """True iff ``a`` and ``b`` are an equivocating pair (signatures not checked)."""
    return (
        type(a) is type(b)
        and a.sender == b.sender
        and slot_key(a) == slot_key(b)
        and content_key(a) != content_key(b)
    )


def make_evidence(a: Message, b: Message) -> Evidence | None:
    """Evidence from two messages the caller has already verified, or None if they agree."""
    if not conflicting(a, b):
        return None
    # Canonical order so the same pair always yields the same Evidence value.
    first, second = sorted((a, b), key=lambda m: m.encoded)
    return Evidence(first, second)


def verify_evidence(
    evidence: Evidence, chain_id: str, validators: ValidatorSet, crypto: Crypto
) -> bool:
    """True iff ``evidence`` proves that a member of ``validators`` equivocated.

    ``validators`` is the set in force at the evidence's height (for VIEW-CHANGE and
    NEW-VIEW: at the epoch's first height). Never raises on malformed input.
    """
    a, b = evidence.first, evidence.second
    try:
        if not conflicting(a, b) or validators.index_of(a.sender) is None:
            return False
        return all(crypto.verify(m.sender, m.DOMAIN, m.body(chain_id), m.signature) for m in (a, b))
    except (DecodeError, ValueError, TypeError, AttributeError):
        return False
