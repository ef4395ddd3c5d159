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
- Every transaction: right chain id; ``height <= expiry_height <= height + tx_ttl``;
  its id never committed before; a valid signature by the *current* key of a member.
- ATTEST: the sender holds the ISSUER role and the document type; the commitment was
  never attested. REVOKE: only the original issuer, once. Governance: proposals and
  votes by validator members; a proposal executes when yes votes reach the quorum of
  the validator set in force (floor(2n/3)+1), is rejected once that is out of reach,
  expires after its deadline. Validator-set changes take effect
  max(validator_change_delay, pipeline_window + 1) heights later, never mid-block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ledger import merkle
from ledger.codec import as_hash, as_int, as_list, decode, encode, fields
from ledger.errors import DecodeError, RuleError
from ledger.records import (
    CHAIN_KEY,
    AttestationRecord,
    ChainRecord,
    ProposalRecord,
    ProposalStatus,
    attestation_key,
    member_key,
    proposal_key,
)
from ledger.smt import KeyExistsError, SparseMerkleTree, UpdateResult
from ledger.types import (
    ZERO_HASH,
    Attest,
    Block,
    BlockHeader,
    Genesis,
    GovAction,
    GovPropose,
    GovVote,
    Member,
    Revoke,
    Role,
    Transaction,
    TxKind,
    Validator,
    ValidatorSet,
)

MAX_PROPOSAL_LIFETIME = 100_000


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

    def validators_at(self, height: int) -> ValidatorSet:
        return self.chain.validators_at(height)

    @property
    def params(self) -> Any:
        return self.chain.params

    def member_of_key(self, key: bytes) -> Member | None:
        mid = self.key_index.get(key)
        return self.members.get(mid) if mid is not None else None

    def attestation(self, commitment: bytes) -> AttestationRecord | None:
        raw = self.tree.get(attestation_key(commitment), self.height)
        return AttestationRecord.decode(raw) if raw is not None else None

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
    return changes


def execute_genesis(genesis: Genesis, tree: SparseMerkleTree) -> Execution:
    """Block 0: the genesis state, no transactions, no certificate."""
    check_genesis(genesis)
    update = tree.update(None, 0, genesis_changes(genesis))
    chain = ChainRecord(genesis.validators, 1, (), genesis.params, genesis.doc_types)
    header = BlockHeader(
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


class _Block:
    """Mutable working set while one block executes (copy-on-write over the parent)."""

    def __init__(self, parent: LedgerState, height: int) -> None:
        self.parent = parent
        self.height = height
        self.changes: dict[bytes, bytes | None] = {}
        self.attestations: dict[bytes, AttestationRecord | None] = {}
        self.members = parent.members
        self.key_index = parent.key_index
        self.proposals = parent.open_proposals
        self.chain = parent.chain.settle(height)
        self.chain_dirty = self.chain is not parent.chain
        self.members_dirty = False
        self.tx_ids: set[bytes] = set()
        # deferred_exists: ATTESTs skip the per-commitment tree read; the batch update
        # checks that these keys were absent instead (ledger.smt KeyExistsError), in one
        # walk. Validators always defer; builders defer optimistically (see execute).
        self.deferred_exists = False
        self.must_be_new: dict[bytes, bytes] = {}  # state key -> commitment
        self.position = 0  # index in the block of the transaction being applied

    # -- reads through the block's own writes --------------------------------
    def attestation(self, commitment: bytes) -> AttestationRecord | None:
        if commitment in self.attestations:
            return self.attestations[commitment]
        rec = self.parent.attestation(commitment)
        self.attestations[commitment] = rec
        return rec

    def put_attestation(
        self, commitment: bytes, rec: AttestationRecord, key: bytes | None = None
    ) -> None:
        """``key``: ``attestation_key(commitment)`` if the caller has it already."""
        self.attestations[commitment] = rec
        self.changes[key or attestation_key(commitment)] = rec.encode()

    def put_member(self, m: Member) -> None:
        if not self.members_dirty:
            self.members = dict(self.members)
            self.key_index = dict(self.key_index)
            self.members_dirty = True
        old = self.members.get(m.member_id)
        if old is not None:
            self.key_index.pop(old.key, None)  # type: ignore[attr-defined]
        self.members[m.member_id] = m  # type: ignore[index]
        self.key_index[m.key] = m.member_id  # type: ignore[index]
        self.changes[member_key(m.member_id)] = encode(m.to_wire())

    def drop_member(self, member_id: str) -> None:
        if not self.members_dirty:
            self.members = dict(self.members)
            self.key_index = dict(self.key_index)
            self.members_dirty = True
        m = self.members.pop(member_id)  # type: ignore[attr-defined]
        self.key_index.pop(m.key, None)  # type: ignore[attr-defined]
        self.changes[member_key(member_id)] = None

    def put_proposal(self, pid: bytes, rec: ProposalRecord) -> None:
        props = dict(self.proposals)
        if rec.status == ProposalStatus.OPEN:
            props[pid] = rec
        else:
            props.pop(pid, None)
        self.proposals = props
        self.changes[proposal_key(pid)] = rec.encode()

    def set_chain(self, chain: ChainRecord) -> None:
        self.chain = chain
        self.chain_dirty = True


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
    exclude: set[bytes] = set()
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
            if strict or not exc.tx_ids:
                raise exc.error from None
            exclude |= exc.tx_ids
            continue
        if exclude:
            ex.rejected.extend(
                (tx, RuleError("already_attested", "this commitment is already attested"))
                for tx in txs
                if tx.tx_id in exclude
            )
        return ex


class _AlreadyAttested(Exception):
    """The batch found attested commitments: the ATTESTs to drop, or the error to raise."""

    def __init__(self, error: RuleError, tx_ids: set[bytes]) -> None:
        super().__init__(error.message)
        self.error = error
        self.tx_ids = tx_ids


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
    validators = parent.chain.validators_at(height)
    if validators.index_of(proposer) is None:
        raise RuleError("bad_proposer", "the proposer is not a validator at this height")
    work = _Block(parent, height)
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
            _apply_tx(work, tx, verified)
        except RuleError as err:
            if strict:
                raise RuleError(err.code, f"tx {tx.tx_id.hex()[:16]}: {err.message}") from None
            rejected.append((tx, err))
            continue
        included.append(tx)
    _expire_proposals(work)
    if work.chain_dirty:
        work.changes[CHAIN_KEY] = work.chain.encode()
    try:
        update = parent.tree.update(
            parent.height, height, work.changes, must_be_new=work.must_be_new or None
        )
    except KeyExistsError as exc:
        first = work.must_be_new[sorted(exc.keys)[0]]
        attested = {work.must_be_new[k] for k in exc.keys}
        raise _AlreadyAttested(
            RuleError("already_attested", f"commitment {first.hex()[:16]} is already attested"),
            {
                tx.tx_id
                for tx in included
                if isinstance(tx.payload, Attest) and tx.payload.commitment in attested
            },
        ) from None
    tx_ids = [tx.tx_id for tx in included]
    header = BlockHeader(
        chain_id=parent.chain_id,
        height=height,
        prev_block_id=parent.block_id,
        time_ms=time_ms,
        proposer=proposer,
        tx_count=len(included),
        tx_root=merkle.root(tx_ids),
        state_root=update.root,
        validator_set_hash=validators.hash,
        next_validator_set_hash=work.chain.validators_at(height + 1).hash,
        history_root=parent.history.root(),
    )
    block = Block(header, tuple(included))
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
    )
    return Execution(block, state, update, rejected)


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


def _apply_tx(work: _Block, tx: Transaction, verified: Callable[[bytes], bool] | None) -> None:
    parent = work.parent
    height = work.height
    if tx.chain_id != parent.chain_id:
        raise RuleError("wrong_chain", f"transaction is for chain {tx.chain_id!r}")
    ttl = work.chain.params.tx_ttl_heights
    if tx.expiry_height < height:
        raise RuleError("expired", f"transaction expired at height {tx.expiry_height}")
    if tx.expiry_height > height + ttl:
        raise RuleError("expiry_too_far", f"expiry_height may be at most {ttl} blocks ahead")
    tx_id = tx.tx_id
    if tx_id in work.tx_ids or parent.tx_seen(tx_id):
        raise RuleError("replay", "transaction already committed")
    mid = work.key_index.get(tx.sender)
    if mid is None:
        raise RuleError("unknown_sender", "the signing key is not a current member key")
    if not ((verified is not None and verified(tx_id)) or tx.signature_ok()):
        raise RuleError("bad_signature", "transaction signature does not verify")
    member = work.members[mid]
    p = tx.payload
    if isinstance(p, Attest):
        _attest(work, member, p)
    elif isinstance(p, Revoke):
        _revoke(work, member, p.commitment, int(p.reason), by_governance=False)
    elif isinstance(p, GovPropose):
        _propose(work, member, p, tx_id)
    elif isinstance(p, GovVote):
        _vote(work, member, p)
    else:  # pragma: no cover - decoding admits no other kind
        raise AssertionError(tx.kind)
    work.tx_ids.add(tx_id)


def _attest(work: _Block, member: Member, p: Attest) -> None:
    if not member.has_role(Role.ISSUER):
        raise RuleError("not_issuer", f"{member.member_id} does not hold the issuer role")
    if p.doc_type not in member.doc_types:
        raise RuleError(
            "doc_type_not_granted", f"{member.member_id} is not admitted to issue {p.doc_type!r}"
        )
    key = None
    if work.deferred_exists and p.commitment not in work.attestations:
        # Existence at the parent is checked by the batch update (_Block.deferred_exists).
        key = attestation_key(p.commitment)
        work.must_be_new[key] = p.commitment
    elif work.attestation(p.commitment) is not None:
        raise RuleError("already_attested", "this commitment is already attested")
    work.put_attestation(
        p.commitment,
        AttestationRecord(
            member.member_id, p.doc_type, p.valid_until_ms, work.height, work.position
        ),
        key,
    )


def _revoke(
    work: _Block, member: Member | None, commitment: bytes, reason: int, *, by_governance: bool
) -> None:
    """Mark revoked; ``revoke_position`` is the REVOKE (or deciding GOV_VOTE) transaction."""
    rec = work.attestation(commitment)
    if rec is None:
        raise RuleError("not_found", "no attestation of this commitment")
    if rec.revoked_height:
        raise RuleError("already_revoked", f"revoked at height {rec.revoked_height}")
    if not by_governance and (member is None or rec.issuer != member.member_id):
        raise RuleError("not_original_issuer", "only the original issuer may revoke")
    work.put_attestation(commitment, rec.revoked(work.height, reason, work.position))


def _voters(work: _Block) -> ValidatorSet:
    return work.chain.validators_at(work.height)


def _propose(work: _Block, member: Member, p: GovPropose, tx_id: bytes) -> None:
    voters = _voters(work)
    if member.member_id not in {v.member_id for v in voters.validators}:
        raise RuleError("not_validator", "only validator members may propose")
    if not work.height <= p.deadline_height <= work.height + MAX_PROPOSAL_LIFETIME:
        raise RuleError("bad_deadline", "deadline must be within the proposal lifetime")
    rec = ProposalRecord(
        int(p.action), p.args, member.member_id, p.deadline_height, (member.member_id,), ()
    )
    _tally(work, tx_id, rec)


def _vote(work: _Block, member: Member, p: GovVote) -> None:
    rec = work.proposals.get(p.proposal_id)
    if rec is None:
        raise RuleError("no_open_proposal", "no open proposal with this id")
    if rec.deadline_height < work.height:
        raise RuleError("proposal_expired", "the proposal's deadline has passed")
    if member.member_id not in {v.member_id for v in _voters(work).validators}:
        raise RuleError("not_validator", "only validator members may vote")
    if member.member_id in rec.yes or member.member_id in rec.no:
        raise RuleError("already_voted", f"{member.member_id} already voted")
    if p.approve:
        rec = replace(rec, yes=tuple(sorted((*rec.yes, member.member_id))))
    else:
        rec = replace(rec, no=tuple(sorted((*rec.no, member.member_id))))
    _tally(work, p.proposal_id, rec)


def _tally(work: _Block, pid: bytes, rec: ProposalRecord) -> None:
    voters = _voters(work)
    ids = {v.member_id for v in voters.validators}
    yes = len(ids.intersection(rec.yes))
    no = len(ids.intersection(rec.no))
    if yes >= voters.quorum:
        try:
            _execute_action(work, GovAction(rec.action), rec.args)
            status = ProposalStatus.APPROVED
        except RuleError:
            # Approved but no longer applicable (e.g. the member was added meanwhile):
            # recorded as rejected so the outcome is visible and deterministic.
            status = ProposalStatus.REJECTED
        rec = replace(rec, status=int(status), decided_height=work.height)
    elif no > voters.n - voters.quorum:
        rec = replace(rec, status=int(ProposalStatus.REJECTED), decided_height=work.height)
    work.put_proposal(pid, rec)


def _expire_proposals(work: _Block) -> None:
    for pid in sorted(work.proposals):
        rec = work.proposals[pid]
        if rec.deadline_height < work.height:
            work.put_proposal(
                pid, replace(rec, status=int(ProposalStatus.EXPIRED), decided_height=work.height)
            )


def _member(work: _Block, member_id: str) -> Member:
    m = work.members.get(member_id)
    if m is None:
        raise RuleError("unknown_member", f"no member {member_id!r}")
    return m


def _schedule(work: _Block, new_set: ValidatorSet) -> None:
    params = work.chain.params
    eff = work.height + max(params.validator_change_delay, params.pipeline_window + 1)
    sched = [(h, vs) for h, vs in work.chain.scheduled if h != eff] + [(eff, new_set)]
    work.set_chain(replace(work.chain, scheduled=tuple(sorted(sched, key=lambda x: x[0]))))


def _execute_action(work: _Block, action: GovAction, args: tuple[Any, ...]) -> None:
    if action == GovAction.ADD_MEMBER:
        mid, name, key = args
        if mid in work.members:
            raise RuleError("member_exists", f"{mid} is already a member")
        if key in work.key_index:
            raise RuleError("key_in_use", "that key belongs to another member")
        work.put_member(Member(mid, name, key))
    elif action == GovAction.REMOVE_MEMBER:
        (mid,) = args
        _member(work, mid)
        if mid in {v.member_id for v in work.chain.latest_validators().validators}:
            raise RuleError("is_validator", "remove the member's validator first")
        work.drop_member(mid)
    elif action in (GovAction.GRANT_ROLE, GovAction.WITHDRAW_ROLE):
        mid, role = args
        if role == Role.VALIDATOR:
            raise RuleError("use_validator_actions", "use ADD_VALIDATOR / REMOVE_VALIDATOR")
        m = _member(work, mid)
        roles = set(m.roles)
        roles.add(role) if action == GovAction.GRANT_ROLE else roles.discard(role)
        work.put_member(replace(m, roles=tuple(sorted(roles))))
    elif action in (GovAction.GRANT_DOC_TYPE, GovAction.WITHDRAW_DOC_TYPE):
        mid, doc = args
        m = _member(work, mid)
        docs = set(m.doc_types)
        if action == GovAction.GRANT_DOC_TYPE:
            docs.add(doc)
            if doc not in work.chain.doc_types:
                work.set_chain(
                    replace(work.chain, doc_types=tuple(sorted((*work.chain.doc_types, doc))))
                )
        else:
            docs.discard(doc)
        work.put_member(replace(m, doc_types=tuple(sorted(docs))))
    elif action == GovAction.ROTATE_KEY:
        mid, key = args
        m = _member(work, mid)
        if key in work.key_index:
            raise RuleError("key_in_use", "that key belongs to a member already")
        work.put_member(replace(m, key=key))
    elif action == GovAction.ADD_VALIDATOR:
        mid, node_key = args
        m = _member(work, mid)
        latest = work.chain.latest_validators()
        if any(v.member_id == mid or v.node_key == node_key for v in latest.validators):
            raise RuleError("already_validator", f"{mid} or that node key is a validator")
        _schedule(work, ValidatorSet.of([*latest.validators, Validator(mid, node_key)]))
        work.put_member(replace(m, roles=tuple(sorted({*m.roles, int(Role.VALIDATOR)}))))
    elif action == GovAction.REMOVE_VALIDATOR:
        (mid,) = args
        m = _member(work, mid)
        latest = work.chain.latest_validators()
        rest = [v for v in latest.validators if v.member_id != mid]
        if len(rest) == len(latest.validators):
            raise RuleError("not_validator", f"{mid} is not a validator")
        if not rest:
            raise RuleError("last_validator", "cannot remove the last validator")
        _schedule(work, ValidatorSet.of(rest))
        work.put_member(replace(m, roles=tuple(r for r in m.roles if r != Role.VALIDATOR)))
    elif action == GovAction.SET_PARAM:
        name, value = args
        try:
            params = work.chain.params.with_param(name, value)
        except ValueError as exc:
            raise RuleError("bad_param", str(exc)) from None
        work.set_chain(replace(work.chain, params=params))
    elif action == GovAction.REVOKE_ATTESTATION:
        commitment, reason = args
        _revoke(work, None, commitment, reason, by_governance=True)
    else:  # pragma: no cover
        raise AssertionError(action)


def tx_kind_name(kind: TxKind) -> str:
    return kind.name.lower()
