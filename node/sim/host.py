"""A sans-IO node core for the simulator: ``step(event, now_ms) -> effects``.

Stand-in until ``node/core.py`` (branch ``core``) lands: it is node/node.py's driver,
gossip and catch-up logic with the I/O taken out, so the simulator runs the real
``consensus.Replica``, the real ``ledger.chain.Ledger`` (on ``ledger.kv.MemoryKV``
stores), the real ``node.mempool.Mempool``, ``node.app.LedgerApp`` and
``Ed25519Crypto``. No clock, no randomness, no I/O: time is the caller's ``now``
(milliseconds), and everything that leaves the node is an effect.

Events: ``Tick`` (a deadline passed), ``PeerFrame`` (a frame on ``consensus`` or
``txs``), ``ClientTxs`` (a client's submission), ``BlocksFetched`` (the answer to a
``Fetch``). Effects: ``Send``/``Broadcast`` (frames), ``Answer`` (per-transaction
results for a client), ``Committed`` (a block reached the ledger), ``Fetch``
(certified blocks wanted from a peer), ``Penalise`` (a peer misbehaved).

Ordering (as node.py): ``Persist``/``PersistBlock`` are coalesced per replica step and
written in one synced ``ConsensusDB.save`` before any frame of that step leaves
(``consensus/api.py`` rule 1); a block is committed with one synced batch.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from consensus.api import (
    Applied,
    BlocksReceived,
    Broadcast,
    CancelTimer,
    CertifiedPayload,
    CommitBlock,
    Config,
    Event,
    MessageReceived,
    Persist,
    PersistBlock,
    ProposalReady,
    ReportEvidence,
    RequestBlocks,
    RequestProposal,
    Send,
    SetTimer,
    Start,
    TimerFired,
    TimerKind,
    TxsDropped,
    TxsPending,
)
from consensus.messages import decode_message
from consensus.record import SigningRecord
from consensus.replica import Replica
from ledger.chain import Ledger
from ledger.codec import as_bytes, as_list, decode, encode
from ledger.crypto import KeyPair
from ledger.errors import DecodeError, LedgerError
from ledger.types import CommitCertificate, Transaction
from node.app import Ed25519Crypto, LedgerApp
from node.consensus_db import ConsensusDB
from node.mempool import AddResult, AddStatus, Mempool
from node.transport import CONSENSUS, TXS

RECHECK_AGE_MS = 1000
RECHECK_MS = 1000
RECHECK_MAX = 256
RESEND_AGE_MS = 2000
MAX_TX_BATCH = 4096


# ---------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Tick:
    """A deadline (``next_deadline``) passed."""


@dataclass(frozen=True)
class PeerFrame:
    peer: bytes
    channel: str
    payload: bytes


@dataclass(frozen=True)
class ClientTxs:
    request_id: int
    txs: tuple[Transaction, ...]


@dataclass(frozen=True)
class BlocksFetched:
    peer: bytes
    blocks: tuple[CertifiedPayload, ...]


# ---------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class SendFrame:
    peer: bytes
    channel: str
    payload: bytes


@dataclass(frozen=True)
class BroadcastFrame:
    channel: str
    payload: bytes


@dataclass(frozen=True)
class Answer:
    request_id: int
    results: tuple[AddResult, ...]


@dataclass(frozen=True)
class Committed:
    height: int
    block_id: bytes
    tx_ids: tuple[bytes, ...]


@dataclass(frozen=True)
class Fetch:
    peer: bytes
    lo: int
    hi: int


@dataclass(frozen=True)
class Penalise:
    peer: bytes
    reason: str


Effect = SendFrame | BroadcastFrame | Answer | Committed | Fetch | Penalise


@dataclass
class _Proposal:
    height: int
    view: int
    parent_block_id: bytes
    since: int


@dataclass
class CoreConfig:
    linger_ms: int = 20
    mempool_max_txs: int = 10_000
    time_base_ms: int = 0  # block timestamps are time_base_ms + now
    stats: dict[str, int] = field(default_factory=dict)


class SimNodeCore:
    """One validator: ledger, mempool, replica and the driver's policies."""

    def __init__(
        self, config: CoreConfig, key: KeyPair, ledger: Ledger, cdb: ConsensusDB | None
    ) -> None:
        self.config = config
        self.key = key
        self.ledger = ledger
        self.cdb = cdb
        self.chain_id = ledger.chain_id
        self.mempool = Mempool(self.chain_id, max_txs=config.mempool_max_txs)
        self.app = LedgerApp(
            ledger,
            self.mempool.verified,
            known_tx=self.mempool.get,
            on_valid=self.mempool.mark_verified,
        )
        self.crypto = Ed25519Crypto(key)
        self.replica: Replica | None = None
        self.timers: dict[tuple[int, int], int] = {}
        self.proposals: dict[int, _Proposal] = {}
        self.submitted_at: OrderedDict[bytes, int] = OrderedDict()
        self.new_pending: list[bytes] = []
        self.dropped_pending: list[bytes] = []
        self.gossip_buf: list[bytes] = []
        self.last_commit = 0
        self.last_built = 0
        self.last_recheck = 0
        self._heartbeat_id: bytes | None = None
        self._record: SigningRecord | None = None
        self._payloads: list[tuple[int, bytes, bytes]] = []
        self._outbox: list[Any] = []
        self._effects: list[Effect] = []
        self.now = 0
        self.view_changes = 0

    # ------------------------------------------------------------------ lifecycle

    def start(self, now: int) -> list[Effect]:
        """Start the replica from the durable record (the node is caught up enough)."""
        self.now = self.last_commit = self.last_recheck = now
        assert self.cdb is not None
        p = self.ledger.head.chain.params
        genesis_id = self.ledger.store.get_block_id(0)
        assert genesis_id is not None
        head = self.ledger.head
        self.replica = Replica(
            Config(
                chain_id=self.chain_id,
                genesis_block_id=genesis_id,
                window=p.pipeline_window,
                checkpoint_interval=p.checkpoint_interval,
                view_timeout_ms=p.view_timeout_ms,
                censor_timeout_ms=max(4 * p.view_timeout_ms, 2 * p.heartbeat_ms),
            ),
            self.app,
            self.crypto,
            committed_height=head.height,
            committed_block_id=head.block_id,
            record=self.cdb.load_record(),
            blocks=self.cdb.payloads(),
        )
        self._step(Start())
        if head.height > 0:
            self._step(Applied(head.height, head.state_root))
        ids = tuple(self.mempool.tx_ids())
        if ids:
            self._step(TxsPending(ids))
        return self._flush()

    # ------------------------------------------------------------------ step

    def step(self, event: Any, now: int) -> list[Effect]:
        self.now = max(self.now, now)
        kind = type(event)
        if kind is PeerFrame:
            self._frame(event)
        elif kind is ClientTxs:
            results = tuple(self.submit(tx, gossip=True) for tx in event.txs)
            self._effects.append(Answer(event.request_id, results))
        elif kind is BlocksFetched:
            if self.replica is not None:
                self._step(BlocksReceived(event.peer, event.blocks))
        self._pending_events()
        if self.replica is not None:
            self._fire_timers()
            self._heartbeat_watch()
            self._maybe_build()
            self._pending_events()
        return self._flush()

    def next_deadline(self) -> int | None:
        if self.replica is None:
            return None
        deadline = min(self.timers.values(), default=None)
        candidates = [d for d in (deadline,) if d is not None]
        if self.proposals:
            candidates.append(self._build_deadline())
        if self._heartbeat_id is None:
            candidates.append(self._heartbeat_overdue_at())
        candidates.append(self.last_recheck + RECHECK_MS)
        return max(min(candidates), self.now)

    def _flush(self) -> list[Effect]:
        if self.gossip_buf:
            for i in range(0, len(self.gossip_buf), MAX_TX_BATCH):
                batch = self.gossip_buf[i : i + MAX_TX_BATCH]
                self._effects.append(BroadcastFrame(TXS, encode(batch)))
            self.gossip_buf = []
        out, self._effects = self._effects, []
        return out

    # ------------------------------------------------------------------ input

    def _frame(self, frame: PeerFrame) -> None:
        if frame.channel == CONSENSUS:
            if self.replica is None:
                return
            try:
                msg = decode_message(frame.payload)
            except DecodeError:
                self._effects.append(Penalise(frame.peer, "malformed_consensus"))
                return
            self._step(MessageReceived(msg, peer=frame.peer))
        elif frame.channel == TXS:
            try:
                items = as_list(decode(frame.payload), "tx batch", MAX_TX_BATCH)
            except DecodeError:
                self._effects.append(Penalise(frame.peer, "malformed_tx_batch"))
                return
            tip = self.ledger.tip
            for raw in items:
                try:
                    tx = Transaction.decode(as_bytes(raw, "tx", max_size=8192))
                except DecodeError:
                    self._effects.append(Penalise(frame.peer, "malformed_tx"))
                    continue
                self.submit(tx, gossip=False, state=tip)

    def submit(self, tx: Transaction, *, gossip: bool, state: Any = None) -> AddResult:
        result = self.mempool.add(
            tx, self.ledger.tip if state is None else state, check_state=gossip
        )
        if result.status == AddStatus.ADDED:
            self.submitted_at[tx.tx_id] = self.now
            self.new_pending.append(tx.tx_id)
            if gossip:
                self.gossip_buf.append(tx.encoded)
        return result

    def _pending_events(self) -> None:
        """What the gossip task hands the driver: new and dropped pending ids."""
        if self.replica is None:
            self.new_pending.clear()
            self.dropped_pending.clear()
            return
        if self.new_pending:
            ids = tuple(t for t in self.new_pending if t in self.mempool)
            self.new_pending = []
            if ids:
                self._step(TxsPending(ids))
        if self.now - self.last_recheck >= RECHECK_MS:
            self._recheck_stale()
        if self.dropped_pending:
            ids = tuple(t for t in self.dropped_pending if t not in self.mempool)
            self.dropped_pending = []
            if ids:
                self._step(TxsDropped(ids))

    # ------------------------------------------------------------------ the replica

    def _step(self, first: Event) -> None:
        assert self.replica is not None
        queue: deque[Event] = deque([first])
        while queue:
            event = queue.popleft()
            view_before = self.replica.view
            for action in self.replica.step(event):
                follow = self._execute(action)
                if follow is not None:
                    queue.append(follow)
            self._release()
            if self.replica.view != view_before:
                self.view_changes += 1

    def _release(self) -> None:
        record, payloads, outbox = self._record, self._payloads, self._outbox
        self._record, self._payloads, self._outbox = None, [], []
        if record is not None or payloads:
            assert self.cdb is not None
            self.cdb.save(record, payloads)
        for action in outbox:
            if isinstance(action, Send):
                self._effects.append(SendFrame(action.to, CONSENSUS, action.message.encoded))
            else:
                self._effects.append(BroadcastFrame(CONSENSUS, action.message.encoded))

    def _execute(self, action: Any) -> Event | None:
        now = self.now
        if isinstance(action, Persist):
            self._record = action.record
        elif isinstance(action, PersistBlock):
            self._payloads.append((action.height, action.block_id, action.payload))
        elif isinstance(action, Send | Broadcast):
            self._outbox.append(action)
        elif isinstance(action, SetTimer):
            self.timers[(int(action.kind), action.key)] = now + action.delay_ms
        elif isinstance(action, CancelTimer):
            self.timers.pop((int(action.kind), action.key), None)
        elif isinstance(action, RequestProposal):
            self.proposals[action.height] = _Proposal(
                action.height, action.view, action.parent_block_id, now
            )
        elif isinstance(action, CommitBlock):
            self._release()
            return self._commit(action.height, action.payload, action.certificate)
        elif isinstance(action, RequestBlocks):
            self._effects.append(Fetch(action.peer, action.from_height, action.to_height))
        elif isinstance(action, ReportEvidence):
            self._release()
            assert self.cdb is not None
            self.cdb.save_evidence(action.evidence.encode())  # type: ignore[attr-defined]
        return None

    def _commit(self, height: int, payload: bytes, cert: CommitCertificate) -> Event | None:
        block = self.app.block_of(payload)
        if block is None or block.height != height:
            raise RuntimeError(f"certified block at height {height} does not decode")
        if height <= self.ledger.height:
            return None
        ex = self.ledger.commit(block, cert, verified=self.mempool.verified)
        self._after_commit(ex.block.tx_ids, height)
        self._effects.append(Committed(height, ex.block.block_id, tuple(ex.block.tx_ids)))
        if self.cdb is not None:
            self.cdb.prune_payloads(height)
        return Applied(height, ex.state.state_root)

    def _after_commit(self, tx_ids: list[bytes], height: int) -> None:
        recheck = getattr(self.mempool, "committed", None)
        if recheck is not None:  # branch `rules`: re-check what is left on the new head
            block = self.ledger.store.get_block(height)
            gone = recheck(block, self.ledger.head)
            self.dropped_pending.extend(gone or ())
        else:
            self.mempool.remove(tx_ids)
        for tx_id in tx_ids:
            self.submitted_at.pop(tx_id, None)
        self.dropped_pending.extend(self.mempool.drop_expired(height + 1))
        self.last_commit = self.now
        for h in [h for h in self.proposals if h <= height]:
            del self.proposals[h]

    # ------------------------------------------------------------------ policies

    def _fire_timers(self) -> None:
        due = sorted((t, k) for k, t in self.timers.items() if t <= self.now)
        for _t, (kind, key) in due:
            if self.timers.pop((kind, key), None) is not None and self.replica is not None:
                self._step(TimerFired(TimerKind(kind), key))

    def _heartbeat_overdue_at(self) -> int:
        return self.last_commit + 2 * self.ledger.head.chain.params.heartbeat_ms

    def _heartbeat_watch(self) -> None:
        overdue = self.now >= self._heartbeat_overdue_at()
        if overdue and self._heartbeat_id is None:
            self._heartbeat_id = b"heartbeat-due:" + self.ledger.height.to_bytes(8, "big")
            self._step(TxsPending((self._heartbeat_id,)))
        elif not overdue and self._heartbeat_id is not None:
            self._step(TxsDropped((self._heartbeat_id,)))
            self._heartbeat_id = None

    def _recheck_stale(self) -> None:
        now = self.now
        self.last_recheck = now
        old: list[bytes] = []
        for tx_id, t0 in list(itertools.islice(self.submitted_at.items(), RECHECK_MAX)):
            if now - t0 < RECHECK_AGE_MS:
                break
            if tx_id in self.mempool:
                old.append(tx_id)
            else:
                del self.submitted_at[tx_id]
        if old:
            gone = self.mempool.recheck(old, self.ledger.head)
            self.dropped_pending.extend(gone)
            for tx_id in gone:
                self.submitted_at.pop(tx_id, None)
            dead = set(gone)
            for tx_id in old:
                if tx_id not in dead and now - self.submitted_at.get(tx_id, now) >= RESEND_AGE_MS:
                    tx = self.mempool.get(tx_id)
                    if tx is not None:
                        self.gossip_buf.append(tx.encoded)

    def _available(self) -> int:
        in_flight = sum(ex.block.header.tx_count for ex in self.ledger.pending.values())
        return max(0, len(self.mempool) - in_flight)

    def _build_deadline(self) -> int:
        params = self.ledger.head.chain.params
        available = self._available()
        if available >= params.max_block_txs:
            return 0
        if available > 0:
            oldest = min(p.since for p in self.proposals.values())
            linger = self.config.linger_ms * 2 ** min(len(self.ledger.pending), 4)
            return max(oldest, self.last_built) + linger
        return max(self.last_commit, self.last_built) + params.heartbeat_ms

    def _maybe_build(self) -> None:
        if not self.proposals or self._build_deadline() > self.now:
            return
        height = min(self.proposals)
        req = self.proposals.pop(height)
        params = self.ledger.head.chain.params
        in_flight = {tid for ex in self.ledger.pending.values() for tid in ex.block.tx_ids}
        txs = self.mempool.take(params.max_block_txs, params.max_block_bytes // 2, in_flight)
        parent = self.ledger.state_of_block(req.parent_block_id)
        if parent is None or parent.height + 1 != req.height:
            return
        time_ms = max(self.config.time_base_ms + self.now, parent.time_ms + 1)
        try:
            ex = self.ledger.build(
                txs,
                time_ms=time_ms,
                proposer=self.key.public_key,
                verified=self.mempool.verified,
                parent_block_id=req.parent_block_id,
            )
        except LedgerError:
            return
        if ex.rejected:
            refused = [tx.tx_id for tx, _ in ex.rejected]
            self.mempool.remove(refused, committed=False)
            self.dropped_pending.extend(refused)
        self.app.remember(ex.block)
        self.last_built = self.now
        self._step(ProposalReady(req.height, req.view, ex.block.encode()))
