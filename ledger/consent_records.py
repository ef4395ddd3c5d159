"""The consent records of the state tree, byte for byte (docs/CONSENT.md §2-3).

- ``SubjectRecord`` under ``state_key("subject", subject_key)``: the commitments bound to
  a data subject's key, the grants it signed, and its rate-limit window.
- ``GrantRecord`` under ``state_key("grant", grant_id)``: one consent grant (the
  ``CONSENT_GRANT`` payload and where it is), its revocation, and every access recorded
  under it.
- ``PolicyRecord`` under ``CONSENT_KEY`` = ``state_key("consent", b"")``: the purposes the
  consortium has admitted.

``grant_live_at`` is the one function that says whether a grant allowed an access at a
place and time; the rule book, the verifier and the auditor all call it.
Decoders are strict, like every record's: exact field counts, types, sizes.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from typing import Any, NamedTuple

from ledger.codec import (
    as_bytes,
    as_hash,
    as_int,
    as_list,
    decode,
    encode,
    fields,
    require_sorted_unique,
)
from ledger.errors import DecodeError
from ledger.records import MAX_RECORD_BYTES, state_key
from ledger.transaction import MAX_GRANT_USES, ConsentGrant
from ledger.types_base import _ident

#: Documents bound to one subject key, and grants one key may sign (docs/CONSENT.md §2.2).
MAX_SUBJECT_DOCUMENTS = 64
MAX_SUBJECT_GRANTS = 256

CONSENT_KEY = state_key("consent", b"")


# Cached: the mempool asks for a pending transaction's keys on every add, recheck and
# removal, and a load of accesses names a few hundred grants over and over.
@lru_cache(maxsize=65_536)
def subject_key(key: bytes) -> bytes:
    return state_key("subject", key)


@lru_cache(maxsize=65_536)
def grant_key(grant_id: bytes) -> bytes:
    return state_key("grant", grant_id)


class SubjectRecord(NamedTuple):
    commitments: tuple[bytes, ...] = ()
    grants: tuple[bytes, ...] = ()
    window_start_ms: int = 0
    window_count: int = 0

    def encode(self) -> bytes:
        return encode(
            [list(self.commitments), list(self.grants), self.window_start_ms, self.window_count]
        )

    @classmethod
    def decode(cls, data: bytes) -> SubjectRecord:
        f = fields(decode(data, MAX_RECORD_BYTES), 4, "subject_record")
        docs = tuple(
            as_hash(c, "subject.commitments[]")
            for c in as_list(f[0], "subject.commitments", MAX_SUBJECT_DOCUMENTS)
        )
        grants = tuple(
            as_hash(g, "subject.grants[]")
            for g in as_list(f[1], "subject.grants", MAX_SUBJECT_GRANTS)
        )
        return cls(
            docs,
            grants,
            as_int(f[2], "subject.window_start_ms"),
            as_int(f[3], "subject.window_count"),
        )


class AccessEntry(NamedTuple):
    """One recorded use: where its ACCESS transaction is, and the member key that signed."""

    height: int
    position: int
    member_key: bytes


class GrantRecord(NamedTuple):
    subject: bytes
    grantee: str
    commitments: tuple[bytes, ...]
    purpose: str
    not_before_ms: int
    not_after_ms: int
    max_uses: int
    height: int
    position: int
    revoked_height: int = 0
    revoke_position: int = 0
    accesses: tuple[AccessEntry, ...] = ()

    @classmethod
    def granted(
        cls, subject: bytes, grant: ConsentGrant, height: int, position: int
    ) -> GrantRecord:
        return cls(
            subject,
            grant.grantee,
            grant.commitments,
            grant.purpose,
            grant.not_before_ms,
            grant.not_after_ms,
            grant.max_uses,
            height,
            position,
        )

    def payload(self) -> ConsentGrant:
        """The ``CONSENT_GRANT`` payload this record was made from."""
        return ConsentGrant(
            self.grantee,
            self.commitments,
            self.purpose,
            self.not_before_ms,
            self.not_after_ms,
            self.max_uses,
        )

    def to_wire(self) -> list[Any]:
        return [
            self.subject,
            self.grantee,
            list(self.commitments),
            self.purpose,
            self.not_before_ms,
            self.not_after_ms,
            self.max_uses,
            self.height,
            self.position,
            self.revoked_height,
            self.revoke_position,
            [list(a) for a in self.accesses],
        ]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> GrantRecord:
        f = fields(decode(data, MAX_RECORD_BYTES), 12, "grant_record")
        # The grant's own fields through the transaction decoder's checks.
        grant = ConsentGrant.from_wire([f[1], f[2], f[3], f[4], f[5], f[6]])
        accesses = []
        for item in as_list(f[11], "grant.accesses", MAX_GRANT_USES):
            a = fields(item, 3, "grant.accesses[]")
            accesses.append(
                AccessEntry(
                    as_int(a[0], "grant.accesses.height"),
                    as_int(a[1], "grant.accesses.position"),
                    as_bytes(a[2], "grant.accesses.member_key", 32),
                )
            )
        if len(accesses) > grant.max_uses:
            raise DecodeError("grant.accesses: more accesses than max_uses")
        rec = cls.granted(
            as_bytes(f[0], "grant.subject", 32),
            grant,
            as_int(f[7], "grant.height"),
            as_int(f[8], "grant.position"),
        )
        return rec._replace(
            revoked_height=as_int(f[9], "grant.revoked_height"),
            revoke_position=as_int(f[10], "grant.revoke_position"),
            accesses=tuple(accesses),
        )

    @property
    def uses_left(self) -> int:
        return self.max_uses - len(self.accesses)


def grant_live_at(
    rec: GrantRecord, height: int, position: int, time_ms: int, *, recorded: int | None = None
) -> tuple[str, str] | None:
    """Why ``rec`` did not allow an access at (``height``, ``position``) in a block of
    time ``time_ms``: a (rule code, message) pair, or None if it did.

    ``recorded``: the access's index in ``rec.accesses`` when judging one already
    recorded (a verifier, an auditor); None when judging a new one (the rule book),
    which also needs a use left."""
    # At or after the revoking transaction's place (docs/CONSENT.md §5). In a block two
    # transactions never share a place; in the mempool's overlay every pending one is
    # at position 0, so ">" would let an access pending after a revocation in.
    if rec.revoked_height and (height, position) >= (rec.revoked_height, rec.revoke_position):
        return "grant_revoked", f"the subject revoked this grant at block {rec.revoked_height}"
    if time_ms < rec.not_before_ms:
        return "grant_not_yet_valid", f"this grant is valid from {rec.not_before_ms} (UTC ms)"
    if time_ms > rec.not_after_ms:
        return "grant_expired", f"this grant expired at {rec.not_after_ms} (UTC ms)"
    used = len(rec.accesses) if recorded is None else recorded
    if used >= rec.max_uses:
        return "grant_used_up", f"all {rec.max_uses} uses of this grant are recorded"
    return None


# Grant records decoded, by their bytes (content, not identity): a block's execution, the
# next block's and the mempool's overlay read the same grant record bytes, and a strict
# decode of one with 100 accesses costs ~0.3 ms. Filled by ``decode_grant`` and by the
# rule book with the records it writes (``remember_grant``), never by other code.
_DECODED_GRANTS: OrderedDict[bytes, GrantRecord] = OrderedDict()
_DECODED_GRANTS_MAX = 2048


def decode_grant(raw: bytes) -> GrantRecord:
    """``GrantRecord.decode``, remembered by content."""
    rec = _DECODED_GRANTS.get(raw)
    if rec is None:
        rec = GrantRecord.decode(raw)
        remember_grant(raw, rec)
    return rec


def remember_grant(raw: bytes, rec: GrantRecord) -> None:
    """Remember that ``raw`` decodes to ``rec``. Only for records the rule book made and
    encoded (``raw == rec.encode()``), which decode to themselves."""
    _DECODED_GRANTS[raw] = rec
    if len(_DECODED_GRANTS) > _DECODED_GRANTS_MAX:
        _DECODED_GRANTS.popitem(last=False)


class PolicyRecord(NamedTuple):
    """What the consortium governs about consent: the admitted purposes (sorted)."""

    purposes: tuple[str, ...]

    def encode(self) -> bytes:
        return encode([list(self.purposes)])

    @classmethod
    def decode(cls, data: bytes) -> PolicyRecord:
        f = fields(decode(data, MAX_RECORD_BYTES), 1, "consent_policy")
        purposes = [_ident(p, "consent.purposes[]") for p in as_list(f[0], "consent.purposes", 256)]
        require_sorted_unique(purposes, "consent.purposes")
        return cls(tuple(purposes))
