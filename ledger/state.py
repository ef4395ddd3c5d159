"""The ledger's state machine: deterministic block execution over authenticated state.

``LedgerState`` is an immutable snapshot of the chain after some block (committed or
speculative). ``execute`` runs transactions on top of one and returns an
``Execution``: the new block (header with tx, state and history roots), the state
tree update to persist, and the snapshot after it. Nothing here writes: the caller
commits ``Execution`` to the store (``ledger.chain``) only after consensus certifies
the block, and can execute block h+1 on top of an uncommitted block h (pipelining).

Rules (docs/PROOFS.md §Rules states them for auditors):
- A block is valid only if *every* transaction in it is valid: the proposer drops
  failing transactions (``strict=False``); validators and auditors refuse a block that
  contains one (``strict=True``). So "included" always means "took effect".
- What makes a transaction valid is ``ledger.rules`` (the rule book the mempool's
  admission calls too); this module runs it over a block's transactions in order, then
  expires proposals past their deadline and computes the roots.
- Validator-set changes and protocol-version activations take effect
  max(validator_change_delay, pipeline_window + 1) heights or more later, never
  mid-block. A header carries the version in force at its height; another version is
  refused (``wrong_version``), and a version this build does not speak stops it
  (``ledger.protocol.check_supported``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger import merkle
from ledger.codec import as_hash, as_int, as_list, decode, encode, fields
from ledger.consent_records import CONSENT_KEY, PolicyRecord
from ledger.errors import DecodeError, RuleError
from ledger.protocol import GENESIS_VERSION, check_supported
from ledger.records import (
    CHAIN_KEY,
    AttestationRecord,
    ChainRecord,
    ProposalRecord,
    attestation_key,
    member_key,
    proposal_key,
)
from ledger.rules import apply_tx, expire_proposals
from ledger.smt import KeyExistsError, MemoryNodeStore, SparseMerkleTree, UpdateResult
from ledger.tx_tree import root_and_upper_nodes
from ledger.types import (
    ZERO_HASH,
    Attest,
    Block,
    BlockHeader,
    Genesis,
    Member,
    Transaction,
    TxKind,
    ValidatorSet,
)
from ledger.working_set import WorkingSet


class SeenTxs:
    """``LedgerState.tx_seen`` over a store's tx index: "is this tx id committed?".

    A state executed on top of uncommitted blocks also holds their ids (``recent``,
    newest first, one frozenset per height). Heights the index has reached since are
    dropped on the next look-up, so the list stays as short as the pipeline however
    long the node runs. (It used to be a closure per block calling its parent's: every
    block executed before its parent committed extended the chain, so look-ups walked
    dozens of blocks and every committed id stayed in memory.)
    """

    __slots__ = ("recent", "index", "indexed_height")

    def __init__(
        self,
        recent: list[tuple[int, frozenset[bytes]]],
        index: Callable[[bytes], bool],
        indexed_height: Callable[[], int],
    ) -> None:
        self.recent = recent
        self.index = index
        self.indexed_height = indexed_height

    def extended(self, height: int, tx_ids: frozenset[bytes]) -> SeenTxs:
        """The seen-set of a block at ``height`` with ``tx_ids`` on top of this state."""
        self._trim()
        return SeenTxs([(height, tx_ids), *self.recent], self.index, self.indexed_height)

    def _trim(self) -> None:
        top = self.indexed_height()
        recent = self.recent
        while recent and recent[-1][0] <= top:
            recent.pop()

    def __call__(self, tx_id: bytes) -> bool:
        if self.recent:
            self._trim()
            for _h, ids in self.recent:
                if tx_id in ids:
                    return True
        return self.index(tx_id)


@dataclass(frozen=True)
class LedgerState:
    """The chain as of block ``height``: enough to execute the next block.

    ``tx_seen`` answers "was this tx id committed at or below ``height``?" (the store's
    tx index, plus the ids of uncommitted parent blocks for a speculative snapshot).
    """

    chain_id: str
    height: int
    block_id: bytes
    time_ms: int
    state_root: bytes
    chain: ChainRecord
    members: Mapping[str, Member]
    key_index: Mapping[bytes, str]
    open_proposals: Mapping[bytes, ProposalRecord]
    history: merkle.MerkleAccumulator
    tree: SparseMerkleTree
    tx_seen: Callable[[bytes], bool]
    #: For committed states: True if no committed block ever attested a commitment (the
    #: store's index), so ``attestation`` need not walk the tree. None for speculative
    #: states, whose own uncommitted blocks the index does not hold.
    never_attested: Callable[[bytes], bool] | None = None
    #: Consent records the last blocks wrote (state key -> encoded, oldest first, at most
    #: ``RECENT_RECORDS``): ``read`` answers them without walking the tree. An ACCESS
    #: reads its grant record in every block that holds one (docs/PERFORMANCE.md).
    recent: Mapping[bytes, bytes] = field(default_factory=dict)

    def validators_at(self, height: int) -> ValidatorSet:
        return self.chain.validators_at(height)

    @property
    def params(self) -> Any:
        return self.chain.params

    def member_of_key(self, key: bytes) -> Member | None:
        mid = self.key_index.get(key)
        return self.members.get(mid) if mid is not None else None

    def attestation(self, commitment: bytes) -> AttestationRecord | None:
        if self.never_attested is not None and self.never_attested(commitment):
            return None
        raw = self.tree.get(attestation_key(commitment), self.height)
        return AttestationRecord.decode(raw) if raw is not None else None

    def read(self, key: bytes) -> bytes | None:
        """The encoded record under state key ``key`` (consent records: ledger.consent)."""
        raw = self.recent.get(key)
        return raw if raw is not None else self.tree.get(key, self.height)

    def app_meta(self) -> bytes:
        """What the store keeps per height so a snapshot can be reopened without replay."""
        return encode(
            [
                self.time_ms,
                self.history.size,
                list(self.history.frontier),
                sorted(self.members),
                sorted(self.open_proposals),
                self.chain.to_wire(),
            ]
        )


@dataclass(frozen=True)
class AppMeta:
    """Per-height metadata kept beside each block (see ``LedgerState.app_meta``)."""

    time_ms: int
    history: merkle.MerkleAccumulator
    member_ids: list[str]
    proposal_ids: list[bytes]
    chain: ChainRecord


def decode_app_meta(data: bytes) -> AppMeta:
    f = fields(decode(data), 6, "app_meta")
    acc = merkle.MerkleAccumulator(
        as_int(f[1], "app_meta.history_size"),
        [as_hash(h, "app_meta.frontier") for h in as_list(f[2], "app_meta.frontier", 64)],
    )
    members = as_list(f[3], "app_meta.members", 1 << 16)
    if not all(isinstance(m, str) for m in members):
        raise DecodeError("app_meta.members: expected member ids")
    props = [as_hash(p, "app_meta.proposals") for p in as_list(f[4], "app_meta.proposals", 1 << 16)]
    return AppMeta(
        as_int(f[0], "app_meta.time_ms"), acc, members, props, ChainRecord.from_wire(f[5])
    )


def load_state(
    chain_id: str,
    height: int,
    header: BlockHeader,
    app_meta: bytes,
    tree: SparseMerkleTree,
    tx_seen: Callable[[bytes], bool],
) -> LedgerState:
    """Rebuild the snapshot of a committed height from its header, app meta and tree."""
    meta = decode_app_meta(app_meta)
    time_ms, history, member_ids, proposal_ids = (
        meta.time_ms,
        meta.history,
        meta.member_ids,
        meta.proposal_ids,
    )
    members: dict[str, Member] = {}
    for mid in member_ids:
        raw = tree.get(member_key(mid), height)
        if raw is None:
            raise DecodeError(f"member {mid!r} listed in app meta is missing from state")
        members[mid] = Member.from_wire(decode(raw))
    proposals: dict[bytes, ProposalRecord] = {}
    for pid in proposal_ids:
        raw = tree.get(proposal_key(pid), height)
        if raw is None:
            raise DecodeError("open proposal missing from state")
        proposals[pid] = ProposalRecord.decode(raw)
    return LedgerState(
        chain_id,
        height,
        header.block_id,
        time_ms,
        header.state_root,
        meta.chain,
        members,
        {m.key: m.member_id for m in members.values()},
        proposals,
        history,
        tree,
        tx_seen,
    )


@dataclass
class Execution:
    """The outcome of executing one block on a parent snapshot (nothing persisted yet)."""

    block: Block
    state: LedgerState
    update: UpdateResult
    rejected: list[tuple[Transaction, RuleError]] = field(default_factory=list)

    @property
    def height(self) -> int:
        return self.block.height


# ---------------------------------------------------------------------------
# Genesis
# ---------------------------------------------------------------------------


def genesis_changes(genesis: Genesis) -> dict[bytes, bytes | None]:
    chain = ChainRecord(genesis.validators, 1, (), genesis.params, genesis.doc_types)
    changes: dict[bytes, bytes | None] = {CHAIN_KEY: chain.encode()}
    for m in genesis.members:
        changes[member_key(m.member_id)] = encode(m.to_wire())
    changes[CONSENT_KEY] = PolicyRecord(genesis.purposes).encode()
    return changes


def execute_genesis(genesis: Genesis, tree: SparseMerkleTree) -> Execution:
    """Block 0: the genesis state, no transactions, no certificate."""
    check_genesis(genesis)
    update = tree.update(None, 0, genesis_changes(genesis))
    chain = ChainRecord(genesis.validators, 1, (), genesis.params, genesis.doc_types)
    header = BlockHeader(
        GENESIS_VERSION,
        genesis.chain_id,
        0,
        ZERO_HASH,
        genesis.genesis_time_ms,
        b"",
        0,
        merkle.EMPTY_ROOT,
        update.root,
        genesis.validators.hash,
        genesis.validators.hash,
        merkle.EMPTY_ROOT,
    )
    block = Block(header, ())
    history = merkle.MerkleAccumulator()
    history.append(merkle.leaf_hash(header.block_id))
    members = {m.member_id: m for m in genesis.members}
    state = LedgerState(
        genesis.chain_id,
        0,
        header.block_id,
        genesis.genesis_time_ms,
        update.root,
        chain,
        members,
        {m.key: m.member_id for m in members.values()},
        {},
        history,
        tree,
        lambda _tx_id: False,
    )
    return Execution(block, state, update)


def genesis_execution(genesis: Genesis) -> Execution:
    """Block 0 and the genesis state computed from the genesis file alone (a tree over no
    stored nodes): what a store's header 0 and app metadata 0 must be."""
    return execute_genesis(genesis, SparseMerkleTree(MemoryNodeStore()))


def check_genesis(genesis: Genesis) -> None:
    """Refuse a genesis whose validators are not members or whose keys collide."""
    ids = {m.member_id for m in genesis.members}
    keys = [m.key for m in genesis.members]
    if len(set(keys)) != len(keys):
        raise RuleError("bad_genesis", "two members share a key")
    for v in genesis.validators.validators:
        if v.member_id not in ids:
            raise RuleError("bad_genesis", f"validator {v.member_id!r} is not a member")
    for m in genesis.members:
        unknown = set(m.doc_types) - set(genesis.doc_types)
        if unknown:
            raise RuleError("bad_genesis", f"{m.member_id} issues unknown doc types {unknown}")


# ---------------------------------------------------------------------------
# Block execution
# ---------------------------------------------------------------------------


def execute(
    parent: LedgerState,
    txs: Iterable[Transaction],
    *,
    time_ms: int,
    proposer: bytes,
    strict: bool,
    verified: Callable[[bytes], bool] | None = None,
) -> Execution:
    """Execute ``txs`` as block ``parent.height + 1``.

    ``strict=True`` raises ``RuleError`` on the first invalid transaction (validating a
    proposal, auditing); ``strict=False`` drops invalid ones into ``rejected``
    (building a proposal). ``verified(tx_id)`` may vouch that a signature was already
    checked (the mempool's cache); without it every signature is verified here.

    Both modes check "not attested yet" inside the state-tree batch instead of reading
    the tree once per ATTEST (a third of a builder's execution time). When that batch
    finds commitments that exist already, a validator refuses the block; a builder
    drops the ATTESTs of those commitments and executes again without them (rare: the
    RPC door refuses already attested commitments).
    """
    txs = txs if isinstance(txs, (list, tuple)) else list(txs)
    exclude: dict[bytes, RuleError] = {}
    while True:
        try:
            ex = _execute(
                parent,
                txs if not exclude else [tx for tx in txs if tx.tx_id not in exclude],
                time_ms=time_ms,
                proposer=proposer,
                strict=strict,
                verified=verified,
            )
        except _AlreadyAttested as exc:
            if strict:
                raise exc.error from None
            exclude.update(exc.refused)
            continue
        if exclude:
            ex.rejected.extend((tx, exclude[tx.tx_id]) for tx in txs if tx.tx_id in exclude)
        return ex


class _AlreadyAttested(Exception):
    """The batch found attested commitments: the ATTESTs to drop (with why), or the
    error to raise."""

    def __init__(self, error: RuleError, refused: dict[bytes, RuleError]) -> None:
        super().__init__(error.message)
        self.error = error
        self.refused = refused


def _attest_refusal(parent: LedgerState, tx: Transaction) -> RuleError:
    if parent.tx_seen(tx.tx_id):
        return RuleError("replay", "transaction already committed")
    return RuleError("already_attested", "this commitment is already attested")


def _execute(
    parent: LedgerState,
    txs: Iterable[Transaction],
    *,
    time_ms: int,
    proposer: bytes,
    strict: bool,
    verified: Callable[[bytes], bool] | None,
) -> Execution:
    height = parent.height + 1
    if time_ms <= parent.time_ms:
        raise RuleError(
            "bad_time", f"block time {time_ms} is not after the parent's {parent.time_ms}"
        )
    version = parent.chain.version_at(height)
    check_supported(version, height)
    validators = parent.chain.validators_at(height)
    if validators.index_of(proposer) is None:
        raise RuleError("bad_proposer", "the proposer is not a validator at this height")
    work = WorkingSet(parent, height, time_ms=time_ms)
    work.deferred_exists = True
    included: list[Transaction] = []
    rejected: list[tuple[Transaction, RuleError]] = []
    max_txs = parent.chain.params.max_block_txs
    for tx in txs:
        if len(included) >= max_txs:
            if strict:
                raise RuleError("block_too_large", f"more than {max_txs} transactions")
            break
        work.position = len(included)
        try:
            apply_tx(work, tx, verified)
        except RuleError as err:
            if strict:
                raise RuleError(
                    err.code, f"tx {tx.tx_id.hex()[:16]}: {err.message}", tx.tx_id
                ) from None
            rejected.append((tx, err))
            continue
        included.append(tx)
    expire_proposals(work)
    if work.chain_dirty:
        work.changes[CHAIN_KEY] = work.chain.encode()
    try:
        update = parent.tree.update(
            parent.height, height, work.changes, must_be_new=work.must_be_new or None
        )
    except KeyExistsError as exc:
        # ATTESTs of commitments that have a record at the parent: each is a replay if
        # its own id was committed (rules.committed_before), else a second attestation.
        attested = {work.must_be_new[k] for k in exc.keys}
        failing = [
            tx
            for tx in included
            if isinstance(tx.payload, Attest) and tx.payload.commitment in attested
        ]
        # (The tree only reports keys of this block's changes, and every must_be_new
        # key is an ATTEST's: failing is never empty.)
        refused = {tx.tx_id: _attest_refusal(parent, tx) for tx in failing}
        first = refused[failing[0].tx_id]
        raise _AlreadyAttested(
            RuleError(first.code, f"tx {failing[0].tx_id.hex()[:16]}: {first.message}"),
            refused,
        ) from None
    tx_ids = [tx.tx_id for tx in included]
    tx_root, tx_tree_nodes = root_and_upper_nodes(tx_ids)  # one pass for both
    header = BlockHeader(
        version=version,
        chain_id=parent.chain_id,
        height=height,
        prev_block_id=parent.block_id,
        time_ms=time_ms,
        proposer=proposer,
        tx_count=len(included),
        tx_root=tx_root,
        state_root=update.root,
        validator_set_hash=validators.hash,
        next_validator_set_hash=work.chain.validators_at(height + 1).hash,
        history_root=parent.history.root(),
    )
    block = Block(header, tuple(included))
    block.__dict__["tx_tree_nodes"] = tx_tree_nodes  # (a cached_property: the same value)
    history = merkle.MerkleAccumulator(parent.history.size, parent.history.frontier)
    history.append(merkle.leaf_hash(header.block_id))
    seen_here = frozenset(tx_ids)
    parent_seen = parent.tx_seen
    tx_seen: Callable[[bytes], bool]
    if isinstance(parent_seen, SeenTxs):
        tx_seen = parent_seen.extended(height, seen_here)
    else:  # a bare look-up function (states not backed by a store)

        def tx_seen(tx_id: bytes) -> bool:
            return tx_id in seen_here or parent_seen(tx_id)

    state = LedgerState(
        parent.chain_id,
        height,
        header.block_id,
        time_ms,
        update.root,
        work.chain,
        work.members,
        work.key_index,
        work.proposals,
        history,
        parent.tree,
        tx_seen,
        recent=_recent(parent.recent, work),
    )
    return Execution(block, state, update, rejected)


#: Consent records a state keeps from the blocks before it (``LedgerState.recent``).
RECENT_RECORDS = 8192


def _recent(old: Mapping[bytes, bytes], work: WorkingSet) -> Mapping[bytes, bytes]:
    """``old`` updated with the consent records ``work`` wrote (those it keeps decoded),
    the oldest dropped past ``RECENT_RECORDS``."""
    written = [(k, v) for k, v in work.changes.items() if v is not None and k in work.decoded]
    if not written:
        return old
    out = dict(old)
    for k, v in written:
        out.pop(k, None)
        out[k] = v
    if len(out) > RECENT_RECORDS:
        out = dict(list(out.items())[-RECENT_RECORDS:])
    return out


def validate_block(
    parent: LedgerState, block: Block, verified: Callable[[bytes], bool] | None = None
) -> Execution:
    """Re-execute a proposed or replayed block; ``RuleError`` unless it is exactly right."""
    h = block.header
    if h.chain_id != parent.chain_id:
        raise RuleError("wrong_chain", f"block is for chain {h.chain_id!r}")
    if h.height != parent.height + 1:
        raise RuleError("bad_height", f"expected height {parent.height + 1}, got {h.height}")
    if h.prev_block_id != parent.block_id:
        raise RuleError("bad_parent", "prev_block_id is not the parent block's id")
    active = parent.chain.version_at(h.height)
    if h.version != active:
        raise RuleError(
            "wrong_version",
            f"block {h.height} has protocol version {h.version}; the consortium runs version "
            f"{active} at that height",
        )
    ex = execute(
        parent, block.txs, time_ms=h.time_ms, proposer=h.proposer, strict=True, verified=verified
    )
    ours = ex.block.header
    if ours != h:
        for name in (
            "tx_count",
            "tx_root",
            "state_root",
            "validator_set_hash",
            "next_validator_set_hash",
            "history_root",
        ):
            if getattr(ours, name) != getattr(h, name):
                raise RuleError(f"bad_{name}", f"header {name} does not match re-execution")
        raise RuleError("bad_header", "header does not match re-execution")
    return ex


def tx_kind_name(kind: TxKind) -> str:
    return kind.name.lower()
