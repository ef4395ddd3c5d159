"""``WorkingSet``: a ledger snapshot seen through the writes of the transactions applied
on it so far -- what the rule book (``ledger.rules``) reads and writes.

Block execution (``ledger.state``) makes one per block with ``track_changes`` (its
``changes`` become the state-tree update); the mempool (``node.mempool``) keeps one over
the committed head as the overlay of its pending transactions. Reads go to the parent
``ledger.state.LedgerState`` once and are cached; writes stay here. Pure: no I/O
beyond the parent's reads, no clock ("now" is ``time_ms``, given).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from ledger.codec import encode
from ledger.errors import RuleError, did_you_mean
from ledger.records import (
    AttestationRecord,
    ChainRecord,
    ProposalRecord,
    ProposalStatus,
    attestation_key,
    member_key,
    proposal_key,
)
from ledger.types import Member, ValidatorSet


class _Record(Protocol):
    def encode(self) -> bytes: ...


_R = TypeVar("_R", bound=_Record)


class WorkingSet:
    """A snapshot seen through the writes of the transactions applied on it so far.

    ``parent`` is a ``ledger.state.LedgerState``; ``height`` the height the transactions
    are checked for (``parent.height + 1``). Copy-on-write: members and proposals are
    copied at their first write. ``changes`` collects the state-tree writes when
    ``track_changes`` (block execution); the mempool's overlay does not need them.
    ``read_attestation`` reads the parent (a cache can be given; the mempool's survives
    commits that do not touch a commitment).
    """

    def __init__(
        self,
        parent: Any,
        height: int,
        *,
        track_changes: bool = True,
        read_attestation: Callable[[bytes], AttestationRecord | None] | None = None,
        time_ms: int | None = None,
    ) -> None:
        self.parent = parent
        self.height = height
        # "Now" for the consent rules: the block's time; at admission, the head's.
        self.time_ms: int = parent.time_ms if time_ms is None else time_ms
        self.track_changes = track_changes
        self.read_attestation = read_attestation or parent.attestation
        self.changes: dict[bytes, bytes | None] = {}
        self.attestations: dict[bytes, AttestationRecord | None] = {}
        # Other records (consent), by state key: reads and earlier writes, encoded.
        self.records: dict[bytes, bytes | None] = {}
        # The same records decoded, with the bytes each came from (None: written here and
        # not encoded yet, see write_record): every ACCESS re-reads its grant record (up
        # to 100 entries, ~0.3 ms to decode strictly), so a block or a mempool of accesses
        # under a few grants decodes each once (docs/PERFORMANCE.md).
        self.decoded: dict[bytes, tuple[bytes | None, Any]] = {}
        self.members: Mapping[str, Member] = parent.members
        self.key_index: Mapping[bytes, str] = parent.key_index
        self.proposals: Mapping[bytes, ProposalRecord] = parent.open_proposals
        self.chain: ChainRecord = parent.chain.settle(height)
        self.chain_dirty = self.chain is not parent.chain
        self.members_dirty = False
        self.tx_ids: set[bytes] = set()
        # deferred_exists: ATTESTs skip the per-commitment tree read; the batch update
        # checks that these keys were absent instead (ledger.smt KeyExistsError), in one
        # walk. Block execution defers (ledger.state.execute); the mempool reads.
        self.deferred_exists = False
        self.must_be_new: dict[bytes, bytes] = {}  # state key -> commitment
        self.position = 0  # index in the block of the transaction being applied
        # The member and key of the transaction being applied: records name their
        # signers (ATTEST, REVOKE, the vote that decides a governance revocation).
        self.signer: tuple[str, bytes] = ("", b"")

    # -- reads through the earlier writes ------------------------------------
    def attestation(self, commitment: bytes) -> AttestationRecord | None:
        if commitment in self.attestations:
            return self.attestations[commitment]
        rec = self.read_attestation(commitment)
        self.attestations[commitment] = rec
        return rec

    def read(self, key: bytes) -> bytes | None:
        """The encoded record under state key ``key``, through the earlier writes."""
        if key in self.records:
            return self.records[key]
        hit = self.decoded.get(key)
        if hit is not None and hit[0] is None:  # written by write_record, not encoded yet
            encoded: bytes = hit[1].encode()
            self.records[key] = encoded
            self.decoded[key] = (encoded, hit[1])
            return encoded
        raw: bytes | None = self.parent.read(key)
        self.records[key] = raw
        return raw

    def read_record(self, key: bytes, decode: Callable[[bytes], _R]) -> _R | None:
        """The record under ``key`` decoded by ``decode``, through the earlier writes;
        decoded once for as long as its bytes stay the same object."""
        hit = self.decoded.get(key)
        if hit is not None and (hit[0] is None or self.records.get(key) is hit[0]):
            rec: _R = hit[1]
            return rec
        raw = self.read(key)
        if raw is None:
            return None
        rec = decode(raw)
        self.decoded[key] = (raw, rec)
        return rec

    def seen(self, tx_id: bytes) -> bool:
        return tx_id in self.tx_ids or bool(self.parent.tx_seen(tx_id))

    def voters(self) -> ValidatorSet:
        return self.chain.validators_at(self.height)

    def member(self, member_id: str) -> Member:
        m = self.members.get(member_id)
        if m is None:
            hint = did_you_mean(member_id, self.members)
            raise RuleError("unknown_member", f"no member {member_id!r}{hint}")
        return m

    # -- writes ----------------------------------------------------------------
    def put_attestation(
        self, commitment: bytes, rec: AttestationRecord, key: bytes | None = None
    ) -> None:
        """``key``: ``attestation_key(commitment)`` if the caller has it already."""
        self.attestations[commitment] = rec
        if self.track_changes:
            self.changes[key or attestation_key(commitment)] = rec.encode()

    def write(self, key: bytes, value: bytes) -> None:
        self.records[key] = value
        if self.track_changes:
            self.changes[key] = value

    def write_record(self, key: bytes, rec: _Record) -> bytes | None:
        """Write ``rec``, keeping it decoded for the next ``read_record``; returns the
        bytes written. Without ``track_changes`` (the mempool's overlay, which never
        needs the bytes) it is encoded only if ``read`` asks, and None is returned:
        re-checking the accesses pending under a grant re-encoded its record (up to
        100 entries) once per access."""
        if not self.track_changes:
            self.records.pop(key, None)
            self.decoded[key] = (None, rec)
            return None
        raw = rec.encode()
        self.write(key, raw)
        self.decoded[key] = (raw, rec)
        return raw

    def _own_members(self) -> tuple[dict[str, Member], dict[bytes, str]]:
        if not self.members_dirty:
            self.members = dict(self.members)
            self.key_index = dict(self.key_index)
            self.members_dirty = True
        return self.members, self.key_index  # type: ignore[return-value]

    def put_member(self, m: Member) -> None:
        members, keys = self._own_members()
        old = members.get(m.member_id)
        if old is not None:
            keys.pop(old.key, None)
        members[m.member_id] = m
        keys[m.key] = m.member_id
        if self.track_changes:
            self.changes[member_key(m.member_id)] = encode(m.to_wire())

    def drop_member(self, member_id: str) -> None:
        members, keys = self._own_members()
        m = members.pop(member_id)
        keys.pop(m.key, None)
        if self.track_changes:
            self.changes[member_key(member_id)] = None

    def put_proposal(self, pid: bytes, rec: ProposalRecord) -> None:
        props = dict(self.proposals)
        if rec.status == ProposalStatus.OPEN:
            props[pid] = rec
        else:
            props.pop(pid, None)
        self.proposals = props
        if self.track_changes:
            self.changes[proposal_key(pid)] = rec.encode()

    def set_chain(self, chain: ChainRecord) -> None:
        self.chain = chain
        self.chain_dirty = True
