"""Ledger data types: transactions, blocks, certificates, validator sets, genesis.

Each type is a frozen dataclass with ``to_wire()`` (a plain value tree), ``encode()``
(canonical bytes, see ``ledger.codec``) and ``decode(bytes)`` / ``from_wire(obj)``
that raise only ``DecodeError``. ``validate_basic()`` performs the stateless checks
(signatures, ranges); checks that need chain state live in ``ledger.state``.
Field order in ``to_wire`` *is* the wire format documented in docs/PROOFS.md.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, TypeVar, overload

import msgpack

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
    tagged,
    tagged_hash,
)
from ledger.errors import DecodeError, ValidationError

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
    check_identifier(as_str(value, what, MAX_NAME, 1), what)
    if len(_KNOWN_IDENTS) < 4096:
        _KNOWN_IDENTS.add(value)
    return value


class Role(IntEnum):
    """What a member may do. Encoded as its integer."""

    VALIDATOR = 1
    ISSUER = 2
    VERIFIER = 3
    AUDITOR = 4


# ---------------------------------------------------------------------------
# Transaction payloads
# ---------------------------------------------------------------------------


class TxKind(IntEnum):
    ATTEST = 1
    REVOKE = 2
    GOV_PROPOSE = 3
    GOV_VOTE = 4


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
    """

    doc_type: str
    commitment: bytes
    issued_at_ms: int
    valid_until_ms: int = 0
    metadata_digest: bytes = b""

    KIND = TxKind.ATTEST

    def to_wire(self) -> list[Any]:
        return [
            self.doc_type,
            self.commitment,
            self.issued_at_ms,
            self.valid_until_ms,
            self.metadata_digest,
        ]

    @classmethod
    def from_wire(cls, obj: Any) -> Attest:
        f = fields(obj, 5, "attest")
        digest = as_bytes(f[4], "attest.metadata_digest", max_size=32)
        if len(digest) not in (0, 32):
            raise DecodeError("attest.metadata_digest: must be empty or 32 bytes")
        valid_until = as_int(f[3], "attest.valid_until_ms")
        issued = as_int(f[2], "attest.issued_at_ms")
        if valid_until and valid_until <= issued:
            raise DecodeError("attest.valid_until_ms: must be after issued_at_ms (or 0)")
        return cls(
            _ident(f[0], "attest.doc_type"),
            as_hash(f[1], "attest.commitment"),
            issued,
            valid_until,
            digest,
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


Payload = Attest | Revoke | GovPropose | GovVote
_PAYLOADS: dict[int, Any] = {
    TxKind.ATTEST: Attest,
    TxKind.REVOKE: Revoke,
    TxKind.GOV_PROPOSE: GovPropose,
    TxKind.GOV_VOTE: GovVote,
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
        enc = self.__dict__.get("encoded")
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
        and len(pw) == 5
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
    doc_type, commitment, issued, valid_until, digest = pw
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
    ):
        return None
    tx = object.__new__(Transaction)
    tx.__dict__.update(
        chain_id=chain_id,
        sender=sender,
        nonce=nonce,
        expiry_height=expiry,
        payload=Attest(doc_type, commitment, issued, valid_until, digest),
        signature=sig,
    )
    return tx


# ---------------------------------------------------------------------------
# Validators, members, parameters
# ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Validator:
    """A voting node: the member that runs it and the node's consensus key."""

    member_id: str
    node_key: bytes

    def to_wire(self) -> list[Any]:
        return [self.member_id, self.node_key]

    @classmethod
    def from_wire(cls, obj: Any) -> Validator:
        f = fields(obj, 2, "validator")
        return cls(_ident(f[0], "validator.member_id"), as_bytes(f[1], "validator.node_key", 32))


def max_faulty(n: int) -> int:
    """f: the most Byzantine validators that n validators tolerate (n >= 3f + 1)."""
    return (n - 1) // 3


def quorum_size(n: int) -> int:
    """Smallest vote count any two of which intersect in an honest validator.

    floor(2n/3) + 1, which is 2f + 1 when n = 3f + 1 and stays safe for other n.
    """
    return (2 * n) // 3 + 1


@dataclass(frozen=True)
class ValidatorSet:
    """The validators in force at some height, ordered by member id.

    A validator's *index* (used in certificates) is its position in this order.
    """

    validators: tuple[Validator, ...]

    def __post_init__(self) -> None:
        ids = [v.member_id for v in self.validators]
        keys = [v.node_key for v in self.validators]
        if not self.validators:
            raise ValidationError("a validator set cannot be empty")
        if ids != sorted(ids) or len(set(ids)) != len(ids) or len(set(keys)) != len(keys):
            raise ValidationError("validators must be sorted by member id, ids and keys unique")

    @classmethod
    def of(cls, validators: list[Validator] | tuple[Validator, ...]) -> ValidatorSet:
        return cls(tuple(sorted(validators, key=lambda v: v.member_id)))

    def __len__(self) -> int:
        return len(self.validators)

    @property
    def n(self) -> int:
        return len(self.validators)

    @property
    def f(self) -> int:
        return max_faulty(self.n)

    @property
    def quorum(self) -> int:
        return quorum_size(self.n)

    @cached_property
    def keys(self) -> tuple[bytes, ...]:
        return tuple(v.node_key for v in self.validators)

    @cached_property
    def index_of_key(self) -> dict[bytes, int]:
        return {v.node_key: i for i, v in enumerate(self.validators)}

    def index_of(self, node_key: bytes) -> int | None:
        return self.index_of_key.get(node_key)

    def to_wire(self) -> list[Any]:
        return [v.to_wire() for v in self.validators]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @cached_property
    def hash(self) -> bytes:
        return tagged_hash(Domain.VALIDATOR_SET, self.encode())

    @classmethod
    def from_wire(cls, obj: Any) -> ValidatorSet:
        items = as_list(obj, "validator_set", MAX_VALIDATORS)
        vals = tuple(Validator.from_wire(v) for v in items)
        try:
            return cls(vals)
        except ValidationError as exc:
            raise DecodeError(f"validator_set: {exc}") from exc

    @classmethod
    def decode(cls, data: bytes) -> ValidatorSet:
        return cls.from_wire(decode(data, 64 * 1024))


@dataclass(frozen=True, slots=True)
class Member:
    """A consortium member organisation as recorded in state."""

    member_id: str
    name: str
    key: bytes
    roles: tuple[int, ...] = ()
    doc_types: tuple[str, ...] = ()

    def to_wire(self) -> list[Any]:
        return [self.member_id, self.name, self.key, list(self.roles), list(self.doc_types)]

    @classmethod
    def from_wire(cls, obj: Any) -> Member:
        f = fields(obj, 5, "member")
        roles = [_gov_arg("role", r, "member.roles[]") for r in as_list(f[3], "member.roles", 8)]
        docs = [_ident(d, "member.doc_types[]") for d in as_list(f[4], "member.doc_types", 256)]
        require_sorted_unique(roles, "member.roles")
        require_sorted_unique(docs, "member.doc_types")
        return cls(
            _ident(f[0], "member.member_id"),
            as_str(f[1], "member.name", 128, 1),
            as_bytes(f[2], "member.key", 32),
            tuple(roles),
            tuple(docs),
        )

    def has_role(self, role: Role) -> bool:
        return int(role) in self.roles


@dataclass(frozen=True, slots=True)
class ChainParams:
    """Consensus and ledger parameters (changeable by governance via SET_PARAM)."""

    max_block_txs: int = 2000
    max_block_bytes: int = 2 * 1024 * 1024
    heartbeat_ms: int = 5000
    view_timeout_ms: int = 2000
    checkpoint_interval: int = 16
    pipeline_window: int = 4
    tx_ttl_heights: int = 1000
    validator_change_delay: int = 2
    max_clock_drift_ms: int = 10_000

    NAMES = (
        "max_block_txs",
        "max_block_bytes",
        "heartbeat_ms",
        "view_timeout_ms",
        "checkpoint_interval",
        "pipeline_window",
        "tx_ttl_heights",
        "validator_change_delay",
        "max_clock_drift_ms",
    )

    def to_wire(self) -> list[Any]:
        return [getattr(self, n) for n in self.NAMES]

    @classmethod
    def from_wire(cls, obj: Any) -> ChainParams:
        f = fields(obj, len(cls.NAMES), "params")
        vals = [as_int(v, f"params.{n}", 1) for n, v in zip(cls.NAMES, f, strict=True)]
        return cls(*vals)

    def with_param(self, name: str, value: int) -> ChainParams:
        if name not in self.NAMES:
            raise ValidationError(f"unknown chain parameter {name!r}")
        if value < 1:
            raise ValidationError(f"parameter {name} must be >= 1")
        vals = {n: getattr(self, n) for n in self.NAMES}
        vals[name] = value
        return ChainParams(**vals)


# ---------------------------------------------------------------------------
# Genesis
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Genesis:
    """Everything a chain starts from; its hash is the ultimate trust anchor."""

    chain_id: str
    genesis_time_ms: int
    members: tuple[Member, ...]
    validators: ValidatorSet
    doc_types: tuple[str, ...]
    params: ChainParams = field(default_factory=ChainParams)

    def to_wire(self) -> list[Any]:
        return [
            self.chain_id,
            self.genesis_time_ms,
            [m.to_wire() for m in self.members],
            self.validators.to_wire(),
            list(self.doc_types),
            self.params.to_wire(),
        ]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @cached_property
    def hash(self) -> bytes:
        return tagged_hash(Domain.GENESIS, self.encode())

    @classmethod
    def from_wire(cls, obj: Any) -> Genesis:
        f = fields(obj, 6, "genesis")
        members = tuple(Member.from_wire(m) for m in as_list(f[2], "genesis.members", MAX_MEMBERS))
        require_sorted_unique([m.member_id for m in members], "genesis.members")
        docs = [_ident(d, "genesis.doc_types[]") for d in as_list(f[4], "genesis.doc_types", 256)]
        require_sorted_unique(docs, "genesis.doc_types")
        return cls(
            _ident(f[0], "genesis.chain_id"),
            as_int(f[1], "genesis.genesis_time_ms"),
            members,
            ValidatorSet.from_wire(f[3]),
            tuple(docs),
            ChainParams.from_wire(f[5]),
        )

    @classmethod
    def decode(cls, data: bytes) -> Genesis:
        return cls.from_wire(decode(data, 4 * 1024 * 1024))


# ---------------------------------------------------------------------------
# Blocks
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockHeader:
    """What validators certify. Block id = SHA-256("dvp/block/v1" || 0x00 || encode(header)).

    - ``state_root``: root of the state tree *after* applying this block.
    - ``history_root``: RFC 6962 root over the ids of blocks 0..height-1 (size = height).
    - ``validator_set_hash``: the set that certifies this block;
      ``next_validator_set_hash``: the set that certifies the next one.
    """

    chain_id: str
    height: int
    prev_block_id: bytes
    time_ms: int
    proposer: bytes
    tx_count: int
    tx_root: bytes
    state_root: bytes
    validator_set_hash: bytes
    next_validator_set_hash: bytes
    history_root: bytes

    def to_wire(self) -> list[Any]:
        return [
            self.chain_id,
            self.height,
            self.prev_block_id,
            self.time_ms,
            self.proposer,
            self.tx_count,
            self.tx_root,
            self.state_root,
            self.validator_set_hash,
            self.next_validator_set_hash,
            self.history_root,
        ]

    @cached_property
    def encoded(self) -> bytes:
        return encode(self.to_wire())

    def encode(self) -> bytes:
        return self.encoded

    @cached_property
    def block_id(self) -> bytes:
        return tagged_hash(Domain.BLOCK_ID, self.encoded)

    @classmethod
    def from_wire(cls, obj: Any) -> BlockHeader:
        f = fields(obj, 11, "header")
        proposer = as_bytes(f[4], "header.proposer", max_size=32)
        if len(proposer) not in (0, 32):  # empty only for the genesis block
            raise DecodeError("header.proposer: must be a 32-byte key (empty at genesis)")
        return cls(
            _ident(f[0], "header.chain_id"),
            as_int(f[1], "header.height"),
            as_hash(f[2], "header.prev_block_id"),
            as_int(f[3], "header.time_ms"),
            proposer,
            as_int(f[5], "header.tx_count", 0, MAX_BLOCK_TXS),
            as_hash(f[6], "header.tx_root"),
            as_hash(f[7], "header.state_root"),
            as_hash(f[8], "header.validator_set_hash"),
            as_hash(f[9], "header.next_validator_set_hash"),
            as_hash(f[10], "header.history_root"),
        )

    @classmethod
    def decode(cls, data: bytes) -> BlockHeader:
        return cls.from_wire(decode(data, 4096))


@dataclass(frozen=True)
class Block:
    """A header and its transactions (in order)."""

    header: BlockHeader
    txs: tuple[Transaction, ...]

    @property
    def height(self) -> int:
        return self.header.height

    @property
    def block_id(self) -> bytes:
        return self.header.block_id

    def to_wire(self) -> list[Any]:
        return [self.header.to_wire(), [tx.to_wire() for tx in self.txs]]

    @cached_property
    def encoded(self) -> bytes:
        # Splice the cached encodings (0x92 = array of 2) instead of re-encoding every
        # transaction: identical bytes to encode(self.to_wire()), a test checks it.
        parts = [b"\x92", self.header.encoded, _array_header(len(self.txs))]
        parts.extend(tx.encoded for tx in self.txs)
        return b"".join(parts)

    def encode(self) -> bytes:
        return self.encoded

    @cached_property
    def tx_ids(self) -> list[bytes]:
        return [tx.tx_id for tx in self.txs]

    @classmethod
    def from_wire(cls, obj: Any) -> Block:
        f = fields(obj, 2, "block")
        header = BlockHeader.from_wire(f[0])
        raw_txs = as_list(f[1], "block.txs", MAX_BLOCK_TXS)
        txs = tuple(Transaction.from_wire(t, encode(t)) for t in raw_txs)
        if header.tx_count != len(txs):
            raise DecodeError("block: header.tx_count does not match the transactions")
        return cls(header, txs)

    @classmethod
    def decode(
        cls, data: bytes, known: Callable[[bytes], Transaction | None] | None = None
    ) -> Block:
        """Strictly decode a block; ``known(tx_id)`` may supply already decoded transactions.

        A replica has nearly every transaction of a proposal in its mempool already
        (gossip); ``known`` lets it reuse those objects instead of decoding each one a
        second time. The id is the hash of the exact bytes, so a transaction found by
        id has exactly these bytes; the others are decoded strictly.
        """
        if known is None:
            return cls.from_wire(decode(data, MAX_BLOCK_BYTES, typed=True))
        return _decode_block_reusing(data, known)


def split_block(data: bytes, max_txs: int = MAX_BLOCK_TXS) -> tuple[int, array]:  # type: ignore[type-arg]
    """Where a block encoding's header ends and each transaction starts, decoding nothing.

    The encoding is fixarray(2) || header || array(n) || tx_1 .. tx_n; msgpack's own
    parser skips each part (in C). Returns ``header_end`` (the header is
    ``data[1:header_end]``) and ``n + 1`` offsets (transaction i is
    ``data[offsets[i]:offsets[i + 1]]``). Checks what no strict decode of the parts
    checks: the outer and transaction array headers are canonical, ``n <= max_txs``,
    nothing trails. ``DecodeError`` otherwise.
    """
    if data[:1] != b"\x92":
        raise DecodeError("block: expected an array of 2")
    unpacker = msgpack.Unpacker(raw=True, max_buffer_size=len(data) + 1)
    unpacker.feed(data)
    try:
        unpacker.read_array_header()
        unpacker.skip()
        header_end = unpacker.tell()
        n = unpacker.read_array_header()
        start = unpacker.tell()
        if n > max_txs or data[header_end:start] != _array_header(n):
            raise DecodeError("block.txs: not a canonical array within the limit")
        offsets = array("q", [start])
        for _ in range(n):
            unpacker.skip()
            offsets.append(unpacker.tell())
    except DecodeError:
        raise
    except Exception:  # noqa: BLE001 - msgpack raises assorted types on garbage
        raise DecodeError("block: malformed") from None
    if offsets[-1] != len(data):
        raise DecodeError("block: trailing bytes")
    return header_end, offsets


def _decode_block_reusing(data: bytes, known: Callable[[bytes], Transaction | None]) -> Block:
    if not isinstance(data, (bytes, bytearray)) or len(data) > MAX_BLOCK_BYTES:
        raise DecodeError("block: not bytes or over the size limit")
    data = bytes(data)
    header_end, offsets = split_block(data)
    header = BlockHeader.decode(data[1:header_end])
    txs = []
    for i in range(len(offsets) - 1):
        raw = data[offsets[i] : offsets[i + 1]]
        tx = known(tx_id_of(raw))
        txs.append(tx if tx is not None else Transaction.decode(raw))
    if header.tx_count != len(txs):
        raise DecodeError("block: header.tx_count does not match the transactions")
    return Block(header, tuple(txs))


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes([0x90 | n])
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


# ---------------------------------------------------------------------------
# Votes and commit certificates
# ---------------------------------------------------------------------------


class CertificateSignatureError(ValidationError):
    """A certificate lists a signature that does not verify."""


class QuorumError(ValidationError):
    """A certificate has fewer valid signatures than the quorum of its validator set."""


def commit_vote_body(chain_id: str, height: int, view: int, block_id: bytes) -> bytes:
    """What a validator signs (under Domain.COMMIT) to commit ``block_id`` at ``height``."""
    return encode([chain_id, height, view, block_id])


@dataclass(frozen=True)
class CommitCertificate:
    """Quorum of commit signatures over (chain id, height, view, block id).

    ``signatures`` are ``(validator_index, signature)`` pairs, strictly increasing by
    index; indexes refer to the validator set in force at ``height``.
    """

    height: int
    view: int
    block_id: bytes
    signatures: tuple[tuple[int, bytes], ...]

    def to_wire(self) -> list[Any]:
        return [self.height, self.view, self.block_id, [[i, s] for i, s in self.signatures]]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def from_wire(cls, obj: Any) -> CommitCertificate:
        f = fields(obj, 4, "certificate")
        sigs = []
        for item in as_list(f[3], "certificate.signatures", MAX_VALIDATORS):
            pair = fields(item, 2, "certificate.signature")
            sigs.append(
                (
                    as_int(pair[0], "certificate.index", 0, MAX_VALIDATORS - 1),
                    as_bytes(pair[1], "certificate.signature", 64),
                )
            )
        require_sorted_unique([i for i, _ in sigs], "certificate.signatures")
        return cls(
            as_int(f[0], "certificate.height"),
            as_int(f[1], "certificate.view"),
            as_hash(f[2], "certificate.block_id"),
            tuple(sigs),
        )

    @classmethod
    def decode(cls, data: bytes) -> CommitCertificate:
        return cls.from_wire(decode(data, 64 * 1024))

    def verify(
        self, chain_id: str, validators: ValidatorSet, block_id: bytes | None = None
    ) -> None:
        """Raise ``ValidationError`` unless >= quorum distinct validators signed this commit."""
        if block_id is not None and block_id != self.block_id:
            raise ValidationError("certificate is for a different block")
        body = commit_vote_body(chain_id, self.height, self.view, self.block_id)
        message = tagged(Domain.COMMIT, body)
        good = 0
        seen: set[int] = set()
        for index, sig in self.signatures:
            if index in seen:
                raise ValidationError("certificate lists a validator twice")
            seen.add(index)
            if index >= validators.n:
                raise ValidationError(f"certificate index {index} is outside the validator set")
            if not crypto.verify_message(validators.keys[index], message, sig):
                raise CertificateSignatureError(
                    f"certificate signature of validator {index} is invalid"
                )
            good += 1
        if good < validators.quorum:
            raise QuorumError(
                f"certificate has {good} signatures; {validators.quorum} of {validators.n} needed"
            )


@dataclass(frozen=True)
class CertifiedBlock:
    """A block with the certificate that commits it (what catch-up transfers)."""

    block: Block
    certificate: CommitCertificate

    def to_wire(self) -> list[Any]:
        return [self.block.to_wire(), self.certificate.to_wire()]

    @classmethod
    def from_wire(cls, obj: Any) -> CertifiedBlock:
        f = fields(obj, 2, "certified_block")
        return cls(Block.from_wire(f[0]), CommitCertificate.from_wire(f[1]))
