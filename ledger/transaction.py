"""Transactions and their payloads: ATTEST, REVOKE, GOV_PROPOSE, GOV_VOTE, and the consent
kinds CONSENT_GRANT, CONSENT_REVOKE (signed by a data subject's key) and ACCESS
(docs/CONSENT.md).

Part of ``ledger.types`` (the public entry point, which re-exports this module's names).
This module owns ``Transaction`` (signed body, canonical encoding, id, stateless
``validate_basic``) and its payload types and enums, with their wire forms (docs/PROOFS.md).
State-dependent rules are ledger/state.py's.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ledger import crypto
from ledger.codec import (
    UINT64_MAX,
    Domain,
    as_bool,
    as_bytes,
    as_hash,
    as_int,
    as_list,
    as_str,
    decode,
    encode,
    fields,
    require_sorted_unique,
)
from ledger.errors import DecodeError, ValidationError
from ledger.types_base import (
    _KNOWN_IDENTS,
    _TX_SIGN_PREFIX,
    MAX_TX_BYTES,
    Role,
    _ident,
    cached_property,
    tx_id_of,
)

# ---------------------------------------------------------------------------
# Transaction payloads
# ---------------------------------------------------------------------------


class TxKind(IntEnum):
    ATTEST = 1
    REVOKE = 2
    GOV_PROPOSE = 3
    GOV_VOTE = 4
    CONSENT_GRANT = 5
    CONSENT_REVOKE = 6
    ACCESS = 7


class RevokeReason(IntEnum):
    """Why an attestation was withdrawn (stable codes shown to verifiers)."""

    UNSPECIFIED = 0
    SUPERSEDED = 1
    ISSUED_IN_ERROR = 2
    FRAUD_SUSPECTED = 3
    OWNER_REQUEST = 4
    DATA_CHANGED = 5
    GOVERNANCE = 6


@dataclass(frozen=True, slots=True)
class Attest:
    """An issuer's statement that the document behind ``commitment`` is authentic.

    ``valid_until_ms`` = 0 means the attestation does not expire. ``metadata_digest``
    is empty or the SHA-256 of issuer-side metadata that is never put on chain.
    ``subject`` is empty, or the data subject's public key the document is bound to:
    then every use needs the subject's consent (docs/CONSENT.md).
    """

    doc_type: str
    commitment: bytes
    issued_at_ms: int
    valid_until_ms: int = 0
    metadata_digest: bytes = b""
    subject: bytes = b""

    KIND = TxKind.ATTEST

    def to_wire(self) -> list[Any]:
        return [
            self.doc_type,
            self.commitment,
            self.issued_at_ms,
            self.valid_until_ms,
            self.metadata_digest,
            self.subject,
        ]

    @classmethod
    def from_wire(cls, obj: Any) -> Attest:
        f = fields(obj, 6, "attest")
        digest = as_bytes(f[4], "attest.metadata_digest", max_size=32)
        if len(digest) not in (0, 32):
            raise DecodeError("attest.metadata_digest: must be empty or 32 bytes")
        valid_until = as_int(f[3], "attest.valid_until_ms")
        issued = as_int(f[2], "attest.issued_at_ms")
        if valid_until and valid_until <= issued:
            raise DecodeError("attest.valid_until_ms: must be after issued_at_ms (or 0)")
        subject = as_bytes(f[5], "attest.subject", max_size=32)
        if len(subject) not in (0, 32):
            raise DecodeError("attest.subject: must be empty or a 32-byte public key")
        return cls(
            _ident(f[0], "attest.doc_type"),
            as_hash(f[1], "attest.commitment"),
            issued,
            valid_until,
            digest,
            subject,
        )


@dataclass(frozen=True, slots=True)
class Revoke:
    """The original issuer withdraws its attestation of ``commitment``."""

    commitment: bytes
    reason: RevokeReason

    KIND = TxKind.REVOKE

    def to_wire(self) -> list[Any]:
        return [self.commitment, int(self.reason)]

    @classmethod
    def from_wire(cls, obj: Any) -> Revoke:
        f = fields(obj, 2, "revoke")
        code = as_int(f[1], "revoke.reason", 0, 255)
        try:
            reason = RevokeReason(code)
        except ValueError as exc:
            raise DecodeError(f"revoke.reason: unknown code {code}") from exc
        return cls(as_hash(f[0], "revoke.commitment"), reason)


class GovAction(IntEnum):
    """What a governance proposal changes. Arguments per action are in ``GOV_ARGS``."""

    ADD_MEMBER = 1  # [member_id, name, key]
    REMOVE_MEMBER = 2  # [member_id]
    GRANT_ROLE = 3  # [member_id, role]
    WITHDRAW_ROLE = 4  # [member_id, role]
    GRANT_DOC_TYPE = 5  # [member_id, doc_type]
    WITHDRAW_DOC_TYPE = 6  # [member_id, doc_type]
    ROTATE_KEY = 7  # [member_id, new_key]
    ADD_VALIDATOR = 8  # [member_id, node_key]
    REMOVE_VALIDATOR = 9  # [member_id]
    SET_PARAM = 10  # [name, value]
    REVOKE_ATTESTATION = 11  # [commitment, reason]
    ADD_PURPOSE = 12  # [purpose]
    REMOVE_PURPOSE = 13  # [purpose]
    ACTIVATE_VERSION = 14  # [version, activation_height]


# Argument kinds: "id" identifier, "name" display text, "key" 32-byte key,
# "role" Role code, "int" u64, "hash" 32 bytes, "reason" RevokeReason code.
GOV_ARGS: dict[GovAction, tuple[str, ...]] = {
    GovAction.ADD_MEMBER: ("id", "name", "key"),
    GovAction.REMOVE_MEMBER: ("id",),
    GovAction.GRANT_ROLE: ("id", "role"),
    GovAction.WITHDRAW_ROLE: ("id", "role"),
    GovAction.GRANT_DOC_TYPE: ("id", "id"),
    GovAction.WITHDRAW_DOC_TYPE: ("id", "id"),
    GovAction.ROTATE_KEY: ("id", "key"),
    GovAction.ADD_VALIDATOR: ("id", "key"),
    GovAction.REMOVE_VALIDATOR: ("id",),
    GovAction.SET_PARAM: ("id", "int"),
    GovAction.REVOKE_ATTESTATION: ("hash", "reason"),
    GovAction.ADD_PURPOSE: ("id",),
    GovAction.REMOVE_PURPOSE: ("id",),
    GovAction.ACTIVATE_VERSION: ("int", "int"),
}


def _gov_arg(kind: str, value: Any, name: str) -> Any:
    if kind == "id":
        return _ident(value, name)
    if kind == "name":
        return as_str(value, name, 128, 1)
    if kind == "key":
        return as_bytes(value, name, 32)
    if kind == "hash":
        return as_hash(value, name)
    if kind == "int":
        return as_int(value, name)
    if kind == "role":
        code = as_int(value, name, 1, 255)
        try:
            return int(Role(code))
        except ValueError as exc:
            raise DecodeError(f"{name}: unknown role {code}") from exc
    if kind == "reason":
        code = as_int(value, name, 0, 255)
        try:
            return int(RevokeReason(code))
        except ValueError as exc:
            raise DecodeError(f"{name}: unknown revoke reason {code}") from exc
    raise AssertionError(kind)


@dataclass(frozen=True, slots=True)
class GovPropose:
    """A proposal to change the consortium; its id is the proposing transaction's id.

    The proposer's own vote is counted as a yes. ``deadline_height`` bounds voting.
    """

    action: GovAction
    args: tuple[Any, ...]
    deadline_height: int

    KIND = TxKind.GOV_PROPOSE

    def to_wire(self) -> list[Any]:
        return [int(self.action), list(self.args), self.deadline_height]

    @classmethod
    def from_wire(cls, obj: Any) -> GovPropose:
        f = fields(obj, 3, "gov_propose")
        code = as_int(f[0], "gov_propose.action", 1, 255)
        try:
            action = GovAction(code)
        except ValueError as exc:
            raise DecodeError(f"gov_propose.action: unknown action {code}") from exc
        kinds = GOV_ARGS[action]
        raw = fields(f[1], len(kinds), f"gov_propose.args for {action.name}")
        args = tuple(
            _gov_arg(k, v, f"gov_propose.args[{i}]")
            for i, (k, v) in enumerate(zip(kinds, raw, strict=True))
        )
        return cls(action, args, as_int(f[2], "gov_propose.deadline_height"))


@dataclass(frozen=True, slots=True)
class GovVote:
    """A validator member's vote on an open proposal."""

    proposal_id: bytes
    approve: bool

    KIND = TxKind.GOV_VOTE

    def to_wire(self) -> list[Any]:
        return [self.proposal_id, self.approve]

    @classmethod
    def from_wire(cls, obj: Any) -> GovVote:
        f = fields(obj, 2, "gov_vote")
        return cls(as_hash(f[0], "gov_vote.proposal_id"), as_bool(f[1], "gov_vote.approve"))


#: Bounds of a consent grant (docs/CONSENT.md §2.3).
MAX_GRANT_DOCUMENTS = 16
MAX_GRANT_USES = 100
MAX_GRANT_WINDOW_MS = 366 * 86_400_000


@dataclass(frozen=True, slots=True)
class ConsentGrant:
    """The data subject allows ``grantee`` to verify ``commitments`` (each bound to the
    signing subject key) for ``purpose``, inside [``not_before_ms``, ``not_after_ms``]
    of block time, at most ``max_uses`` times. Its id is the transaction's id."""

    grantee: str
    commitments: tuple[bytes, ...]
    purpose: str
    not_before_ms: int
    not_after_ms: int
    max_uses: int

    KIND = TxKind.CONSENT_GRANT

    def to_wire(self) -> list[Any]:
        return [
            self.grantee,
            list(self.commitments),
            self.purpose,
            self.not_before_ms,
            self.not_after_ms,
            self.max_uses,
        ]

    @classmethod
    def from_wire(cls, obj: Any) -> ConsentGrant:
        f = fields(obj, 6, "consent_grant")
        raw = as_list(f[1], "consent_grant.commitments", MAX_GRANT_DOCUMENTS)
        commitments = tuple(as_hash(c, "consent_grant.commitments[]") for c in raw)
        if not commitments:
            raise DecodeError("consent_grant.commitments: name at least one document")
        require_sorted_unique(list(commitments), "consent_grant.commitments")
        not_before = as_int(f[3], "consent_grant.not_before_ms")
        not_after = as_int(f[4], "consent_grant.not_after_ms")
        if not_after <= not_before:
            raise DecodeError("consent_grant.not_after_ms: must be after not_before_ms")
        return cls(
            _ident(f[0], "consent_grant.grantee"),
            commitments,
            _ident(f[2], "consent_grant.purpose"),
            not_before,
            not_after,
            as_int(f[5], "consent_grant.max_uses", 1, MAX_GRANT_USES),
        )


@dataclass(frozen=True, slots=True)
class ConsentRevoke:
    """The data subject withdraws a grant; it bites from the revoking transaction on."""

    grant_id: bytes

    KIND = TxKind.CONSENT_REVOKE

    def to_wire(self) -> list[Any]:
        return [self.grant_id]

    @classmethod
    def from_wire(cls, obj: Any) -> ConsentRevoke:
        f = fields(obj, 1, "consent_revoke")
        return cls(as_hash(f[0], "consent_revoke.grant_id"))


@dataclass(frozen=True, slots=True)
class Access:
    """A member records one use of a grant: it verifies ``commitment`` for ``purpose``."""

    grant_id: bytes
    commitment: bytes
    purpose: str

    KIND = TxKind.ACCESS

    def to_wire(self) -> list[Any]:
        return [self.grant_id, self.commitment, self.purpose]

    @classmethod
    def from_wire(cls, obj: Any) -> Access:
        f = fields(obj, 3, "access")
        return cls(
            as_hash(f[0], "access.grant_id"),
            as_hash(f[1], "access.commitment"),
            _ident(f[2], "access.purpose"),
        )


Payload = Attest | Revoke | GovPropose | GovVote | ConsentGrant | ConsentRevoke | Access
SUBJECT_KINDS = (TxKind.CONSENT_GRANT, TxKind.CONSENT_REVOKE)
_PAYLOADS: dict[int, Any] = {
    TxKind.ATTEST: Attest,
    TxKind.REVOKE: Revoke,
    TxKind.GOV_PROPOSE: GovPropose,
    TxKind.GOV_VOTE: GovVote,
    TxKind.CONSENT_GRANT: ConsentGrant,
    TxKind.CONSENT_REVOKE: ConsentRevoke,
    TxKind.ACCESS: Access,
}

# ---------------------------------------------------------------------------
# Transaction
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Transaction:
    """A signed request to change the ledger.

    ``sender`` is the signer's Ed25519 public key (its key id). The replay guard is the
    pair (``nonce``, ``expiry_height``): the transaction is only valid in blocks at
    heights <= ``expiry_height`` and a transaction id is never committed twice.
    Signature: Ed25519 over ``"dvp/tx/v1" || 0x00 || encode(body)``, body = the wire
    array without the signature.
    """

    chain_id: str
    sender: bytes
    nonce: int
    expiry_height: int
    payload: Payload
    signature: bytes = b""

    def body_wire(self) -> list[Any]:
        return [
            self.chain_id,
            self.sender,
            self.nonce,
            self.expiry_height,
            int(self.payload.KIND),
            self.payload.to_wire(),
        ]

    def to_wire(self) -> list[Any]:
        return [*self.body_wire(), self.signature]

    @cached_property
    def body_bytes(self) -> bytes:
        enc: bytes | None = self.__dict__.get("encoded")
        if enc is not None and enc[0] == 0x97 and enc[-66:-64] == b"\xc4\x40":
            # A canonical signed encoding is fixarray(7) || body fields || bin8(64) sig;
            # the body is the same fields under fixarray(6): no need to re-encode.
            return b"\x96" + enc[1:-66]
        return encode(self.body_wire())

    @cached_property
    def encoded(self) -> bytes:
        return encode(self.to_wire())

    def encode(self) -> bytes:
        return self.encoded

    @cached_property
    def tx_id(self) -> bytes:
        """SHA-256 over the domain-tagged *signed* encoding (``tx_id_of``)."""
        return tx_id_of(self.encoded)

    @property
    def kind(self) -> TxKind:
        return self.payload.KIND

    def signed(self, key: crypto.KeyPair) -> Transaction:
        unsigned = Transaction(
            self.chain_id, key.public_key, self.nonce, self.expiry_height, self.payload
        )
        return Transaction(
            unsigned.chain_id,
            unsigned.sender,
            unsigned.nonce,
            unsigned.expiry_height,
            unsigned.payload,
            key.sign(Domain.TX, unsigned.body_bytes),
        )

    def signature_ok(self) -> bool:
        # Hot path of block validation: the tagged message is built with one join and
        # checked by libsodium directly (same check as crypto.verify).
        return crypto.verify_message(self.sender, _TX_SIGN_PREFIX + self.body_bytes, self.signature)

    def validate_basic(self, chain_id: str) -> None:
        """Stateless checks: chain id and signature."""
        if self.chain_id != chain_id:
            raise ValidationError(f"transaction is for chain {self.chain_id!r}, not {chain_id!r}")
        if not self.signature_ok():
            raise ValidationError("transaction signature does not verify")

    @classmethod
    def from_wire(cls, obj: Any, encoded: bytes | None = None) -> Transaction:
        tx = _attest_tx_fast(obj)
        if tx is None:
            return cls.from_wire_checked(obj, encoded)
        if encoded is not None:
            tx.__dict__["encoded"] = encoded
        return tx

    @classmethod
    def from_wire_checked(cls, obj: Any, encoded: bytes | None = None) -> Transaction:
        """``from_wire`` through the general field readers (every kind, precise errors)."""
        f = fields(obj, 7, "transaction")
        kind = as_int(f[4], "transaction.kind", 1, 255)
        payload_type = _PAYLOADS.get(kind)
        if payload_type is None:
            raise DecodeError(f"transaction.kind: unknown kind {kind}")
        values = {
            "chain_id": _ident(f[0], "transaction.chain_id"),
            "sender": as_bytes(f[1], "transaction.sender", 32),
            "nonce": as_int(f[2], "transaction.nonce"),
            "expiry_height": as_int(f[3], "transaction.expiry_height"),
            "payload": payload_type.from_wire(f[5]),
            "signature": as_bytes(f[6], "transaction.signature", 64),
        }
        # Every field is checked above; filling __dict__ directly skips the frozen
        # dataclass __init__ (six object.__setattr__ calls), a hot path in block decoding.
        tx = object.__new__(cls)
        tx.__dict__.update(values)
        if encoded is not None:
            tx.__dict__["encoded"] = encoded
        return tx

    @classmethod
    def decode(cls, data: bytes) -> Transaction:
        return cls.from_wire(decode(data, MAX_TX_BYTES, typed=True), bytes(data))


def _attest_tx_fast(obj: Any) -> Transaction | None:
    """``Transaction.from_wire`` of a well-formed ATTEST whose chain id and document type
    were seen before, or None for anything else (the general path then decides, with
    its precise errors).

    Nearly every transaction is such an attestation, and decoding one through the
    general field readers cost ~3.7 us (a dozen calls, each re-checking what the next
    one checks again). These are exactly the general path's checks, inlined: the
    types, sizes and ranges of every field, ``valid_until_ms`` after ``issued_at_ms``
    or 0, the metadata digest empty or 32 bytes; a known identifier passed
    ``check_identifier`` when it was first seen. ``tests/ledger/test_codec_types.py`` checks
    that both paths agree with every field set to every edge value.
    """
    if type(obj) is not list or len(obj) != 7:
        return None
    chain_id, sender, nonce, expiry, kind, pw, sig = obj
    if not (
        type(kind) is int
        and kind == 1
        and type(pw) is list
        and len(pw) == 6
        and type(chain_id) is str
        and chain_id in _KNOWN_IDENTS
        and type(sender) is bytes
        and len(sender) == 32
        and type(nonce) is int
        and 0 <= nonce <= UINT64_MAX
        and type(expiry) is int
        and 0 <= expiry <= UINT64_MAX
        and type(sig) is bytes
        and len(sig) == 64
    ):
        return None
    doc_type, commitment, issued, valid_until, digest, subject = pw
    if not (
        type(doc_type) is str
        and doc_type in _KNOWN_IDENTS
        and type(commitment) is bytes
        and len(commitment) == 32
        and type(issued) is int
        and 0 <= issued <= UINT64_MAX
        and type(valid_until) is int
        and 0 <= valid_until <= UINT64_MAX
        and (valid_until == 0 or valid_until > issued)
        and type(digest) is bytes
        and len(digest) in (0, 32)
        and type(subject) is bytes
        and len(subject) in (0, 32)
    ):
        return None
    tx = object.__new__(Transaction)
    tx.__dict__.update(
        chain_id=chain_id,
        sender=sender,
        nonce=nonce,
        expiry_height=expiry,
        payload=Attest(doc_type, commitment, issued, valid_until, digest, subject),
        signature=sig,
    )
    return tx
