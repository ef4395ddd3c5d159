"""Who is in the consortium and under which parameters: validators, members, genesis.

Part of ``ledger.types`` (the public entry point, which re-exports this module's names).
This module owns ``Validator``, ``ValidatorSet`` (with the quorum arithmetic over it:
``max_faulty``, ``quorum_size``), ``Member``, ``ChainParams`` and ``Genesis``, with their
wire forms. Reading a genesis file is ledger/genesis.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ledger.codec import (
    Domain,
    as_bytes,
    as_int,
    as_list,
    as_str,
    decode,
    encode,
    fields,
    require_sorted_unique,
    tagged_hash,
)
from ledger.errors import DecodeError, ValidationError
from ledger.transaction import _gov_arg
from ledger.types_base import (
    MAX_MEMBERS,
    MAX_VALIDATORS,
    Role,
    _ident,
    cached_property,
)

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
    # The rate limit on data subjects' transactions, per subject key (docs/CONSENT.md §4).
    subject_tx_limit: int = 20
    subject_window_ms: int = 3_600_000

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
        "subject_tx_limit",
        "subject_window_ms",
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


#: The consent purposes of a genesis that names none.
DEFAULT_PURPOSES = ("account-opening", "loan-application")


@dataclass(frozen=True)
class Genesis:
    """Everything a chain starts from; its hash is the ultimate trust anchor."""

    chain_id: str
    genesis_time_ms: int
    members: tuple[Member, ...]
    validators: ValidatorSet
    doc_types: tuple[str, ...]
    params: ChainParams = field(default_factory=ChainParams)
    #: The purposes consent may be granted for (docs/CONSENT.md §3), sorted.
    purposes: tuple[str, ...] = DEFAULT_PURPOSES

    def to_wire(self) -> list[Any]:
        return [
            self.chain_id,
            self.genesis_time_ms,
            [m.to_wire() for m in self.members],
            self.validators.to_wire(),
            list(self.doc_types),
            self.params.to_wire(),
            list(self.purposes),
        ]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @cached_property
    def hash(self) -> bytes:
        return tagged_hash(Domain.GENESIS, self.encode())

    @classmethod
    def from_wire(cls, obj: Any) -> Genesis:
        f = fields(obj, 7, "genesis")
        members = tuple(Member.from_wire(m) for m in as_list(f[2], "genesis.members", MAX_MEMBERS))
        require_sorted_unique([m.member_id for m in members], "genesis.members")
        docs = [_ident(d, "genesis.doc_types[]") for d in as_list(f[4], "genesis.doc_types", 256)]
        require_sorted_unique(docs, "genesis.doc_types")
        purposes = [_ident(p, "genesis.purposes[]") for p in as_list(f[6], "genesis.purposes", 256)]
        require_sorted_unique(purposes, "genesis.purposes")
        return cls(
            _ident(f[0], "genesis.chain_id"),
            as_int(f[1], "genesis.genesis_time_ms"),
            members,
            ValidatorSet.from_wire(f[3]),
            tuple(docs),
            ChainParams.from_wire(f[5]),
            tuple(purposes),
        )

    @classmethod
    def decode(cls, data: bytes) -> Genesis:
        return cls.from_wire(decode(data, 4 * 1024 * 1024))
