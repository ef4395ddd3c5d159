"""The node core: every decision of a node, as a pure state machine around the replica.

``NodeCore.step(event, now, wall_ms) -> list[Effect]`` (etcd's RawNode for PBFT). It
owns the mempool, the block builder (``node.builder``), the PBFT ``Replica`` (started
when catch-up is done), commit bookkeeping, catch-up decisions and gossip batching.
It does no I/O of its own except synchronous calls into the ``Ledger`` and
``ConsensusDB`` it is given (like raft reading its Storage), never reads a clock and
never picks randomness: ``now`` is the caller's monotonic time in seconds (timers,
lingers, ages), ``wall_ms`` its wall clock in ms (block timestamps, ``status``). The
shell (``node.node``) and the whole-node simulator drive the same core.

The events it takes and the effects it returns, and their contract, are in
``node.core_events`` (re-exported here); catch-up decisions (polling peers' heights,
fetching blocks, when to start voting) in ``node.core_catchup``.

Pending transactions are tracked once: the mempool is the truth. The replica is told
what became pending at each gossip flush (ids still in the mempool then) and what left
without committing at the moment it leaves (``Mempool.committed``, builder refusals).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consensus import api as ca
from consensus.messages import decode_message
from consensus.record import SigningRecord
from consensus.replica import Replica
from consensus.signer import Ed25519Crypto
from ledger.chain import Ledger
from ledger.codec import as_list, decode
from ledger.errors import DecodeError
from ledger.types import Block
from node.app import LedgerApp
from node.builder import BlockBuilder
from node.consensus_db import ConsensusDB
from node.core_catchup import FOLLOW_AGAIN_S, FOLLOW_IDLE_S, STANDALONE_S, CatchUpMixin, Follow
from node.core_events import (
    Answer,
    AskHeights,
    BlocksFetched,
    Broadcast,
    ClientTxs,
    Committed,
    CoreConfig,
    CoreEvent,
    CoreStatus,
    Effect,
    Fetch,
    Log,
    Metric,
    PeerFrame,
    PeerHeights,
    Penalise,
    Send,
    SetAllowlist,
    StoreFailed,
    StoreReopened,
    Tick,
)
from node.core_gossip import (
    ADMIT_CHUNK,
    BURST_MAX_S,
    GOSSIP_FLUSH_S,
    GOSSIP_MAX_BYTES,
    MAX_TX_BATCH,
    RESEND_AGE_S,
    RESEND_MAX,
    RESEND_S,
    GossipMixin,
)
from node.mempool import Mempool
from node.transport import CONSENSUS, TXS

#: A synced write slower than this is logged (on a failing disk: the commit stalls).
SLOW_WRITE_MS = 150

# The names the shell, the tests and the simulator import from ``node.core``.
__all__ = [
    "ADMIT_CHUNK",
    "BURST_MAX_S",
    "FOLLOW_AGAIN_S",
    "FOLLOW_IDLE_S",
    "GOSSIP_FLUSH_S",
    "GOSSIP_MAX_BYTES",
    "MAX_TX_BATCH",
    "RESEND_AGE_S",
    "RESEND_MAX",
    "RESEND_S",
    "SLOW_WRITE_MS",
    "STANDALONE_S",
    "Answer",
    "AskHeights",
    "BlocksFetched",
    "Broadcast",
    "ClientTxs",
    "Committed",
    "CoreConfig",
    "CoreEvent",
    "CoreStatus",
    "Effect",
    "Fetch",
    "Log",
    "Metric",
    "NodeCore",
    "PeerFrame",
    "PeerHeights",
    "Penalise",
    "Send",
    "SetAllowlist",
    "StoreFailed",
    "StoreReopened",
    "Tick",
]


def _never(exc: BaseException) -> str | None:
    return None


@dataclass
class _Held:
    """Writes coalesced within one replica step and the messages waiting for them."""

    record: SigningRecord | None = None
    payloads: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    outbox: list[ca.Send | ca.Broadcast] = field(default_factory=list)


class NodeCore(CatchUpMixin, GossipMixin):
    """One node's decisions (see the module docstring for the contract).

    ``disk_failure(exc)`` says whether an exception from the ledger or consensus
    database is a refused disk write (and why); ``perf`` is a clock used only to log
    slow synced writes (None: never logged).
    """

    def __init__(
        self,
        config: CoreConfig,
        ledger: Ledger,
        cdb: ConsensusDB | None,
        mempool: Mempool,
        crypto: Ed25519Crypto,
        *,
        disk_failure: Callable[[BaseException], str | None] = _never,
        perf: Callable[[], float] | None = None,
    ) -> None:
        self.config = config
        self.ledger, self.cdb, self.mempool, self.crypto = ledger, cdb, mempool, crypto
        self.chain_id = mempool.chain_id
        self.app = LedgerApp(
            ledger, mempool.verified, known_tx=mempool.get, on_valid=mempool.mark_verified
        )
        self.builder = BlockBuilder(config.linger_ms)
        self.replica: Replica | None = None
        self.status = CoreStatus(evidence=len(cdb.evidence()) if cdb is not None else 0)
        self._disk_failure, self._perf = disk_failure, perf
        self.timers: dict[tuple[ca.TimerKind, int], float] = {}
        self.last_commit = -math.inf  # set on the first step
        self.follow = Follow()
        self._held = _Held()
        self._out: list[Effect] = []
        self._now, self._wall_ms = 0.0, 0
        # Admitted since the last flush (the replica is told at the flush), their
        # arrival times (re-gossip of stragglers), and the gossip buffer.
        self._new_pending: list[bytes] = []
        self.arrived: OrderedDict[bytes, float] = OrderedDict()
        self._gossip: list[bytes] = []
        self._flush_at = math.inf
        self._burst_until = -math.inf  # a client batch is being admitted until then
        self._resend_at = -math.inf
        self._ingest: deque[tuple[bytes, list[Any], int]] = deque()

    # ------------------------------------------------------------------ the entry points

    def step(self, event: CoreEvent, now: float, wall_ms: int) -> list[Effect]:
        """Handle ``event`` at ``now``; the effects to execute, in order."""
        self._now, self._wall_ms = now, wall_ms
        out: list[Effect] = []
        self._out = out
        if self.last_commit == -math.inf:
            self.last_commit = now
            self.follow.started_at = now
        try:
            kind = type(event)
            if kind is PeerFrame:
                self._on_frame(event)  # type: ignore[arg-type]
            elif kind is Tick:
                self._on_tick()
            elif kind is ClientTxs:
                self._on_client_txs(event)  # type: ignore[arg-type]
            elif kind is BlocksFetched:
                self._on_blocks(event)  # type: ignore[arg-type]
            elif kind is PeerHeights:
                self._on_heights(event)  # type: ignore[arg-type]
            elif kind is StoreReopened:
                self._on_reopened(event)  # type: ignore[arg-type]
            else:
                raise TypeError(f"not a node core event: {event!r}")
        except Exception as exc:
            reason = self._disk_failure(exc)
            if reason is None:
                raise
            self._store_failed(reason)
        return out

    def next_deadline(self) -> float:
        """The monotonic time at which a ``Tick`` is due (``-inf``: at once)."""
        if self._ingest:
            return -math.inf
        d = min(self._flush_due(), self.follow.ask_at)
        if self.timers:
            d = min(d, min(self.timers.values()))
        if self.builder.requests:
            d = min(d, self._build_deadline())
        if len(self.mempool):
            d = min(d, self._resend_at)
        return d

    def _build_deadline(self) -> float:
        """The builder's deadline, except that a block that is not full waits while a
        client's batch is still being admitted (``ClientTxs.more``): cut between two of
        its chunks, one batch made two half blocks -- ~30 % more heights at the same
        load, and every height costs each node CPU (docs/PERFORMANCE.md). Bounded by
        ``BURST_MAX_S`` in case the rest of the batch never comes (a cancelled call)."""
        d = self.builder.deadline(self.ledger, self.mempool, self.last_commit)
        if d > 0.0 and self._burst_until > self._now:
            return max(d, self._burst_until)
        return d

    # ------------------------------------------------------------------ queries

    def client_limit(self) -> int:
        """Pending transactions from which clients' new ones are refused (busy):
        ``[mempool] client_max_txs``, by default two pipelines' worth (2 x
        pipeline_window x max_block_txs: enough to keep every block full), never above
        the hard bound ``max_txs``."""
        if self.config.client_max_txs is not None:
            return min(self.config.client_max_txs, self.config.mempool_max_txs)
        p = self.ledger.head.chain.params
        return min(2 * p.pipeline_window * p.max_block_txs, self.config.mempool_max_txs)

    def allowed_keys(self) -> set[bytes]:
        """Who may connect: validators' node keys (at the tip and next heights) and every
        member's key (members run observers under their member key)."""
        tip = self.ledger.tip
        keys = {m.key for m in tip.members.values()}
        for h in (tip.height + 1, tip.height + 1 + tip.chain.params.validator_change_delay + 8):
            keys |= set(tip.validators_at(h).keys)
        return keys

    def consensus_config(self) -> ca.Config:
        p = self.ledger.head.chain.params
        genesis_id = self.ledger.store.get_block_id(0)
        assert genesis_id is not None
        return ca.Config(
            chain_id=self.chain_id,
            genesis_block_id=genesis_id,
            window=p.pipeline_window,
            checkpoint_interval=p.checkpoint_interval,
            view_timeout_ms=p.view_timeout_ms,
            censor_timeout_ms=max(4 * p.view_timeout_ms, 2 * p.heartbeat_ms),
            heartbeat_ms=p.heartbeat_ms,
        )

    # ------------------------------------------------------------------ inputs

    def _on_frame(self, ev: PeerFrame) -> None:
        if ev.channel == CONSENSUS:
            if self.replica is None:
                return  # not voting (yet): the replica catches up by itself later
            try:
                msg = decode_message(ev.payload)
            except DecodeError:
                self._out.append(Penalise(ev.peer, "malformed_consensus"))
                return
            self._step_replica(ca.MessageReceived(msg, peer=ev.peer))
        elif ev.channel == TXS:
            try:
                items = as_list(decode(ev.payload, 2 * GOSSIP_MAX_BYTES), "tx batch", MAX_TX_BATCH)
            except DecodeError:
                self._out.append(Penalise(ev.peer, "malformed_tx_batch"))
                return
            self._ingest.append((ev.peer, items, 0))
            if len(self._ingest) == 1:
                self._admit_gossip()
        else:
            self._out.append(Penalise(ev.peer, "unknown_channel"))

    def _on_tick(self) -> None:
        now = self._now
        if self._ingest:
            self._admit_gossip()
        if self.replica is not None and self.timers:
            due = sorted((t, k) for k, t in self.timers.items() if t <= now)
            for _t, key in due:
                if self.timers.pop(key, None) is not None and self.replica is not None:
                    self._step_replica(ca.TimerFired(key[0], key[1]))
        if self._flush_due() <= now:
            self._flush()
        if self._resend_at <= now:
            self._resend_stale()
        if self.follow.ask_at <= now and self.status.store_error is None:
            self.follow.ask_at, self.follow.asking = math.inf, True
            self._out.append(AskHeights())
        if self.builder.requests and self.replica is not None:
            if self._build_deadline() <= now:
                self._build()

    # ------------------------------------------------------------------ the replica

    def _start_replica(self) -> None:
        assert self.cdb is not None
        head = self.ledger.head
        if self.crypto.public_key not in head.validators_at(head.height + 1).keys:
            raise SystemExit(
                f"{self.config.origin}: this node's key "
                f"{self.crypto.public_key.hex()[:16]}... is not a validator at height "
                f'{head.height + 1}; run it with role = "observer"'
            )
        self.replica = Replica(
            self.consensus_config(),
            self.app,
            self.crypto,
            committed_height=head.height,
            committed_block_id=head.block_id,
            record=self.cdb.load_record(),
            blocks=self.cdb.payloads(),
        )
        self.timers.clear()
        self._step_replica(ca.Start())
        if head.height > 0:
            # After a restart the replica learns the head's state root here (it was
            # applied in an earlier life): a checkpoint due at the head gets signed.
            self._step_replica(ca.Applied(head.height, head.state_root))
        self._new_pending = []
        ids = tuple(self.mempool.tx_ids())
        if ids:
            self._step_replica(ca.TxsPending(ids))
        self._log("info", "replica started", height=head.height, view=self.replica.view)

    def _step_replica(self, first: ca.Event) -> None:
        """Step the replica, execute its actions, then make the step's writes durable
        and release the messages that waited for them (``_release``)."""
        replica = self.replica
        assert replica is not None
        queue: deque[ca.Event] = deque([first])
        out, held, now = self._out, self._held, self._now
        while queue:
            event = queue.popleft()
            penalised = False
            for a in replica.step(event):
                kind = type(a)
                if kind is ca.Send or kind is ca.Broadcast:
                    held.outbox.append(a)  # type: ignore[arg-type]
                elif kind is ca.Persist:
                    held.record = a.record  # type: ignore[union-attr]  # newest wins
                elif kind is ca.SetTimer:
                    self.timers[(a.kind, a.key)] = now + a.delay_ms / 1000  # type: ignore[union-attr]
                elif kind is ca.CancelTimer:
                    self.timers.pop((a.kind, a.key), None)  # type: ignore[union-attr]
                elif kind is ca.PersistBlock:
                    held.payloads.append((a.height, a.block_id, a.payload))  # type: ignore[union-attr]
                elif kind is ca.CommitBlock:
                    self._release()
                    queue.extend(self._commit(a))  # type: ignore[arg-type]
                elif kind is ca.RequestProposal:
                    self.builder.request(a.height, a.view, a.parent_block_id, now)  # type: ignore[union-attr]
                elif kind is ca.RequestBlocks:
                    out.append(Fetch(a.peer, a.from_height, a.to_height))  # type: ignore[union-attr]
                elif kind is ca.ViewEntered:
                    self.status.view_changes += 1
                    out.append(Metric("view", a.view))  # type: ignore[union-attr]
                    self._log("warning", "view change", view=a.view, height=self.ledger.height)  # type: ignore[union-attr]
                elif kind is ca.PeerMisbehaved:
                    if not penalised:
                        out.append(Penalise(a.peer, a.reason))  # type: ignore[union-attr]
                        penalised = True
                elif kind is ca.CensorshipSuspected:
                    self._log_censorship(a)  # type: ignore[arg-type]
                elif kind is ca.ReportEvidence:
                    self._release()
                    assert self.cdb is not None
                    self.cdb.save_evidence(a.evidence.encode())  # type: ignore[union-attr]
                    self.status.evidence += 1
                    out.append(Metric("evidence", 1))
                    self._log("warning", "equivocation evidence recorded", peer=a.evidence.sender)  # type: ignore[union-attr]
            self._release()

    def _release(self) -> None:
        """Make the coalesced ``Persist``/``PersistBlock`` writes durable (one synced
        write), then append the messages that waited for them, in order.

        Executing the replica's rule literally cost an fsync per action (a pre-prepare's
        payload and the prepare vote after it were two); deferring the writes to the end
        of the step and holding back its messages and commits until then keeps the rule
        for everything that leaves the process. If the write fails nothing is sent."""
        held = self._held
        if held.record is not None or held.payloads:
            assert self.cdb is not None
            t0 = self._perf() if self._perf is not None else 0.0
            record, payloads = held.record, held.payloads
            held.record, held.payloads = None, []
            self.cdb.save(record, payloads)
            self._slow("consensus record write", t0)
        if held.outbox:
            outbox, held.outbox = held.outbox, []
            append = self._out.append
            for a in outbox:
                if type(a) is ca.Send:
                    append(Send(a.to, CONSENSUS, a.message.encoded))
                else:
                    append(Broadcast(CONSENSUS, a.message.encoded))

    def _build(self) -> None:
        req, ex, why = self.builder.build(
            self.ledger, self.mempool, self.crypto.public_key, self._now, self._wall_ms
        )
        if ex is None:
            self._log("info" if why.startswith("proposal") else "error", why, height=req.height)
            return
        if ex.rejected:
            refused = [tx.tx_id for tx, _ in ex.rejected]
            self.mempool.remove(refused, committed=False)
            self._step_replica(ca.TxsDropped(tuple(refused)))
        self.app.remember(ex.block)
        self._step_replica(ca.ProposalReady(req.height, req.view, ex.block.encode()))

    # ------------------------------------------------------------------ commits

    def _commit(self, action: ca.CommitBlock) -> list[ca.Event]:
        height = action.height
        block = self.app.block_of(action.payload)
        if block is None or block.height != height:
            # A certified payload we cannot parse means a Byzantine quorum or a bug.
            raise RuntimeError(f"certified block at height {height} does not decode")
        if height <= self.ledger.height:
            return []
        t0 = self._perf() if self._perf is not None else 0.0
        ex = self.ledger.commit(block, action.certificate, verified=self.mempool.verified)
        self._slow("block commit", t0, height=height, txs=len(ex.block.tx_ids))
        gone = self._after_commit(ex.block)
        if self.cdb is not None:
            self.cdb.prune_payloads(height)
        follow: list[ca.Event] = [ca.Applied(height, ex.state.state_root)]
        if gone:
            follow.append(ca.TxsDropped(tuple(gone)))
        return follow

    def _after_commit(self, block: Block) -> list[bytes]:
        """Bookkeeping after ``block`` committed; the ids that left the mempool without
        committing (the replica must stop counting them as pending)."""
        height, tx_ids = block.height, block.tx_ids
        gone = self.mempool.committed(block, self.ledger.head)
        arrived = self.arrived
        for tx_id in tx_ids:
            arrived.pop(tx_id, None)
        self.last_commit = self._now
        self.status.last_commit_unix_ms = self._wall_ms
        self.builder.committed(height)
        self._out.append(Committed(height, tx_ids, len(self.mempool)))
        if tx_ids:
            self._log("debug", "committed", height=height, txs=len(tx_ids))
        if height % 50 == 0 or tx_ids:
            self._out.append(SetAllowlist(self.allowed_keys()))
        return gone

    # ------------------------------------------------------------------ disk failures

    def _store_failed(self, reason: str) -> None:
        """A disk write failed: as if the process crashed just before it. Drop the
        replica, its timers, requests and whatever waited for the write; keep admitting
        and gossiping until the shell reopens the databases (``StoreReopened``)."""
        self.replica = None
        self.timers.clear()
        self.builder.clear()
        self._held = _Held()
        self.follow = Follow(ask_at=math.inf, started_at=self._now)
        self.status.store_error = reason[:300]
        self._out.append(StoreFailed(self.status.store_error))

    def _on_reopened(self, ev: StoreReopened) -> None:
        self.ledger, self.cdb = ev.ledger, ev.cdb
        self.app.ledger = ev.ledger
        self.status.store_error = None
        self.follow = Follow(ask_at=self._now, started_at=self._now)
        self._log(
            "warning",
            "disk accepts writes again: databases reopened; catching up, then voting",
            height=self.ledger.height,
        )

    # ------------------------------------------------------------------ logs

    def _log(self, level: str, message: str, **fields: Any) -> None:
        self._out.append(Log(level, message, fields))

    def _slow(self, what: str, t0: float, **fields: int) -> None:
        """Log a synced write that held the node for long: on a shared or failing disk
        these are the commit stalls an operator otherwise sees only as latency."""
        if self._perf is None:
            return
        ms = (self._perf() - t0) * 1000
        if ms >= SLOW_WRITE_MS:
            self._log("warning", "slow synced write", what=what, ms=round(ms), **fields)

    def _log_censorship(self, a: ca.CensorshipSuspected) -> None:
        """Say which transactions made the replica accuse the primary of censoring them,
        and where this node stands with them: a view change an operator can explain."""
        now = self._now
        self._log(
            "warning",
            "censorship timeout: pending transactions not proposed in time",
            view=a.view,
            height=self.ledger.height,
            pending=a.pending,
            oldest=[
                {
                    "tx": tx_id[:8].hex(),
                    "in_mempool": tx_id in self.mempool,
                    "age_s": round(now - self.arrived[tx_id], 2) if tx_id in self.arrived else None,
                }
                for tx_id in a.oldest
            ],
        )
