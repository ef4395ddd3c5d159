"""The node process: a thin trio shell around ``node.core.NodeCore``.

The shell owns only I/O. One nursery (``Node.run``) of long-lived tasks:

- ``drive`` -- the one task that steps the core: it waits on one bounded event channel
  (transport frames, block-sync answers) until ``core.next_deadline()``, steps the core
  with ``Tick`` when that passes, and executes the returned effects in order;
- the transport (``p2p``), the RPC listeners (``node.methods``, ``node.admin``), the
  health watch (``node.health``: peer gauge, readiness changes, the periodic log);
  short-lived tasks for block-sync requests (``node.sync``) and, after a failed disk
  write, the wait-and-reopen loop.

Every decision (mempool, block building, commits, catch-up, gossip batching) is in the
core. RPC handlers call ``submit``/``submit_batch``, which step the core synchronously
on the trio thread (no await in between, so the core needs no lock). ``deliver`` never
blocks: when the channel is full a frame is dropped and counted (consensus tolerates
loss; clients retry transactions).
"""

from __future__ import annotations

import itertools
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import plyvel
import trio

from consensus.api import CertifiedPayload
from consensus.replica import Replica
from consensus.signer import Ed25519Crypto
from ledger.chain import Ledger
from ledger.codec import encode
from ledger.crypto import read_key_file
from ledger.errors import DecodeError, LedgerError, ProtocolVersionError, StoreDamage
from ledger.genesis import read_genesis
from ledger.keyfile import Passphrase
from ledger.protocol import check_supported, peer_refusal
from ledger.prove import Prover
from ledger.store_format import DAMAGE_HINT, leveldb_reason
from ledger.types import CommitCertificate, Transaction
from node import state_sync, sync
from node.config import NodeConfig
from node.consensus_db import ConsensusDB
from node.core import (
    SLOW_WRITE_MS,
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
    NodeCore,
    PeerFrame,
    PeerHeights,
    Penalise,
    Send,
    SetAllowlist,
    StoreFailed,
    StoreReopened,
    Tick,
)
from node.health import register_gauges, watch_health
from node.logs import get_logger
from node.mempool import AddResult, AddStatus, Mempool
from node.methods import serve_rpc
from node.metrics import NodeMetrics
from node.stores import open_stores
from node.transport import TXS, Transport, TransportError, TransportTimeout
from p2p.runtime import TaskStatus

__all__ = ["SLOW_WRITE_MS", "Node"]

log = get_logger("node")

EVENT_QUEUE = 4096
#: Gossip batches allowed to wait in the event channel (full: dropped and counted).
TX_QUEUE = 256
#: Events stepped in a row before the core's due work (a burst of votes first).
DRAIN = 256
#: The drive loop wakes at least this often (a safety net: every deadline is known).
DRIVER_TICK_S = 1.0
STATUS_TIMEOUT_S = 2.0
#: After a failed disk write: how often to retry, and the free space to wait for first.
STORE_RETRY_S = 1.0
STORE_MIN_FREE_BYTES = 4 * 1024 * 1024
#: A state version served as a snapshot is kept this long after the last request for it.
SNAPSHOT_PIN_S = 60.0

TransportFactory = Callable[["Node", dict[bytes, str]], Transport]


class Node:
    """A validator or observer built from a ``NodeConfig`` (see the module docstring)."""

    def __init__(
        self,
        config: NodeConfig,
        transport_factory: TransportFactory,
        *,
        follow_only: bool = False,
        passphrase: Passphrase | None = None,
    ) -> None:
        """``follow_only``: follow the chain without voting or serving RPC, whatever the
        config's role (``dvp store resync``: the node's catch-up, nothing else).
        ``passphrase``: where a protected key's passphrase comes from (default: a
        passphrase file named by the environment, $DVP_KEY_PASSPHRASE, a terminal)."""
        self.config = config
        self.follow_only = follow_only
        self.key = read_key_file(config.key_file, passphrase or Passphrase.default())
        self.genesis = read_genesis(config.genesis)
        self.chain_id = self.genesis.chain_id
        validator = config.is_validator and not follow_only
        if config.state_sync and state_sync.reset_unfinished(
            config.data_dir / "ledger", self.genesis
        ):
            log.warning("dropped an unfinished state-sync import; importing again")
        try:
            # Checked before anything is served: a damaged store is refused here.
            ledger, cdb, checked = open_stores(config.data_dir, self.genesis, validator=validator)
        except StoreDamage as exc:
            what = str(exc).removesuffix(f"; {DAMAGE_HINT}")
            raise StoreDamage(
                f"{what}; the node does not start on a damaged store: restore the data "
                f"directory from a backup or rebuild it from peers with "
                f"`dvp store resync --config {config.path}`"
            ) from None
        head = ledger.head
        try:
            # A build that cannot speak the version of the next block stops here, once,
            # instead of at its first proposal (ledger.protocol).
            check_supported(head.chain.version_at(head.height + 1), head.height + 1)
        except ProtocolVersionError:
            ledger.close()
            if cdb is not None:
                cdb.close()
            raise
        ledger.retain_blocks = config.retain_blocks
        log.info(
            "store checked",
            height=checked.height,
            blocks=checked.blocks,
            state_versions=checked.state_versions,
            ms=round(checked.elapsed_s * 1000),
        )
        self.crypto = Ed25519Crypto(self.key)
        self.metrics = NodeMetrics()
        self._validator = validator
        # An empty store (the genesis block alone) joins from a peer's snapshot first.
        self.joining = config.state_sync and ledger.height == 0
        self.core = self._make_core(ledger, cdb)
        self.prover = Prover(ledger)
        self.events_tx, self.events_rx = trio.open_memory_channel[CoreEvent](EVENT_QUEUE)
        self._queued_txs = 0  # gossip batches waiting in the event channel
        self.waiters: dict[bytes, trio.Event] = {}
        # Arrival times of the transactions this node's own clients submitted: the
        # commit-latency histogram observes these only.
        self.client_submitted: OrderedDict[bytes, float] = OrderedDict()
        self.dropped: dict[str, int] = {}
        self.fetch_pacer = sync.FetchPacer()
        self._request_ids = itertools.count(1)
        self._last_commit = 0.0
        self._nursery: trio.Nursery | None = None
        self._wait_scope: trio.CancelScope | None = None  # the drive loop's wait
        self._pin_until = 0.0
        self._unpinning = False
        self.ready = False
        # Readiness (node.health): the head may be at most this old for /readyz, as for
        # the verifiers' default; and why the store is not trusted, if a store-integrity
        # check says so (None: healthy). Either failing makes /readyz answer 503.
        self.max_head_age_ms = config.max_head_age_ms
        self.store_problem: str | None = None
        self.rpc_ports: dict[str, int] = {}
        self._peers = self.peer_addresses()
        self.transport = transport_factory(self, self._peers)
        self.transport.set_allowlist(self.core.allowed_keys())
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
        )
        register_gauges(self)

    def _make_core(self, ledger: Ledger, cdb: ConsensusDB | None) -> NodeCore:
        config = self.config
        return NodeCore(
            CoreConfig(
                is_validator=self._validator,
                linger_ms=config.linger_ms,
                mempool_max_txs=config.mempool_max_txs,
                client_max_txs=config.mempool_client_max_txs,
                origin=str(config.path),
            ),
            ledger,
            cdb,
            Mempool(self.chain_id, max_txs=config.mempool_max_txs),
            self.crypto,
            disk_failure=_disk_failure,
            perf=time.perf_counter,
        )

    async def _join_by_state_sync(self) -> None:
        """``node.state_sync.join`` before anything is served; then the imported store is
        the ledger (the core is made anew around it, as at a start)."""
        store = self.ledger.store
        log.info("joining by state sync: asking peers for a certified snapshot")
        report = await state_sync.join(self.transport, store, self.genesis)
        self.joining = False
        if report is None:
            log.info("state sync: no peer above genesis; catching up block by block")
            return
        ledger = Ledger(store, self.genesis)
        ledger.retain_blocks = self.config.retain_blocks
        self.core = self._make_core(ledger, self.cdb)
        self.prover = Prover(ledger)
        self.set_allowlist(self.core.allowed_keys())
        log.info(
            "joined by state sync",
            height=report.info.height,
            leaves=report.info.leaves,
            bodies_from=report.info.bodies_from,
            attempts=report.attempts,
            peer=report.peer,
            ms=round(report.elapsed_s * 1000),
        )

    def _pin_state(self, version: int) -> None:
        """Keep state version ``version`` while a peer fetches a snapshot of it; let go
        ``SNAPSHOT_PIN_S`` after the last such request."""
        ledger = self.ledger
        pin = ledger.state_pin
        ledger.state_pin = version if pin is None else min(pin, version)
        self._pin_until = trio.current_time() + SNAPSHOT_PIN_S
        if not self._unpinning and self._nursery is not None:
            self._unpinning = True
            self._nursery.start_soon(self._unpin_later)

    async def _unpin_later(self) -> None:
        try:
            while trio.current_time() < self._pin_until:
                await trio.sleep_until(self._pin_until)
            self.ledger.state_pin = None
        finally:
            self._unpinning = False

    # ------------------------------------------------------------------ the core's state

    @property
    def ledger(self) -> Ledger:
        return self.core.ledger

    @property
    def cdb(self) -> ConsensusDB | None:
        return self.core.cdb

    @property
    def mempool(self) -> Mempool:
        return self.core.mempool

    @property
    def replica(self) -> Replica | None:
        return self.core.replica

    @property
    def app(self) -> Any:
        return self.core.app

    @property
    def status(self) -> CoreStatus:
        return self.core.status

    @property
    def store_ok(self) -> bool:
        """The stores passed the start-up check (a node whose store is damaged does not
        start), no failed disk write is pending and no read has found damage since."""
        return self.status.store_error is None and self.store_problem is None

    def client_limit(self) -> int:
        return self.core.client_limit()

    def set_allowlist(self, keys: set[bytes]) -> None:
        """Who may connect, and the configured peers' keys resolved again: a validator's
        node key rotation (governance) changes the key its configured address answers
        to, and the new key must be dialled, not just admitted."""
        peers = self.peer_addresses(warn=False)
        if peers != self._peers:
            self._peers = peers
            self.transport.set_peers(peers)
        self.transport.set_allowlist(keys)

    def peer_addresses(self, warn: bool = True) -> dict[bytes, str]:
        """Configured peers by node key (validators) or member key (observers); ``warn``
        logs each configured peer that is not a member."""
        tip = self.ledger.tip
        by_member = {v.member_id: v.node_key for v in tip.validators_at(tip.height + 1).validators}
        out: dict[bytes, str] = {}
        for member_id, addr in self.config.peers.items():
            key = by_member.get(member_id)
            if key is None and member_id in tip.members:
                key = tip.members[member_id].key
            if key is None:
                if warn:
                    log.warning("config names a peer that is not a member", peer=member_id)
                continue
            if key != self.key.public_key:
                out[key] = str(addr)
        return out

    # ------------------------------------------------------------------ inputs

    def deliver(self, channel: str, peer: bytes, payload: bytes) -> None:
        """Called by the transport for every inbound frame; never blocks."""
        if channel == TXS:
            if self._queued_txs >= TX_QUEUE:
                self._drop("tx_queue_full")
                return
            self._queued_txs += 1
        try:
            self.events_tx.send_nowait(PeerFrame(peer, channel, payload))
        except trio.WouldBlock:
            if channel == TXS:
                self._queued_txs -= 1
            self._drop("tx_queue_full" if channel == TXS else "consensus_queue_full")

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.metrics.dropped.labels(reason).inc()

    def peer_version_refusal(self, low: int, high: int) -> str | None:
        """The p2p hello's check: a peer must speak the version of our next block."""
        head = self.ledger.head
        return peer_refusal(low, high, head.chain.version_at(head.height + 1))

    async def handle_request(self, peer: bytes, request: bytes) -> bytes:
        if self.joining:
            return encode(["error", "this node is joining by state sync"])
        try:
            pin = sync.pin_version(self.ledger.store, request)
            if pin is not None:
                self._pin_state(pin)
            return sync.serve(self.ledger.store, request)
        except DecodeError as exc:
            self._drop("malformed_sync")
            self.transport.penalize(peer, "malformed_sync")
            return encode(["error", str(exc)[:200]])
        except StoreDamage as exc:
            # Found while serving a peer (the start-up check reads the newest blocks
            # only): not ready any more; a restart refuses the store until resynced.
            self.store_damaged(str(exc))
            return encode(["error", "this node's store is damaged"])

    def store_damaged(self, reason: str) -> None:
        """A read found the store damaged: ``store_problem`` makes ``/readyz`` fail."""
        if self.store_problem is None:
            log.error("store damaged: not ready; restart the node to check it", error=reason)
        self.store_problem = reason[:300]

    def submit(self, tx: Transaction, *, gossip: bool = True) -> AddResult:
        """Admit one transaction: a client's (checked against the state, flooded to
        peers), or with ``gossip=False`` as if a peer had flooded it."""
        return self.submit_batch([tx], from_peer=not gossip)[0]

    def submit_batch(
        self, txs: list[Transaction], *, from_peer: bool = False, more: bool = False
    ) -> list[AddResult]:
        """Admit clients' transactions (one step of the core, synchronously); ``more``:
        further chunks of the same request follow (``ClientTxs.more``)."""
        rid = next(self._request_ids)
        answer: Answer | None = None
        effects = self._step(ClientTxs(rid, tuple(txs), from_peer, more))
        for e in effects:
            if type(e) is Answer and e.request_id == rid:
                answer = e
        assert answer is not None, "the core answers every ClientTxs in the same step"
        if answer.refused:
            self.metrics.client_refused.inc(answer.refused)
        if not from_peer:
            now, seen = trio.current_time(), self.client_submitted
            for tx, r in zip(txs, answer.results, strict=True):
                if r.status is AddStatus.ADDED:
                    seen[tx.tx_id] = now
            while len(seen) > 2 * self.config.mempool_max_txs:
                seen.popitem(last=False)
        return answer.results

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

    # ------------------------------------------------------------------ the drive loop

    def _step(self, event: CoreEvent) -> list[Effect]:
        effects = self.core.step(event, trio.current_time(), int(time.time() * 1000))
        self._execute(effects)
        scope = self._wait_scope
        if scope is not None:
            # Stepped from outside the drive loop (an RPC submission, the store
            # recovery): the core's next deadline may have moved closer.
            scope.deadline = min(scope.deadline, self.core.next_deadline())
        return effects

    def _feed(self, event: CoreEvent) -> None:
        if type(event) is PeerFrame and event.channel == TXS:
            self._queued_txs -= 1
        self._step(event)

    async def _drive(self) -> None:
        rx, core = self.events_rx, self.core
        while True:
            now = trio.current_time()
            deadline = core.next_deadline()
            if deadline > now:
                with trio.move_on_at(min(deadline, now + DRIVER_TICK_S)) as scope:
                    self._wait_scope = scope
                    event = await rx.receive()
                    self._wait_scope = None
                    self._feed(event)
                self._wait_scope = None
            else:
                await trio.sleep(0)  # due work in chunks: let the transport and RPC run
            # Drain what is already queued before timers and building, so a burst of
            # votes is handled before anything is decided on stale information.
            for _ in range(DRAIN):
                try:
                    event = rx.receive_nowait()
                except trio.WouldBlock:
                    break
                self._feed(event)
            if core.next_deadline() <= trio.current_time():
                self._step(Tick())
                self.metrics.mempool.set(len(core.mempool))

    def _execute(self, effects: list[Effect]) -> None:
        transport = self.transport
        for e in effects:
            kind = type(e)
            if kind is Broadcast:
                transport.broadcast(e.channel, e.payload)  # type: ignore[union-attr]
            elif kind is Send:
                transport.send(e.peer, e.channel, e.payload)  # type: ignore[union-attr]
            elif kind is Committed:
                self._committed(e)  # type: ignore[arg-type]
            elif kind is Log:
                getattr(log, e.level)(e.message, **e.fields)  # type: ignore[union-attr]
            elif kind is Penalise:
                if e.reason != "bad_signature":  # type: ignore[union-attr]
                    self._drop(e.reason)  # type: ignore[union-attr]
                transport.penalize(e.peer, e.reason)  # type: ignore[union-attr]
            elif kind is SetAllowlist:
                self.set_allowlist(e.keys)  # type: ignore[union-attr]
            elif kind is Fetch:
                self._spawn(self._fetch, e)
            elif kind is AskHeights:
                self._spawn(self._ask_heights)
            elif kind is Metric:
                if e.name == "view":  # type: ignore[union-attr]
                    self.metrics.view_changes.inc()
                    self.metrics.view.set(e.value)  # type: ignore[union-attr]
                elif e.name == "evidence":  # type: ignore[union-attr]
                    self.metrics.evidence.inc()
            elif kind is StoreFailed:
                self._spawn(self._recover_store, e)

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    def _committed(self, e: Committed) -> None:
        now = trio.current_time()
        waiters, seen, latency = self.waiters, self.client_submitted, self.metrics.commit_latency
        if waiters or seen:
            for tx_id in e.tx_ids:
                t0 = seen.pop(tx_id, None)
                if t0 is not None:
                    latency.observe(now - t0)
                ev = waiters.pop(tx_id, None)
                if ev is not None:
                    ev.set()
        m = self.metrics
        m.block_interval.observe(now - self._last_commit)
        self._last_commit = now
        m.height.set(e.height)
        m.committed_txs.inc(len(e.tx_ids))
        m.mempool.set(e.mempool)

    # ------------------------------------------------------------------ block sync

    async def _ask_heights(self) -> None:
        heights: dict[bytes, int] = {}
        peers = list(self.transport.connected_peers())
        for peer in peers:
            try:
                data = await self.transport.request(peer, sync.status_request(), STATUS_TIMEOUT_S)
                heights[peer] = sync.parse_status(data)[0]
            except (TransportError, DecodeError):
                continue
        await self.events_tx.send(PeerHeights(heights, len(peers)))

    async def _fetch(self, req: Fetch) -> None:
        """Fetch certified blocks; always answer the core (None on failure)."""
        pacer = self.fetch_pacer
        certified: tuple[CertifiedPayload, ...] | None = None
        if pacer.busy:
            # One request at a time over a link; the replica asks again when its own
            # timer expires, the follower at its next poll.
            self.metrics.dropped.labels("fetch_while_fetching").inc()
        else:
            pacer.busy = True
            try:
                certified = await self._fetch_range(req.peer, req.lo, req.hi)
            finally:
                pacer.busy = False
        await self.events_tx.send(BlocksFetched(req.peer, certified))

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

    # ------------------------------------------------------------------ disk failures

    async def _recover_store(self, failed: StoreFailed) -> None:
        """A disk write failed (full, or an I/O error): the core stopped committing and
        voting. Wait until the disk takes writes again, reopen both databases (LevelDB
        may refuse all writes after a failed background write, and a record appended
        after a torn one could be lost on a later recovery), then hand them to the core,
        which catches up from peers and restarts the replica from its durable record.
        RPC keeps answering meanwhile; ``status.store_error`` / ``dvp_store_ok`` say why
        nothing commits."""
        self.metrics.store_failures.inc()
        self.metrics.store_ok.set(0)
        log.error(
            "disk write failed: stopped committing and voting until the disk accepts writes again",
            error=failed.reason,
            data_dir=str(self.config.data_dir),
            height=self.ledger.height,
        )
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
                ledger, cdb = self._reopen_stores()
                break
            except (OSError, LedgerError, plyvel.Error) as retry_exc:
                if trio.current_time() - last_report >= 10.0:
                    last_report = trio.current_time()
                    log.error("disk still refuses writes; not committing", error=str(retry_exc))
        self.prover = Prover(ledger)
        self._step(StoreReopened(ledger, cdb))
        self.metrics.store_ok.set(1)

    def _reopen_stores(self) -> tuple[Ledger, ConsensusDB | None]:
        for db in (self.ledger, self.cdb):
            if db is not None:
                try:
                    db.close()
                except Exception:  # closing a database in an error state: reopen decides
                    pass
        ledger, cdb, _checked = open_stores(
            self.config.data_dir, self.genesis, validator=self.cdb is not None
        )
        ledger.retain_blocks = self.config.retain_blocks
        return ledger, cdb

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._last_commit = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                runner = getattr(self.transport, "run", None)
                if runner is not None:
                    await nursery.start(runner)
                if self.joining:
                    await self._join_by_state_sync()
                if not self.follow_only:
                    self.rpc_ports = await serve_rpc(self, nursery)
                nursery.start_soon(self._drive)
                nursery.start_soon(watch_health, self)
                self.ready = True
                log.info(
                    "node started",
                    role=self.config.role,
                    height=self.ledger.height,
                    rpc=self.rpc_ports.get("rpc"),
                    key=self.key.public_key,
                )
                task_status.started()
        finally:
            self.close()

    def close(self) -> None:
        self.ledger.close()
        if self.cdb is not None:
            self.cdb.close()


def _disk_failure(exc: BaseException) -> str | None:
    """Why a LevelDB write or read failed, if the disk refused it (not a rule or a bad
    block); None otherwise."""
    if isinstance(exc, plyvel.Error) or isinstance(exc.__cause__, plyvel.Error):
        return leveldb_reason(exc)
    return None
