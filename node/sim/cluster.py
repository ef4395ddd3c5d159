"""The simulated world around N node cores: network, clock, power-cut disks, faults.

Each node is the product's ``node.core.NodeCore`` (built by ``host.boot``) over two
``ledger.kv.MemoryKV`` stores (ledger and consensus database); this module executes its
effects as the trio shell (``node.node``) does, into the simulated network.
``node.sim.pbft.network.SimNetwork`` is the seeded scheduler and the lossy, reordering,
duplicating, partitionable network; frames are ``(channel, payload)`` pairs. The clock
is simulated: a node is stepped with ``Tick`` at its ``next_deadline`` and with every
frame at its delivery time, nothing else moves time.

A crash is a power cut: the node's core and in-flight work vanish and each store keeps
its durable image plus a random prefix of its unsynced writes (``MemoryKV.crash``).
A restart reopens both stores from that image (``Ledger.open_kv``, ``ConsensusDB``)
and builds a new core, as a real process restart would; the core catches up from its
peers (``AskHeights`` / ``Fetch``, answered here from the peers' stores) before its
replica votes again.

Observers (``WorldConfig.observers``) are cores with ``is_validator=False`` run by
members that hold no validator, under their member keys; they dial the validators, not
each other, so they get every validator's broadcasts (consensus votes included, which
an observer drops) and follow by polling heights and fetching blocks. ``traffic``
(``node.sim.traffic``) meters every frame sent, for the scale runs (``node.sim.scale``).

A Byzantine node runs the same core; its outgoing consensus frames and its catch-up
answers pass through ``byzantine`` (equivocation, forged certificates), and it claims
to be three heights ahead when asked. ``retire`` has governance remove its validator
(REMOVE_VALIDATOR through the client); from then on it connects under its member key,
forges with its retired validator key, and restarts as an observer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from consensus.api import CertifiedPayload
from ledger.crypto import KeyPair
from ledger.kv import MemoryKV
from ledger.testchain import Consortium
from ledger.types import ChainParams
from node.core import (
    Answer,
    AskHeights,
    BlocksFetched,
    Broadcast,
    ClientTxs,
    Committed,
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
    Tick,
)
from node.mempool import AddStatus
from node.sim import byzantine, host
from node.sim.checker import NodeChecker
from node.sim.client import RandomClient
from node.sim.pbft.network import LinkModel, SimNetwork
from node.sim.traffic import Traffic
from node.transport import CONSENSUS

MAX_FETCH_BLOCKS = 64


@dataclass
class WorldConfig:
    seed: int = 0
    n: int = 4
    link: LinkModel = field(default_factory=LinkModel)
    params: ChainParams = field(
        default_factory=lambda: ChainParams(
            # The censorship timeout (max(4 view timeouts, 2 heartbeats) = 2.4 s) must
            # outlast the node's stale re-check (1 s age + 1 s period), as in production.
            heartbeat_ms=150,
            view_timeout_ms=600,
            checkpoint_interval=4,
            pipeline_window=2,
        )
    )
    byzantine: dict[int, str] = field(default_factory=dict)  # node -> behaviour name
    calm: bool = False
    unsynced_cdb: bool = False  # mutation: the consensus database's syncs do nothing
    crash_keeps_unsynced: bool = True  # a power cut keeps a random prefix of unsynced writes
    observers: int = 0  # observer nodes (indexes n .. n + observers - 1)
    check_observer_mempools: bool = True  # checker (d) on observers too (costly at scale)


@dataclass
class SimNode:
    index: int
    name: str
    key: KeyPair
    ledger_kv: MemoryKV
    cdb_kv: MemoryKV
    core: NodeCore | None = None
    allowlist: set[bytes] | None = None  # the last SetAllowlist (None: all)
    incarnation: int = 0
    wake_at: int | None = None
    byz: str | None = None
    member_key: bytes = b""
    retired: bool = False  # governance removed this (Byzantine) node's validator
    observer: bool = False  # a member's observer: never votes, follows by fetching

    @property
    def up(self) -> bool:
        return self.core is not None

    @property
    def transport_key(self) -> bytes:
        """Who the node connects as: its node key; once retired its member key (a
        member may run an observer), which the allowlist still admits."""
        return self.member_key if self.retired else self.key.public_key


class World:
    def __init__(self, cfg: WorldConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.net = SimNetwork(self.rng, cfg.link)
        self.consortium = Consortium.make(
            cfg.params, n_validators=cfg.n, n_members=cfg.n + cfg.observers
        )
        self.genesis = self.consortium.genesis
        names = [v.member_id for v in self.genesis.validators.validators]
        others = sorted(set(self.consortium.member_keys) - set(names))[: cfg.observers]
        self.nodes: list[SimNode] = []
        for i, name in enumerate(names + others):
            observer = i >= len(names)
            keys = self.consortium.member_keys if observer else self.consortium.node_keys
            node = SimNode(
                i,
                name,
                keys[name],
                MemoryKV(name=f"{name}/ledger"),
                MemoryKV(name=f"{name}/consensus"),
                byz=cfg.byzantine.get(i),
                member_key=self.consortium.member_keys[name].public_key,
                observer=observer,
            )
            node.cdb_kv.ignore_sync = cfg.unsynced_cdb
            self.nodes.append(node)
        self.traffic = Traffic(len(self.nodes))
        self.key_index = {n.key.public_key: n.index for n in self.nodes}
        self.key_index.update({n.member_key: n.index for n in self.nodes})
        self.honest = {n.index for n in self.nodes if n.byz is None}
        self.checker = NodeChecker(self.honest, cfg.calm)
        self.checker.set_keys({n.index: n.key.public_key for n in self.nodes})
        self.client = RandomClient(self.consortium, random.Random(cfg.seed ^ 0x5EED))
        self.forged: dict[str, int] = {}  # forged certificates served, by kind
        self.refused_blocks = 0  # fetched blocks honest cores refused ("invalid block")
        self.retirement: list[Any] = []  # the REMOVE_VALIDATOR proposal and its votes
        self.committed: dict[int, set[bytes]] = {n.index: set() for n in self.nodes}
        self.requests = 0
        self._answers: dict[int, tuple[Any, ...]] = {}
        self.views: dict[int, int] = {}  # view changes entered, by node
        self.steps = 0
        self.trace: list[str] = []
        for node in self.nodes:
            self._boot(node)

    # -- lifecycle -------------------------------------------------------------------

    def _boot(self, node: SimNode) -> None:
        # A retired validator is restarted as an observer, as its operator must.
        core = host.boot(
            node.name,
            node.key,
            self.genesis,
            node.ledger_kv,
            node.cdb_kv,
            is_validator=not node.retired and not node.observer,
        )
        node.core = core
        node.wake_at = None
        node.allowlist = None
        self.checker.on_restart(node.index, core.ledger.height)
        self._schedule(node)  # the first Tick asks the peers' heights (catch-up)

    def crash(self, i: int) -> None:
        node = self.nodes[i]
        if node.core is None:
            return
        self._forget_lost(node)
        rng = self.rng if self.cfg.crash_keeps_unsynced else None
        node.ledger_kv = node.ledger_kv.crash(rng)
        node.cdb_kv = node.cdb_kv.crash(rng)
        node.core = None
        node.incarnation += 1
        node.wake_at = None

    def _forget_lost(self, node: SimNode) -> None:
        """A mempool is memory: what only the crashing node held is lost with it (a
        client retries), so it leaves the liveness obligation."""
        others = [n.core for n in self.nodes if n.core is not None and n is not node]
        for tx_id in list(self.checker.admitted):
            if any(tx_id in ids for ids in self.committed.values()):
                continue
            if not any(tx_id in core.mempool for core in others):
                self.checker.forget(tx_id)

    def restart(self, i: int) -> None:
        node = self.nodes[i]
        if node.core is None:
            self._boot(node)

    def heal(self) -> None:
        self.net.heal()
        self.net.filters.clear()
        for node in self.nodes:
            self.restart(node.index)

    # -- stepping --------------------------------------------------------------------

    def step(self, i: int, event: Any) -> list[Any]:
        node = self.nodes[i]
        core = node.core
        if core is None:
            return []
        self.checker.now = self.net.now
        self.steps += 1
        try:
            effects = host.step(core, event, self.net.now)
        except SystemExit:
            if node.byz is None:
                raise
            # The retired Byzantine validator's core refuses to vote ("not a validator
            # ... run it with role = observer"): its process exits; the operator
            # restarts it as an observer.
            self.crash(i)
            self.trace.append(f"t={self.net.now} node {i} exits: no longer a validator")
            return []
        self._effects(node, effects)
        if node.byz is not None and not node.retired:
            head = core.ledger.head
            if node.key.public_key not in head.validators_at(head.height + 1).keys:
                node.retired = True
                self.trace.append(f"t={self.net.now} node {i} retired at {head.height}")
        return effects

    def _effects(self, node: SimNode, effects: list[Any]) -> None:
        """Execute the core's effects in order, as ``node.node.Node._execute`` does."""
        core = node.core
        assert core is not None
        checker = self.checker
        for eff in effects:
            kind = type(eff)
            if kind is Broadcast:
                payloads = None
                if node.byz:
                    others = [n.index for n in self.nodes if n.index != node.index]
                    payloads = byzantine.equivocate(node, eff, others, self.rng)
                if eff.channel == CONSENSUS:
                    for payload in {eff.payload} if payloads is None else set(payloads.values()):
                        checker.on_frame(node.index, payload)
                dsts = self._links(node)
                if payloads is None:
                    self.traffic.on_send(node.index, dsts, eff.channel, eff.payload, self.net.now)
                for to in dsts:
                    payload = eff.payload if payloads is None else payloads[to]
                    if payloads is not None:
                        self.traffic.on_send(node.index, [to], eff.channel, payload, self.net.now)
                    self.net.send(node.index, to, (eff.channel, payload), self._deliver)
            elif kind is Send:
                dst = self.key_index.get(eff.peer)
                if eff.channel == CONSENSUS:
                    checker.on_frame(node.index, eff.payload)
                if dst is not None and dst != node.index:
                    self.traffic.on_send(node.index, [dst], eff.channel, eff.payload, self.net.now)
                    self.net.send(node.index, dst, (eff.channel, eff.payload), self._deliver)
            elif kind is Committed:
                # The block is in the store before its Committed effect (core rule 1).
                block_id = core.ledger.store.get_block_id(eff.height)
                assert block_id is not None
                checker.on_committed(node.index, eff.height, block_id)
                self.traffic.on_commit(node.index, eff.height, self.net.now)
                self.committed[node.index].update(eff.tx_ids)
            elif kind is Answer:
                txs = self._answers.pop(eff.request_id, ())
                for tx, result in zip(txs, eff.results, strict=True):
                    # A Byzantine node's "added" promises nothing: only honest admissions
                    # bind checker (b).
                    if result.status == AddStatus.ADDED and node.byz is None:
                        checker.on_admitted(tx.tx_id)
            elif kind is Fetch:
                self._serve(node, eff)
            elif kind is AskHeights:
                self._ask_heights(node)
            elif kind is Penalise:
                checker.on_penalised(node.index, self.key_index.get(eff.peer), eff.reason)
            elif kind is SetAllowlist:
                node.allowlist = set(eff.keys)
            elif kind is Metric:
                if eff.name == "view":
                    self.views[node.index] = self.views.get(node.index, 0) + 1
                    self.traffic.on_view(node.index, int(eff.value), self.net.now)
            elif kind is Log:
                if eff.message == "peer sent an invalid block" and node.byz is None:
                    self.refused_blocks += 1
                elif eff.message == "equivocation evidence recorded":
                    accused = self.key_index.get(eff.fields.get("peer", b""))
                    checker.on_evidence(node.index, accused)
            elif kind is StoreFailed:
                # MemoryKV never refuses a write: the core must not think it did.
                checker.violation(f"STORE FAILED on node {node.index}: {eff.reason}")
        if (
            node.index in self.honest
            and node.core is core
            and (self.cfg.check_observer_mempools or not node.observer)
        ):
            pool = core.mempool
            checker.check_mempool(node.index, [pool.get(t) for t in pool.tx_ids()], core.ledger)
        self._schedule(node)

    def _links(self, node: SimNode) -> list[int]:
        """Whom ``node`` is connected to: everyone, except that observers dial the
        validators only (not each other)."""
        return [
            o.index
            for o in self.nodes
            if o.index != node.index and not (node.observer and o.observer)
        ]

    def _schedule(self, node: SimNode) -> None:
        core = node.core
        if core is None:
            return
        deadline = host.deadline_ms(core, self.net.now)
        if deadline is None:
            return
        if node.wake_at is not None and self.net.now < node.wake_at <= deadline:
            return  # an earlier wake-up is already scheduled
        node.wake_at = deadline
        self.net.at(deadline, self._wake, node.index, node.incarnation, deadline)

    def _wake(self, i: int, incarnation: int, at: int) -> None:
        node = self.nodes[i]
        if node.incarnation != incarnation or node.wake_at != at:
            return
        node.wake_at = None
        self.step(i, Tick())

    def _deliver(self, src: int, dst: int, frame: tuple[str, bytes]) -> None:
        key = self.nodes[src].transport_key
        if not self._admits(dst, key):
            return  # the transport refuses peers outside the allowlist
        self.step(dst, PeerFrame(key, frame[0], frame[1]))

    def _admits(self, i: int, key: bytes) -> bool:
        allow = self.nodes[i].allowlist
        return allow is None or key in allow

    # -- catch-up ----------------------------------------------------------------------

    def _ask_heights(self, node: SimNode) -> None:
        """``AskHeights``: a status request to every connected peer, answered after a
        round trip by those up and reachable (``node.node.Node._ask_heights``)."""
        peers = [
            p
            for p in self.nodes
            if p is not node
            and not (node.observer and p.observer)
            and p.core is not None
            and self.net.connected(node.index, p.index)
        ]
        delay = self.net.delay() + self.net.delay()
        self.net.after(delay, self._heights, node.index, node.incarnation, [p.index for p in peers])

    def _heights(self, i: int, incarnation: int, peers: list[int]) -> None:
        node = self.nodes[i]
        if node.incarnation != incarnation or node.core is None:
            return
        heights: dict[bytes, int] = {}
        for p in peers:
            peer = self.nodes[p]
            key = peer.transport_key
            if peer.core is not None and self.net.connected(i, p) and self._admits(i, key):
                # A Byzantine peer claims to be ahead: catch-up then asks it for blocks.
                heights[key] = peer.core.ledger.height + (3 if peer.byz else 0)
        self.step(i, PeerHeights(heights, len(peers)))

    def _serve(self, node: SimNode, req: Fetch) -> None:
        """``Fetch``: certified blocks from the peer's store after a round trip; every
        Fetch gets exactly one answer (None when the peer is down or cut off)."""
        blocks: tuple[CertifiedPayload, ...] | None = None
        p = self.key_index.get(req.peer, -1)
        peer = self.nodes[p] if p >= 0 else None
        if peer is not None and peer.core is not None and self.net.connected(node.index, p):
            store = peer.core.ledger.store
            hi = min(req.hi, store.height, req.lo + MAX_FETCH_BLOCKS - 1)
            got: list[CertifiedPayload] = []
            for h in range(req.lo, hi + 1):
                raw, cert = store.get_block_bytes(h), store.get_certificate(h)
                if raw is None or cert is None:
                    break
                got.append(CertifiedPayload(raw, cert))
            if peer.byz and node.index in self.honest:
                got, kind = byzantine.forge(peer, req.lo, got, self.rng, peer.retired)
                if kind:
                    self.forged[kind] = self.forged.get(kind, 0) + 1
            blocks = tuple(got)
            size = sum(len(b.payload) + len(b.certificate.encode()) for b in blocks)
            self.traffic.count(p, [node.index], "fetch", size)
        delay = self.net.delay() + self.net.delay()
        self.net.after(delay, self._fetched, node.index, node.incarnation, req.peer, blocks)

    def _fetched(
        self, i: int, incarnation: int, peer: bytes, blocks: tuple[Any, ...] | None
    ) -> None:
        node = self.nodes[i]
        if node.incarnation != incarnation:
            return
        src = self.key_index.get(peer)
        if blocks is not None and src is not None and not self.net.connected(i, src):
            blocks = None  # cut off while the answer travelled: the request times out
        self.step(i, BlocksFetched(peer, blocks))

    # -- the client ----------------------------------------------------------------------

    def submit(self) -> str:
        up = [n for n in self.nodes if n.core is not None]
        if not up:
            return "client: no node up"
        node = self.rng.choice(up)
        assert node.core is not None
        head = node.core.ledger.head
        attested = {c for c in self.client.commitments[-50:] if head.attestation(c) is not None}
        kind, txs = self.client.next_batch(head.height, attested)
        self.submit_txs(node.index, txs)
        return f"client {kind} x{len(txs)} -> {node.index}"

    def submit_txs(self, i: int, txs: list[Any]) -> None:
        """A client's request of ``txs`` to node ``i`` (answered by its ``Answer``)."""
        self.requests += 1
        self._answers[self.requests] = tuple(txs)
        self.step(i, ClientTxs(self.requests, tuple(txs)))

    def retire(self, byz: int) -> str:
        """Submit (again) governance's removal of node ``byz``'s validator: an honest
        member proposes REMOVE_VALIDATOR, two more vote yes (a quorum of four)."""
        up = [n for n in self.nodes if n.core is not None and n.index in self.honest]
        if not up:
            return "retire: no honest node up"
        node = self.rng.choice(up)
        assert node.core is not None
        if not self.retirement:
            voters = [self.nodes[i].name for i in sorted(self.honest)][:3]
            self.retirement = self.client.remove_validator(
                self.nodes[byz].name, voters, node.core.ledger.height
            )
        self.requests += 1
        self._answers[self.requests] = tuple(self.retirement)
        self.step(node.index, ClientTxs(self.requests, tuple(self.retirement)))
        return f"client retire {byz} -> {node.index}"

    # -- running -------------------------------------------------------------------------

    def run_until(self, time_ms: int) -> None:
        net = self.net
        while self.checker.ok:
            nxt = net.next_time()
            if nxt is None or nxt > time_ms:
                break
            net.run_one()
        net.now = max(net.now, time_ms)
