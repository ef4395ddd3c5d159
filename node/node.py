"""The node process: one trio nursery of long-lived tasks around the ledger and PBFT.

Tasks (each owned by ``Node.run``'s nursery; shutdown is the nursery's cancel scope):

- ``driver``  -- owns the consensus ``Replica``: receives events from one bounded
  channel, steps the replica, executes its actions in order (persist before send), keeps
  the replica's timers, builds proposals (batching: cut at ``max_block_txs`` or after
  ``linger_ms``; an empty heartbeat block at least every ``heartbeat_ms``), commits
  certified blocks to the ledger and wakes RPC callers waiting for them;
- ``tx_ingest`` -- decodes gossiped transaction batches into the mempool;
- ``gossip`` -- floods newly admitted transactions to peers in batches;
- ``follow``  -- observers (and validators before they start voting) fetch certified
  blocks from peers and commit them after verifying every certificate;
- the RPC server(s) (``node.methods``) and the transport (``p2p``).

Everything that touches the ledger or the replica runs on the trio thread without
awaiting in between, so those objects need no locks. Inbound network traffic goes
through ``deliver``, which never blocks: when a bounded queue is full the frame is
dropped and counted (consensus tolerates loss; clients retry transactions).
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import plyvel
import trio

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
    TxsDropped,
    TxsPending,
)
from consensus.messages import decode_message
from consensus.record import SigningRecord
from consensus.replica import Replica
from ledger.chain import Ledger
from ledger.codec import as_bytes, as_list, decode, encode
from ledger.crypto import read_key_file
from ledger.errors import DecodeError, LedgerError, StoreError
from ledger.genesis import read_genesis
from ledger.prove import Prover
from ledger.state import LedgerState
from ledger.store import leveldb_reason
from ledger.types import Block, CommitCertificate, Transaction
from node import sync
from node.app import Ed25519Crypto, LedgerApp
from node.config import NodeConfig
from node.consensus_db import ConsensusDB
from node.logs import get_logger
from node.mempool import ADMIT_CHUNK, CLIENT_BUSY, AddResult, AddStatus, Mempool
from node.metrics import NodeMetrics
from node.transport import CONSENSUS, TXS, Transport, TransportError, TransportTimeout

log = get_logger("node")

EVENT_QUEUE = 4096
TX_QUEUE = 256
GOSSIP_FLUSH_S = 0.01
# Transactions pending longer than this are re-checked against the committed state (at
# most RECHECK_MAX per RECHECK_S), well within the censorship timeout (>= 4 view
# timeouts): one a committed block made impossible must not be blamed on the primary.
RECHECK_AGE_S = 1.0
RECHECK_S = 1.0
RECHECK_MAX = 256
# ... and those still pending after this long are gossiped again (see _recheck_stale).
RESEND_AGE_S = 2.0
GOSSIP_MAX_BYTES = 256 * 1024
MAX_TX_BATCH = 4096
MAX_CLOCK_DRIFT_MS = 10_000
# The driver sleeps until its next deadline (a timer, the block builder's, the heartbeat
# watch) or an event; this is only a safety net. Everything that moves a deadline either
# is an event (votes, TxsPending within GOSSIP_FLUSH_S of an admission) or is in
# _next_deadline. It was 20 ms, and with the gossip task's 10-ms tick an idle node woke
# ~220 times a second (~3.5 % of a core, mostly trio's own work per wake-up).
DRIVER_TICK_S = 1.0
# A synced write slower than this is logged (``Node._slow``).
SLOW_WRITE_MS = 150
START_REPLICA = object()  # driver event: catch-up is done, start voting
# After a failed disk write: how often to retry, and the free space to wait for first.
STORE_RETRY_S = 1.0
STORE_MIN_FREE_BYTES = 4 * 1024 * 1024


@dataclass
class Pending:
    """An outstanding ``RequestProposal`` from the replica."""

    height: int
    view: int
    parent_block_id: bytes
    since: float


@dataclass
class NodeStatus:
    started_at: float = field(default_factory=time.time)
    last_commit_wall: float = 0.0
    view_changes: int = 0
    evidence: int = 0  # equivocation evidence records in the consensus database
    store_error: str | None = None  # set while a failed disk write stops commits


TransportFactory = Callable[["Node", dict[bytes, str]], Transport]


class Node:
    """A validator or observer built from a ``NodeConfig`` (see the module docstring)."""

    def __init__(self, config: NodeConfig, transport_factory: TransportFactory) -> None:
        self.config = config
        self.key = read_key_file(config.key_file)
        self.genesis = read_genesis(config.genesis)
        self.chain_id = self.genesis.chain_id
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger.open(config.data_dir / "ledger", self.genesis, create=True)
        self.mempool = Mempool(self.chain_id, max_txs=config.mempool_max_txs)
        self.metrics = NodeMetrics()
        self.app = LedgerApp(
            self.ledger,
            self.mempool.verified,
            known_tx=self.mempool.get,
            on_valid=self.mempool.mark_verified,
        )
        self.crypto = Ed25519Crypto(self.key)
        self.status = NodeStatus()
        self.is_validator = config.is_validator
        self.cdb = ConsensusDB(config.data_dir / "consensus") if self.is_validator else None
        self.status.evidence = len(self.cdb.evidence()) if self.cdb is not None else 0
        self.replica: Replica | None = None
        self.events_tx, self.events_rx = trio.open_memory_channel[Any](EVENT_QUEUE)
        self.txs_tx, self.txs_rx = trio.open_memory_channel[tuple[bytes, bytes]](TX_QUEUE)
        self.timers: dict[tuple[int, int], float] = {}
        self.proposals: dict[int, Pending] = {}
        # Coalesced durable writes and the messages/commits waiting for them (_release).
        self._durable_record: SigningRecord | None = None
        self._durable_payloads: list[tuple[int, bytes, bytes]] = []
        self._outbox: list[Send | Broadcast] = []
        self.gossip_buf: list[bytes] = []
        self.new_pending: list[bytes] = []
        # Left the mempool without committing (refused by our builder, expired): the
        # replica must stop counting them as pending (flushed with new_pending).
        self.dropped_pending: list[bytes] = []
        self._gossip_due = trio.Event()  # set when one of the three lists above grows
        self._last_recheck = 0.0
        self.waiters: dict[bytes, trio.Event] = {}
        self.submitted_at: OrderedDict[bytes, float] = OrderedDict()
        # Arrival times of the transactions this node's own clients submitted: the
        # commit-latency histogram observes these only (a Histogram.observe per
        # gossiped transaction as well cost ~2 % of a node's CPU at 2,500 tx/s).
        self.client_submitted: OrderedDict[bytes, float] = OrderedDict()
        self.dropped: dict[str, int] = {}
        self.last_commit = trio.current_time() if _in_trio() else 0.0
        self.ready = False
        self._heartbeat_id: bytes | None = None
        self.prover = Prover(self.ledger)
        self.best_peer_height = 0
        self.fetch_pacer = sync.FetchPacer()
        self.last_built = 0.0
        self._nursery: trio.Nursery | None = None
        peers = self._peer_addresses()
        self.transport = transport_factory(self, peers)
        self.transport.set_allowlist(self.allowed_keys())
        self.peer_keys = set(peers)
        self.metrics.watch(
            "dvp_consensus_events",
            "PBFT replica counters (messages by "
            "outcome: bad_signature, stale, duplicate, evidence, ...)",
            lambda: self.replica.stats if self.replica is not None else None,
        )
        self.metrics.watch(
            "dvp_p2p_events",
            "p2p transport counters (frames, drops by reason, offences, bans, refusals, ...)",
            lambda: getattr(self.transport, "stats", None),
        )  # type: ignore[arg-type]

    # ------------------------------------------------------------------ identity

    def allowed_keys(self) -> set[bytes]:
        """Who may connect: validators' node keys (at the tip and next heights) and every
        member's key (members run observers under their member key)."""
        tip = self.ledger.tip
        keys = {m.key for m in tip.members.values()}
        for h in (tip.height + 1, tip.height + 1 + tip.chain.params.validator_change_delay + 8):
            keys |= set(tip.validators_at(h).keys)
        return keys

    def _peer_addresses(self) -> dict[bytes, str]:
        tip = self.ledger.tip
        by_member = {v.member_id: v.node_key for v in tip.validators_at(tip.height + 1).validators}
        out: dict[bytes, str] = {}
        for member_id, addr in self.config.peers.items():
            key = by_member.get(member_id)
            if key is None and member_id in tip.members:
                key = tip.members[member_id].key
            if key is None:
                log.warning("config names a peer that is not a member", peer=member_id)
                continue
            if key != self.key.public_key:
                out[key] = str(addr)
        return out

    def validator_keys(self) -> set[bytes]:
        tip = self.ledger.tip
        return set(tip.validators_at(tip.height + 1).keys)

    # ------------------------------------------------------------------ network input

    def deliver(self, channel: str, peer: bytes, payload: bytes) -> None:
        """Called by the transport for every inbound frame; never blocks."""
        if channel == CONSENSUS:
            if self.replica is None:
                return
            try:
                msg = decode_message(payload)
            except DecodeError:
                self._drop("malformed_consensus")
                self.transport.penalize(peer, "malformed_consensus")
                return
            try:
                self.events_tx.send_nowait(MessageReceived(msg, peer=peer))
            except trio.WouldBlock:
                self._drop("consensus_queue_full")
        elif channel == TXS:
            try:
                self.txs_tx.send_nowait((peer, payload))
            except trio.WouldBlock:
                self._drop("tx_queue_full")
        else:
            self._drop("unknown_channel")

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.metrics.dropped.labels(reason).inc()

    async def handle_request(self, peer: bytes, request: bytes) -> bytes:
        try:
            return sync.serve(self.ledger.store, request)
        except DecodeError as exc:
            self._drop("malformed_sync")
            self.transport.penalize(peer, "malformed_sync")
            return encode(["error", str(exc)[:200]])

    # ------------------------------------------------------------------ transactions

    def submit(
        self,
        tx: Transaction,
        *,
        gossip: bool = True,
        state: LedgerState | None = None,
        now: float | None = None,
    ) -> AddResult:
        """Admit a transaction from a client (or peer) into the mempool.

        ``gossip``: True for a client's transaction, which this node floods to its peers;
        False for one a peer flooded to it (not flooded again). Both take the ledger's
        full rule book against the committed head and the pending ones (Mempool.add).

        Batches pass ``state`` (the ledger's committed head) and ``now`` once per chunk:
        read per transaction they were a measurable share of admission."""
        if gossip and len(self.mempool) >= self.client_limit() and tx.tx_id not in self.mempool:
            # Past this depth a client's transaction would only queue, and admitting it
            # (a signature check, ~64 us) takes the CPU the chain needs to commit what is
            # already queued: under overload the node spent half its time admitting and
            # committed a third less (docs/ARCHITECTURE.md, "Overload"). Refusing before
            # any check keeps commits at full speed and tells the client to come back.
            # Gossip from peers is still admitted up to the hard bound, so a transaction
            # another node accepted reaches every validator.
            self.mempool.stats["busy"] += 1
            self.metrics.client_refused.inc()
            return CLIENT_BUSY
        result = self.mempool.add(
            tx, self.ledger.head if state is None else state, from_peer=not gossip
        )
        if result.status == AddStatus.ADDED:
            if now is None:
                now = trio.current_time()
            self.submitted_at[tx.tx_id] = now
            if len(self.submitted_at) > 2 * self.config.mempool_max_txs:
                self.submitted_at.popitem(last=False)
            self.new_pending.append(tx.tx_id)
            self._gossip_due.set()
            if gossip:  # from a client of ours, not a peer
                self.client_submitted[tx.tx_id] = now
                if len(self.client_submitted) > 2 * self.config.mempool_max_txs:
                    self.client_submitted.popitem(last=False)
                self.gossip_buf.append(tx.encoded)
        return result

    def client_limit(self) -> int:
        """Pending transactions from which this node refuses clients' new ones (busy):
        ``[mempool] client_max_txs``, by default two pipelines' worth (2 x
        pipeline_window x max_block_txs: enough to keep every block full), never above
        the hard bound ``max_txs``."""
        if self.config.mempool_client_max_txs is not None:
            return min(self.config.mempool_client_max_txs, self.config.mempool_max_txs)
        p = self.ledger.head.chain.params
        return min(2 * p.pipeline_window * p.max_block_txs, self.config.mempool_max_txs)

    def committed_height_of(self, tx_id: bytes) -> int | None:
        loc = self.ledger.store.tx_location(tx_id)
        return None if loc is None else loc[0]

    async def wait_committed(self, tx_id: bytes, timeout_s: float) -> int | None:
        """Height at which ``tx_id`` committed, or None after ``timeout_s``."""
        h = self.committed_height_of(tx_id)
        if h is not None:
            return h
        event = self.waiters.get(tx_id)
        if event is None:
            event = self.waiters[tx_id] = trio.Event()
        with trio.move_on_after(timeout_s):
            await event.wait()
        return self.committed_height_of(tx_id)

    async def _tx_ingest(self) -> None:
        async for peer, payload in self.txs_rx:
            try:
                items = as_list(decode(payload, 2 * GOSSIP_MAX_BYTES), "tx batch", MAX_TX_BATCH)
            except DecodeError:
                self._drop("malformed_tx_batch")
                self.transport.penalize(peer, "malformed_tx_batch")
                continue
            tip, now = self.ledger.head, trio.current_time()
            for i, raw in enumerate(items):
                try:
                    tx = Transaction.decode(as_bytes(raw, "tx", max_size=8192))
                except DecodeError:
                    self._drop("malformed_tx")
                    self.transport.penalize(peer, "malformed_tx")
                    continue
                self.submit(tx, gossip=False, state=tip, now=now)
                if i % ADMIT_CHUNK == ADMIT_CHUNK - 1:
                    await trio.sleep(0)
                    tip, now = self.ledger.head, trio.current_time()

    def _heartbeat_watch(self, now: float) -> None:
        """Make an overdue heartbeat count as pending work for the replica.

        PBFT only changes view when work is pending; an idle chain whose primary died
        would otherwise stop producing heartbeat blocks. When no block has committed for
        twice the heartbeat, the node tells the replica it expects a block (a synthetic
        pending id no block can contain); the replica's censorship timer then replaces a
        primary that stays silent. The id is withdrawn at the next commit.
        """
        if self.replica is None:
            return
        overdue = now >= self._heartbeat_overdue_at()
        if overdue and self._heartbeat_id is None:
            self._heartbeat_id = b"heartbeat-due:" + self.ledger.height.to_bytes(8, "big")
            self._step(TxsPending((self._heartbeat_id,)))
        elif not overdue and self._heartbeat_id is not None:
            self._step(TxsDropped((self._heartbeat_id,)))
            self._heartbeat_id = None

    def _recheck_stale(self, now: float) -> None:
        """Gossip the oldest pending transactions again (the mempool itself drops those
        that can no longer commit, at every commit: Mempool.committed)."""
        self._last_recheck = now
        old: list[bytes] = []
        for tx_id, t0 in list(itertools.islice(self.submitted_at.items(), RECHECK_MAX)):
            if now - t0 < RECHECK_AGE_S:
                break
            if tx_id in self.mempool:
                old.append(tx_id)
            else:  # refused or expired earlier: forget it
                del self.submitted_at[tx_id]
                self.client_submitted.pop(tx_id, None)
        if old:
            # The mempool re-checks at every commit (Mempool.committed): nothing it holds
            # is doomed, so only the resend below is left to do here.
            gone: list[bytes] = []
            # Gossip is sent once, to the peers connected at that moment: a peer that was
            # down or cut off (the primary, say) never got these, and our replica would
            # blame each primary in turn for leaving them out. Offer the survivors
            # again; peers that have them answer "duplicate" at the cost of a decode.
            dead = set(gone)
            for tx_id in old:
                if tx_id not in dead and now - self.submitted_at.get(tx_id, now) >= RESEND_AGE_S:
                    tx = self.mempool.get(tx_id)
                    if tx is not None:
                        self.gossip_buf.append(tx.encoded)

    def _report_dropped(self, tx_ids: list[bytes]) -> None:
        """Tell the replica (by the gossip task's next flush) that ``tx_ids`` left the
        mempool without committing."""
        if tx_ids:
            self.dropped_pending.extend(tx_ids)
            self._gossip_due.set()

    async def _gossip(self) -> None:
        while True:
            if not (self.new_pending or self.gossip_buf or self.dropped_pending):
                # Nothing to send: sleep until something is, or the next stale re-check.
                self._gossip_due = trio.Event()
                with trio.move_on_at(self._last_recheck + RECHECK_S):
                    await self._gossip_due.wait()
            await trio.sleep(GOSSIP_FLUSH_S)  # a burst of admissions shares one batch
            # The gauge is refreshed here and at commits, not per admitted transaction.
            self.metrics.mempool.set(len(self.mempool))
            if self.new_pending and self.replica is not None and self.is_validator:
                # The driver keeps only those still in the mempool when it steps the event
                # (Node._step_queued), the one place that can know.
                ids = tuple(self.new_pending)
                self.new_pending = []
                await self.events_tx.send(TxsPending(ids))
            else:
                self.new_pending.clear()
            if trio.current_time() - self._last_recheck >= RECHECK_S:
                self._recheck_stale(trio.current_time())
            if self.dropped_pending:
                # Otherwise the replica's censorship timer blames every primary in turn,
                # forever, for a transaction no block can contain (e.g. a second
                # attestation of an already attested document).
                gone = tuple(self.dropped_pending)  # re-admitted ones: see _step_queued
                self.dropped_pending = []
                if self.replica is not None and self.is_validator:
                    await self.events_tx.send(TxsDropped(gone))
            while self.gossip_buf:
                buf = self.gossip_buf
                n = size = 0
                while n < len(buf) and n < MAX_TX_BATCH and size < GOSSIP_MAX_BYTES:
                    size += len(buf[n])
                    n += 1
                batch, self.gossip_buf = buf[:n], buf[n:]
                self.transport.broadcast(TXS, encode(batch))

    # ------------------------------------------------------------------ consensus driver

    def _consensus_config(self) -> Config:
        p = self.ledger.head.chain.params
        genesis_id = self.ledger.store.get_block_id(0)
        assert genesis_id is not None
        return Config(
            chain_id=self.chain_id,
            genesis_block_id=genesis_id,
            window=p.pipeline_window,
            checkpoint_interval=p.checkpoint_interval,
            view_timeout_ms=p.view_timeout_ms,
            censor_timeout_ms=max(4 * p.view_timeout_ms, 2 * p.heartbeat_ms),
        )

    def _start_replica(self) -> None:
        assert self.cdb is not None
        if self.key.public_key not in self.validator_keys():
            raise SystemExit(
                f"{self.config.path}: this node's key "
                f"{self.key.public_key.hex()[:16]}... is not a validator at height "
                f'{self.ledger.height + 1}; run it with role = "observer"'
            )
        head = self.ledger.head
        self.replica = Replica(
            self._consensus_config(),
            self.app,
            self.crypto,
            committed_height=head.height,
            committed_block_id=head.block_id,
            record=self.cdb.load_record(),
            blocks=self.cdb.payloads(),
        )
        self._step(Start())
        if head.height > 0:
            # After a restart the replica learns the head's state root here (it was
            # applied in an earlier life): a checkpoint due at the head gets signed.
            self._step(Applied(head.height, head.state_root))
        ids = tuple(self.mempool.tx_ids())
        if ids:
            self._step(TxsPending(ids))
        log.info("replica started", height=head.height, view=self.replica.view)

    def _step(self, first: Event) -> None:
        assert self.replica is not None
        queue: deque[Event] = deque([first])
        while queue:
            event = queue.popleft()
            view_before = self.replica.view
            stats = self.replica.stats
            bad_before = stats.get("bad_signature", 0)
            censor_before = stats.get("censorship_timeouts", 0)
            for action in self.replica.step(event):
                follow = self._execute(action)
                if follow is not None:
                    queue.append(follow)
            self._release()
            if (
                stats.get("bad_signature", 0) != bad_before
                and type(event) is MessageReceived
                and event.peer is not None
            ):
                # Honest peers send and forward only signatures they checked.
                self.transport.penalize(event.peer, "bad_signature")
            if stats.get("censorship_timeouts", 0) != censor_before:
                self._log_censorship()
            if self.replica.view != view_before:
                self.status.view_changes += 1
                self.metrics.view_changes.inc()
                self.metrics.view.set(self.replica.view)
                log.warning("view change", view=self.replica.view, height=self.ledger.height)

    def _release(self) -> None:
        """Make the coalesced ``Persist``/``PersistBlock`` writes durable (one synced
        write), then send the messages that waited for them, in order.

        The replica's rule is "durable before the next action"; executing it literally
        cost an fsync per action (a pre-prepare's payload and the prepare vote that
        follows it were two). Deferring the writes to the end of the step that made
        them and holding back its messages and commits until then keeps the rule for
        everything that leaves the process (consensus/api.py rule 1). Not across a
        burst of events: a vote would then wait for the validation of every block
        behind it in the burst. If the write fails nothing is sent."""
        record, payloads, outbox = self._take_held()
        if record is not None or payloads:
            assert self.cdb is not None
            t0 = time.perf_counter()
            self.cdb.save(record, payloads)
            self._slow("consensus record write", t0)
        for action in outbox:
            if isinstance(action, Send):
                self.transport.send(action.to, CONSENSUS, action.message.encoded)
            else:
                self.transport.broadcast(CONSENSUS, action.message.encoded)

    def _slow(self, what: str, t0: float, **fields: int) -> None:
        """Log a synced write that held the event loop for long: on a shared or failing
        disk these are the commit stalls an operator otherwise sees only as latency."""
        ms = (time.perf_counter() - t0) * 1000
        if ms >= SLOW_WRITE_MS:
            log.warning("slow synced write", what=what, ms=round(ms), **fields)

    def _log_censorship(self) -> None:
        """Say which transactions made the replica accuse the primary of censoring them,
        and where this node stands with them: a view change an operator can explain."""
        assert self.replica is not None
        pending = list(itertools.islice(self.replica.pending_txs, 3))
        now = trio.current_time()
        log.warning(
            "censorship timeout: pending transactions not proposed in time",
            view=self.replica.view,
            height=self.ledger.height,
            pending=len(self.replica.pending_txs),
            oldest=[
                {
                    "tx": tx_id[:8].hex(),
                    "in_mempool": tx_id in self.mempool,
                    "age_s": round(now - self.submitted_at[tx_id], 2)
                    if tx_id in self.submitted_at
                    else None,
                }
                for tx_id in pending
            ],
        )

    def _take_held(
        self,
    ) -> tuple[SigningRecord | None, list[tuple[int, bytes, bytes]], list[Send | Broadcast]]:
        """The coalesced writes and held messages, cleared."""
        held = self._durable_record, self._durable_payloads, self._outbox
        self._durable_record, self._durable_payloads, self._outbox = None, [], []
        return held

    def _execute(self, action: Any) -> Event | None:
        now = trio.current_time()
        if isinstance(action, Persist):
            self._durable_record = action.record  # the whole record: the newest wins
        elif isinstance(action, PersistBlock):
            self._durable_payloads.append((action.height, action.block_id, action.payload))
        elif isinstance(action, Send | Broadcast):
            self._outbox.append(action)
        elif isinstance(action, SetTimer):
            self.timers[(int(action.kind), action.key)] = now + action.delay_ms / 1000
        elif isinstance(action, CancelTimer):
            self.timers.pop((int(action.kind), action.key), None)
        elif isinstance(action, RequestProposal):
            self.proposals[action.height] = Pending(
                action.height, action.view, action.parent_block_id, now
            )
        elif isinstance(action, CommitBlock):
            self._release()
            return self._commit(action.height, action.payload, action.certificate)
        elif isinstance(action, RequestBlocks):
            assert self._nursery is not None
            self._nursery.start_soon(self._fetch, action)
        elif isinstance(action, ReportEvidence):
            self._release()
            assert self.cdb is not None
            self.cdb.save_evidence(action.evidence.encode())  # type: ignore[attr-defined]
            self.status.evidence += 1
            self.metrics.evidence.inc()
            log.warning("equivocation evidence recorded", peer=action.evidence.sender)  # type: ignore[attr-defined]
        return None

    def _commit(self, height: int, payload: bytes, cert: CommitCertificate) -> Event | None:
        block = self.app.block_of(payload)
        if block is None or block.height != height:
            # A certified payload we cannot parse means a Byzantine quorum or a bug.
            raise RuntimeError(f"certified block at height {height} does not decode")
        if height <= self.ledger.height:
            return None
        t0 = time.perf_counter()
        ex = self.ledger.commit(block, cert, verified=self.mempool.verified)
        self._slow("block commit", t0, height=height, txs=len(ex.block.tx_ids))
        self._after_commit(ex.block, height)
        if self.cdb is not None:
            self.cdb.prune_payloads(height)
        return Applied(height, ex.state.state_root)

    def _after_commit(self, block: Block, height: int) -> None:
        now = trio.current_time()
        tx_ids = block.tx_ids
        dropped = self.mempool.committed(block, self.ledger.head)
        for tx_id in tx_ids:
            self.submitted_at.pop(tx_id, None)
            t0 = self.client_submitted.pop(tx_id, None)
            if t0 is not None:
                self.metrics.commit_latency.observe(now - t0)
            ev = self.waiters.pop(tx_id, None)
            if ev is not None:
                ev.set()
        self._report_dropped(dropped)
        self.metrics.block_interval.observe(now - self.last_commit)
        self.last_commit = now
        self.status.last_commit_wall = time.time()
        self.metrics.height.set(height)
        self.metrics.committed_txs.inc(len(tx_ids))
        self.metrics.mempool.set(len(self.mempool))
        for h in [h for h in self.proposals if h <= height]:
            del self.proposals[h]
        if tx_ids:
            log.debug("committed", height=height, txs=len(tx_ids))
        if height % 50 == 0 or tx_ids:
            allowed = self.allowed_keys()
            self.transport.set_allowlist(allowed)

    async def _fetch(self, req: RequestBlocks) -> None:
        pacer = self.fetch_pacer
        if pacer.busy:
            # The replica asks another peer when its own timer expires; the answer still
            # in flight will be accepted whenever it comes, and the replica asks again
            # for whatever it still misses.
            self.metrics.dropped.labels("fetch_while_fetching").inc()
            return
        pacer.busy = True
        try:
            certified = await self._fetch_range(req.peer, req.from_height, req.to_height)
        finally:
            pacer.busy = False
        if certified is not None:
            await self.events_tx.send(BlocksReceived(req.peer, certified))

    async def _fetch_range(
        self, peer: bytes, lo: int, hi: int
    ) -> tuple[CertifiedPayload, ...] | None:
        """Certified blocks from ``lo`` (as many as the pacer allows), or None on failure."""
        pacer = self.fetch_pacer
        lo, hi = pacer.range(lo, hi)
        t0 = trio.current_time()
        try:
            data = await self.transport.request(peer, sync.blocks_request(lo, hi), pacer.timeout_s)
            blocks = sync.parse_blocks(data)
            certified = tuple(CertifiedPayload(b, CommitCertificate.decode(c)) for b, c in blocks)
        except TransportTimeout as exc:
            pacer.timed_out()
            log.info(
                "block fetch failed",
                peer=peer,
                error=str(exc)[:120],
                next_span=pacer.span,
                next_timeout_s=pacer.timeout_s,
            )
            return None
        except (TransportError, DecodeError) as exc:
            log.info("block fetch failed", peer=peer, error=str(exc)[:120])
            return None
        pacer.answered(trio.current_time() - t0)
        return certified

    def _next_deadline(self) -> float:
        deadline = min(self.timers.values(), default=math.inf)
        if self.proposals:
            deadline = min(deadline, self._build_deadline())
        if self.replica is not None and self._heartbeat_id is None:
            deadline = min(deadline, self._heartbeat_overdue_at())
        return deadline

    def _heartbeat_overdue_at(self) -> float:
        """When ``_heartbeat_watch`` will call the missing heartbeat block overdue."""
        return self.last_commit + 2 * self.ledger.head.chain.params.heartbeat_ms / 1000

    def _available(self) -> int:
        """Mempool transactions not already in a pending (proposed, uncommitted) block."""
        in_flight = sum(ex.block.header.tx_count for ex in self.ledger.pending.values())
        return max(0, len(self.mempool) - in_flight)

    def _build_deadline(self) -> float:
        params = self.ledger.head.chain.params
        available = self._available()
        if available >= params.max_block_txs:
            return 0.0
        if available > 0:
            # The linger doubles for every block already in flight: each height costs
            # every node CPU whatever it carries (votes, signatures, synced writes, the
            # top of the state tree, a dozen libp2p messages), so a loaded pipeline
            # should fill bigger blocks rather than cut one per linger (docs/
            # ARCHITECTURE.md has the figures). An idle chain answers within one.
            oldest = min(p.since for p in self.proposals.values())
            linger = self.config.linger_ms / 1000 * 2 ** min(len(self.ledger.pending), 4)
            return max(oldest, self.last_built) + linger
        # An empty heartbeat block at most every heartbeat_ms, counted from the last
        # commit or the last block we built (pipelined heights must not all fire at once).
        return max(self.last_commit, self.last_built) + params.heartbeat_ms / 1000

    def _fire_timers(self, now: float) -> None:
        if self.replica is None:
            return
        due = sorted((t, k) for k, t in self.timers.items() if t <= now)
        for _t, (kind, key) in due:
            self.timers.pop((kind, key), None)
            from consensus.api import TimerKind

            self._step(TimerFired(TimerKind(kind), key))

    def _maybe_build(self, now: float) -> None:
        if not self.proposals or self._build_deadline() > now:
            return
        height = min(self.proposals)
        req = self.proposals.pop(height)
        params = self.ledger.head.chain.params
        in_flight = {tid for ex in self.ledger.pending.values() for tid in ex.block.tx_ids}
        txs = self.mempool.take(
            params.max_block_txs, params.max_block_bytes // 2, exclude=in_flight
        )
        parent = self.ledger.state_of_block(req.parent_block_id)
        if parent is None or parent.height + 1 != req.height:
            log.info("proposal parent unknown; skipping", height=req.height)
            return
        time_ms = max(int(time.time() * 1000), parent.time_ms + 1)
        try:
            ex = self.ledger.build(
                txs,
                time_ms=time_ms,
                proposer=self.key.public_key,
                verified=self.mempool.verified,
                parent_block_id=req.parent_block_id,
            )
        except LedgerError as exc:
            log.error("building a block failed", height=req.height, error=str(exc))
            return
        if ex.rejected:
            refused = [tx.tx_id for tx, _ in ex.rejected]
            self.mempool.remove(refused, committed=False)
            self._report_dropped(refused)
        self.app.remember(ex.block)
        self.last_built = now
        self._step(ProposalReady(req.height, req.view, ex.block.encode()))

    def _step_queued(self, event: Any) -> None:
        """Step an event that waited in the queue, checking the transaction events
        against the mempool now, not when they were queued: the votes queued before them
        may have committed a block holding one of them meanwhile (or a dropped one may
        have been admitted again). Checked at queueing time, as it once was, that id
        stayed "pending" in the replica for good (its block's commit had already cleared
        it) and the censorship timer accused every primary in turn (docs/RELIABILITY.md
        3.5, item 6). Admitted and refused within one gossip flush = gone, too."""
        if type(event) is TxsPending:
            ids = tuple(t for t in event.tx_ids if t in self.mempool)
            if not ids:
                return
            event = TxsPending(ids)
        elif type(event) is TxsDropped:  # and one dropped may have been admitted again
            ids = tuple(t for t in event.tx_ids if t not in self.mempool)
            if not ids:
                return
            event = TxsDropped(ids)
        self._step(event)

    async def _driver(self) -> None:
        while True:
            try:
                await self._drive_once()
            except (StoreError, plyvel.Error) as exc:
                if not _disk_failure(exc):
                    raise
                self._take_held()  # what waited for a write that did not happen never goes out
                voting = self.replica is not None
                await self._recover_store(exc)
                if voting:  # the follower hands over to a fresh replica once caught up
                    assert self._nursery is not None
                    self._nursery.start_soon(self._follow)

    async def _drive_once(self) -> None:
        """One round of the driver loop (see ``_driver``)."""
        # Re-evaluate at least every DRIVER_TICK_S: transactions arriving through the
        # RPC or gossip tasks move the block-cutting deadline without an event.
        deadline = min(self._next_deadline(), trio.current_time() + DRIVER_TICK_S)
        event = None
        if deadline > trio.current_time():
            with trio.move_on_at(deadline):
                event = await self.events_rx.receive()
        if event is START_REPLICA:
            self._start_replica()
        elif event is not None and self.replica is not None:
            self._step_queued(event)
            # Drain what is already queued before timers and building, so a burst of
            # votes is handled before we decide anything on stale information.
            for _ in range(256):
                try:
                    more = self.events_rx.receive_nowait()
                except trio.WouldBlock:
                    break
                if more is START_REPLICA:
                    self._start_replica()
                elif self.replica is not None:
                    self._step_queued(more)
        now = trio.current_time()
        self._fire_timers(now)
        self._heartbeat_watch(now)
        self._maybe_build(now)

    # ------------------------------------------------------------------ follower

    async def _sync_from_peers(self) -> bool:
        """Fetch and commit blocks from the best peer; True if anything was committed.

        Sets ``self.best_peer_height`` to the highest height a peer reported."""
        best: tuple[int, bytes] | None = None
        for peer in list(self.transport.connected_peers()):
            try:
                h, _ = sync.parse_status(
                    await self.transport.request(peer, sync.status_request(), 2.0)
                )
            except (TransportError, DecodeError):
                continue
            if h > self.ledger.height and (best is None or h > best[0]):
                best = (h, peer)
        self.best_peer_height = best[0] if best is not None else self.ledger.height
        if best is None:
            return False
        progressed = False
        while self.ledger.height < best[0]:
            certified = await self._fetch_range(best[1], self.ledger.height + 1, best[0])
            if not certified:
                return progressed
            for item in certified:
                if self.replica is not None:
                    return progressed  # the replica took over
                try:
                    block = Block.decode(item.payload)
                    cert = item.certificate
                    if block.height != self.ledger.height + 1:
                        return progressed
                    ex = self.ledger.commit(block, cert, verified=self.mempool.verified)
                except LedgerError as exc:
                    if _disk_failure(exc):
                        raise
                    log.warning("peer sent an invalid block", peer=best[1], error=str(exc))
                    return progressed
                self._after_commit(ex.block, block.height)
                progressed = True
            await trio.sleep(0)
        return progressed

    async def _follow(self) -> None:
        """Observers: follow the chain forever. Validators: catch up, then vote.

        A validator starts its replica once no peer is more than a pipeline window ahead
        (or after a second of finding no peer at all); from then on the replica fetches
        what it misses itself (``RequestBlocks``).
        """
        started = trio.current_time()
        while True:
            try:
                progressed = await self._sync_from_peers()
            except (StoreError, plyvel.Error) as exc:
                if not _disk_failure(exc):
                    raise
                await self._recover_store(exc)
                continue
            if self.is_validator and self.replica is None:
                window = self.ledger.head.chain.params.pipeline_window
                caught_up = self.best_peer_height <= self.ledger.height + window
                alone = not self.transport.connected_peers()
                if (
                    (caught_up and not progressed and not alone)
                    or trio.current_time() - started > 1.0
                    and (caught_up or alone)
                ):
                    await self.events_tx.send(START_REPLICA)
                    return
            await trio.sleep(0.05 if progressed else 0.2)

    # ------------------------------------------------------------------ disk failures

    async def _recover_store(self, exc: BaseException) -> None:
        """A disk write failed (full, or an I/O error): stop committing and voting, wait
        until the disk takes writes again, reopen both databases, then resume.

        What was not written is as if the process had crashed just before the write: one
        LevelDB batch per block, and the signing record is persisted before any message
        it covers is sent. So recovery is a restart in place: drop the replica and every
        timer, reopen the databases (LevelDB may refuse all writes after a failed
        background write, and a record appended after a torn one could be lost on a later
        recovery), and let the follower catch up from peers and restart the replica from
        its durable record. Returns once resumed; RPC keeps answering meanwhile, and
        ``status.store_error`` / ``dvp_store_ok`` say why nothing commits.
        """
        self.status.store_error = leveldb_reason(exc)[:300]
        self.metrics.store_failures.inc()
        self.metrics.store_ok.set(0)
        log.error(
            "disk write failed: stopped committing and voting until the disk accepts writes again",
            error=self.status.store_error,
            data_dir=str(self.config.data_dir),
            height=self.ledger.height,
        )
        self.replica = None  # deliver() drops consensus messages meanwhile
        self.timers.clear()
        self.proposals.clear()
        self._heartbeat_id = None
        while True:  # queued events belong to the replica we dropped
            try:
                self.events_rx.receive_nowait()
            except trio.WouldBlock:
                break
        last_report = trio.current_time()
        while True:
            await trio.sleep(STORE_RETRY_S)
            try:
                vfs = os.statvfs(self.config.data_dir)
                free = vfs.f_bavail * vfs.f_frsize
                if free < STORE_MIN_FREE_BYTES:
                    raise OSError(
                        f"{free} bytes free in {self.config.data_dir}, waiting for "
                        f"{STORE_MIN_FREE_BYTES}"
                    )
                self._reopen_stores()
                break
            except (OSError, LedgerError, plyvel.Error) as retry_exc:
                if trio.current_time() - last_report >= 10.0:
                    last_report = trio.current_time()
                    log.error("disk still refuses writes; not committing", error=str(retry_exc))
        self.status.store_error = None
        self.metrics.store_ok.set(1)
        log.warning(
            "disk accepts writes again: databases reopened; catching up, then voting",
            height=self.ledger.height,
        )

    def _reopen_stores(self) -> None:
        for db in (self.ledger, self.cdb):
            if db is not None:
                try:
                    db.close()
                except Exception:  # closing a database in an error state: reopen decides
                    pass
        ledger = Ledger.open(self.config.data_dir / "ledger", self.genesis, create=False)
        try:
            cdb = ConsensusDB(self.config.data_dir / "consensus") if self.is_validator else None
        except BaseException:
            ledger.close()
            raise
        self.ledger, self.cdb = ledger, cdb
        self.app.ledger = ledger
        self.prover = Prover(ledger)

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        from node.methods import serve_rpc

        self.last_commit = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                runner = getattr(self.transport, "run", None)
                if runner is not None:
                    await nursery.start(runner)
                ports = await serve_rpc(self, nursery)
                self.rpc_ports = ports
                nursery.start_soon(self._driver)
                nursery.start_soon(self._tx_ingest)
                nursery.start_soon(self._gossip)
                nursery.start_soon(self._follow)
                nursery.start_soon(self._watch_peers)
                self.ready = True
                log.info(
                    "node started",
                    role=self.config.role,
                    height=self.ledger.height,
                    rpc=ports.get("rpc"),
                    key=self.key.public_key,
                )
                task_status.started()
        finally:
            self.close()

    async def _watch_peers(self) -> None:
        while True:
            self.metrics.peers.set(len(self.transport.connected_peers()))
            await trio.sleep(1.0)

    def close(self) -> None:
        self.ledger.close()
        if self.cdb is not None:
            self.cdb.close()


def _disk_failure(exc: BaseException) -> bool:
    """A LevelDB write or read the disk refused (not a rule or a bad block)."""
    return isinstance(exc, plyvel.Error) or isinstance(exc.__cause__, plyvel.Error)


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
