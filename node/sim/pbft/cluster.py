"""A simulated cluster: n replicas, each driven by a minimal caller loop.

Each ``Node`` plays the part the real node will play around ``consensus.Replica``:
it feeds events, executes actions in order (``Persist`` into its "disk",
``Send``/``Broadcast`` into ``SimNetwork``, timers into the scheduler, ``CommitBlock``
into its chain and ``MemApp`` followed by ``Applied``), builds blocks from its mempool
when asked, and serves ``RequestBlocks`` from its chain.

Crash = the node's replica, mempool and timers vanish; its chain and signing record
(the "disk") survive. Restart = a new ``Replica`` built from the disk, like a real
process restart. Byzantine nodes run the same code but their output is rewritten by a
``node.sim.pbft.byzantine.Behaviour``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from consensus.api import (
    Action,
    Applied,
    BlocksReceived,
    Broadcast,
    CancelTimer,
    CertifiedPayload,
    CommitBlock,
    Config,
    Event,
    MessageReceived,
    PeerMisbehaved,
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
    TxsPending,
    ViewEntered,
)
from consensus.messages import Message, decode_message
from consensus.record import SigningRecord
from consensus.replica import Replica
from ledger.types import CommitCertificate
from node.sim.pbft.app import GENESIS_ID, MemApp, make_payload, parse
from node.sim.pbft.checker import Checker
from node.sim.pbft.crypto import FakeCrypto, make_keys
from node.sim.pbft.network import LinkModel, SimNetwork

CHAIN_ID = "sim-chain"
ReplicaFactory = Callable[..., Replica]


@dataclass
class SimConfig:
    n: int = 4
    spare: int = 0  # extra nodes that start outside the validator set
    seed: int = 0
    window: int = 4
    checkpoint_interval: int = 8
    view_timeout_ms: int = 200
    censor_timeout_ms: int = 4000
    max_backoff_exp: int = 4
    link: LinkModel = field(default_factory=LinkModel)
    change_delay: int = 8
    wire: bool = False  # round-trip every message through encode/decode
    tx_interval_ms: int = 25
    txs_per_tick: int = 2
    build_delay_ms: int = 2
    idle_propose_ms: int = 60
    max_block_txs: int = 64


@dataclass
class Node:
    index: int
    key: bytes
    crypto: FakeCrypto
    app: MemApp
    replica: Replica | None = None
    up: bool = True
    incarnation: int = 0
    chain: list[bytes] = field(default_factory=list)
    certs: list[CommitCertificate] = field(default_factory=list)
    record: SigningRecord | None = None
    blocks: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)  # durable payloads
    timers: dict[tuple[int, int], int] = field(default_factory=dict)
    mempool: dict[bytes, None] = field(default_factory=dict)
    inflight: dict[bytes, int] = field(default_factory=dict)
    byz: Any = None  # node.sim.pbft.byzantine.Behaviour
    request: RequestProposal | None = None  # outstanding, not yet built
    nonce: int = 0

    @property
    def height(self) -> int:
        return len(self.chain)


class Cluster:
    def __init__(
        self,
        cfg: SimConfig,
        byzantine: dict[int, Any] | None = None,
        replica_factory: ReplicaFactory = Replica,
        factories: dict[int, ReplicaFactory] | None = None,
    ) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.net = SimNetwork(self.rng, cfg.link)
        total = cfg.n + cfg.spare
        self.keys = make_keys(total)
        self.key_index = {k: i for i, k in enumerate(self.keys)}
        self.initial = list(range(cfg.n))
        self.config = Config(
            CHAIN_ID,
            GENESIS_ID,
            window=cfg.window,
            checkpoint_interval=cfg.checkpoint_interval,
            view_timeout_ms=cfg.view_timeout_ms,
            censor_timeout_ms=cfg.censor_timeout_ms,
            max_backoff_exp=cfg.max_backoff_exp,
            fetch_timeout_ms=4 * cfg.view_timeout_ms,
        )
        self.checker = Checker(CHAIN_ID, self.keys, self.initial, cfg.change_delay)
        self.factory = replica_factory
        self.factories = factories or {}
        self.byzantine = dict(byzantine or {})
        self.nodes = [
            Node(
                i,
                k,
                FakeCrypto(k),
                MemApp(self.keys, self.initial, cfg.change_delay),
                byz=self.byzantine.get(i),
            )
            for i, k in enumerate(self.keys)
        ]
        self.honest_keys = {n.key for n in self.nodes if n.byz is None}
        self.views: set[tuple[int, int]] = set()
        self.uncommitted: dict[bytes, None] = {}
        self.steps = 0
        self.max_steps = 2_000_000
        self.pending_change: list[int] | None = None
        self.tx_counter = 0
        self.censored_every = 0  # every k-th tx id is marked for censorship tests
        for node in self.nodes:
            self._boot(node)
        self.net.after(cfg.tx_interval_ms, self._client_tick)

    # -- node lifecycle ---------------------------------------------------------------

    def _boot(self, node: Node) -> None:
        factory = self.factories.get(node.index, self.factory)
        committed_id = parse(node.chain[-1]).block_id if node.chain else GENESIS_ID  # type: ignore[union-attr]
        node.replica = factory(
            self.config,
            node.app,
            node.crypto,
            committed_height=node.height,
            committed_block_id=committed_id,
            record=node.record,
            blocks=[p for _, p in node.blocks.values()],
        )
        node.up = True
        self.step(node.index, Start())
        if node.chain:  # the caller re-announces its applied head (a checkpoint may be due)
            self.step(node.index, Applied(node.height, node.app.root))
        if self.uncommitted:
            txs = tuple(self.uncommitted)
            node.mempool.update(dict.fromkeys(txs))
            self.step(node.index, TxsPending(txs))

    def crash(self, i: int) -> None:
        node = self.nodes[i]
        if not node.up:
            return
        node.up = False
        node.replica = None
        node.incarnation += 1
        node.timers.clear()
        node.mempool.clear()
        node.inflight.clear()
        node.request = None

    def restart(self, i: int) -> None:
        node = self.nodes[i]
        if node.up:
            return
        node.app = node.app.clone_from_chain(node.chain)
        self.checker.on_restart(i, node.height)
        self._boot(node)

    @property
    def honest(self) -> list[int]:
        return [n.index for n in self.nodes if n.byz is None]

    def heights(self) -> dict[int, int]:
        return {n.index: n.height for n in self.nodes}

    # -- stepping and executing actions ----------------------------------------------------

    def step(self, i: int, event: Event) -> None:
        node = self.nodes[i]
        if not node.up or node.replica is None:
            return
        self.checker.now = self.net.now
        actions = node.replica.step(event)
        self.steps += 1
        if node.byz is None:
            self.views.add((node.replica.epoch, node.replica.view))
        else:
            actions = node.byz.rewrite(self, node, actions)
        self.execute(node, actions)

    def execute(self, node: Node, actions: Iterable[Action]) -> None:
        followups: list[Event] = []
        for action in actions:
            # Class patterns narrow the ``Action`` union for the type checker. They are
            # isinstance tests, which pick the same branch as an exact type test because
            # no action class subclasses another.
            match action:
                case Broadcast():
                    self.broadcast(node, action.message)
                case Send():
                    dst = self.key_index.get(action.to)
                    if dst is not None:
                        self.send(node, dst, action.message)
                case Persist():
                    node.record = action.record
                    stable = action.record.stable
                    if stable is not None and len(node.blocks) > 64:
                        node.blocks = {k: v for k, v in node.blocks.items() if v[0] > stable.height}
                case PersistBlock():
                    node.blocks[action.block_id] = (action.height, action.payload)
                case SetTimer():
                    key = (int(action.kind), action.key)
                    token = self.rng.getrandbits(32)
                    node.timers[key] = token
                    self.net.after(
                        action.delay_ms,
                        self._timer,
                        node.index,
                        node.incarnation,
                        key,
                        token,
                        action.kind,
                    )
                case CancelTimer():
                    node.timers.pop((int(action.kind), action.key), None)
                case CommitBlock():
                    followups.append(self._commit(node, action))
                case RequestProposal():
                    self._build(node, action)
                case RequestBlocks():
                    self._serve_blocks(node, action)
                case ViewEntered():
                    self.checker.views_entered += 1
                case PeerMisbehaved():
                    self.checker.on_misbehaved(
                        node.index, action.peer, action.reason, self.honest_keys
                    )
                case ReportEvidence():
                    self.checker.on_evidence(node.index, action.evidence, self.honest_keys)
        for event in followups:
            self.step(node.index, event)

    def _wire(self, message: Message) -> Message:
        return decode_message(message.encoded) if self.cfg.wire else message

    def broadcast(self, node: Node, message: Message) -> None:
        if node.byz is None and message.sender == node.key:
            self.checker.on_signed(node.index, message)
        message = self._wire(message)
        for other in self.nodes:
            if other.index != node.index:
                self.net.send(node.index, other.index, message, self._deliver)

    def send(self, node: Node, dst: int, message: Message) -> None:
        if node.byz is None and message.sender == node.key:
            self.checker.on_signed(node.index, message)
        if dst != node.index:
            self.net.send(node.index, dst, self._wire(message), self._deliver)

    def _deliver(self, src: int, dst: int, message: Message) -> None:
        self.step(dst, MessageReceived(message, peer=self.keys[src]))

    def _timer(self, i: int, incarnation: int, key: tuple[int, int], token: int, kind: Any) -> None:
        node = self.nodes[i]
        if node.up and node.incarnation == incarnation and node.timers.get(key) == token:
            del node.timers[key]
            self.step(i, TimerFired(kind, key[1]))

    def _commit(self, node: Node, action: CommitBlock) -> Event:
        if node.byz is None:
            self.checker.on_commit(node.index, action.height, action.payload, action.certificate)
        node.chain.append(action.payload)
        node.certs.append(action.certificate)
        root = node.app.apply(action.payload)
        for tx in node.app.tx_ids(action.payload):
            node.mempool.pop(tx, None)
            node.inflight.pop(tx, None)
            self.uncommitted.pop(tx, None)
        return Applied(action.height, root)

    # -- the caller's services: block builder, block server, client --------------------------

    def _build(self, node: Node, request: RequestProposal) -> None:
        """Block builder policy: build soon if there are transactions, else linger."""
        node.request = request
        delay = (
            self.cfg.build_delay_ms
            if (node.mempool or self.pending_change)
            else self.cfg.idle_propose_ms
        )
        self.net.after(delay, self._build_now, node.index, node.incarnation, request)

    def _build_now(self, i: int, incarnation: int, request: RequestProposal) -> None:
        node = self.nodes[i]
        if node.incarnation != incarnation or node.request is not request:
            return  # built already (transactions arrived early) or node restarted
        node.request = None
        height, committed = request.height, node.height
        txs: list[bytes] = []
        for tx in node.mempool:
            if len(txs) >= self.cfg.max_block_txs:
                break
            at = node.inflight.get(tx)
            if at is not None and committed < at < height:
                continue  # already in a block we proposed below this one
            if node.byz is not None and node.byz.censors(tx):
                continue
            txs.append(tx)
        change: list[int] = []
        if self.pending_change is not None and node.byz is None:
            change, self.pending_change = self.pending_change, None
        node.nonce += 1
        invalid = node.byz is not None and node.byz.invalid_blocks
        payload = make_payload(
            height, request.parent_block_id, node.index, node.nonce, txs, change, invalid
        )
        self.checker.on_proposed(payload)
        for tx in txs:
            node.inflight[tx] = height
        self.step(i, ProposalReady(height, request.view, payload))

    def _serve_blocks(self, node: Node, request: RequestBlocks) -> None:
        p = self.key_index.get(request.peer)
        if p is None:
            return
        peer = self.nodes[p]
        if not peer.up or not self.net.connected(node.index, p):
            return
        hi = min(request.to_height, peer.height)
        blocks = [
            CertifiedPayload(peer.chain[h - 1], peer.certs[h - 1])
            for h in range(request.from_height, hi + 1)
        ]
        if peer.byz is not None:
            blocks = peer.byz.serve(self, peer, blocks)
        delay = self.net.delay() + self.net.delay()
        self.net.after(
            delay,
            self._blocks_arrive,
            node.index,
            node.incarnation,
            p,
            BlocksReceived(request.peer, tuple(blocks)),
        )

    def _blocks_arrive(self, i: int, incarnation: int, src: int, event: BlocksReceived) -> None:
        if self.nodes[i].incarnation == incarnation and self.net.connected(i, src):
            self.step(i, event)

    def new_tx_id(self) -> bytes:
        self.tx_counter += 1
        marker = (
            b"\xcc"
            if self.censored_every and self.tx_counter % self.censored_every == 0
            else b"\x00"
        )
        return marker + self.tx_counter.to_bytes(7, "big")

    def submit(self, count: int) -> None:
        txs = tuple(self.new_tx_id() for _ in range(count))
        self.uncommitted.update(dict.fromkeys(txs))
        for node in self.nodes:
            if node.up:
                node.mempool.update(dict.fromkeys(txs))
                self.step(node.index, TxsPending(txs))
                if node.request is not None:  # an idle primary lingering: build now
                    self.net.after(
                        self.cfg.build_delay_ms,
                        self._build_now,
                        node.index,
                        node.incarnation,
                        node.request,
                    )

    def _client_tick(self) -> None:
        if self.cfg.txs_per_tick:
            self.submit(self.cfg.txs_per_tick)
        self.net.after(self.cfg.tx_interval_ms, self._client_tick)

    # -- running -------------------------------------------------------------------------------

    def run_until(self, time_ms: int, stop: Callable[[], bool] | None = None) -> None:
        net = self.net
        while True:
            nxt = net.next_time()
            if nxt is None or nxt > time_ms:
                break
            net.run_one()
            if self.steps > self.max_steps:  # a message storm is a bug too (and would hang)
                self.checker.violation(f"STORM: more than {self.max_steps} replica steps")
                self.max_steps = 1 << 62
                return
            if stop is not None and stop():
                return
        net.now = max(net.now, time_ms)

    def run_for(self, ms: int) -> None:
        self.run_until(self.net.now + ms)

    def run_until_height(
        self, height: int, timeout_ms: int, nodes: Iterable[int] | None = None
    ) -> bool:
        watch = list(self.honest if nodes is None else nodes)

        def done() -> bool:
            return all(self.nodes[i].height >= height for i in watch if self.nodes[i].up)

        self.run_until(self.net.now + timeout_ms, done)
        return done()

    def heal_all(self) -> None:
        self.net.heal()
        self.net.filters.clear()
        for node in self.nodes:
            if not node.up:
                self.restart(node.index)

    def replica(self, i: int) -> Replica:
        r = self.nodes[i].replica
        assert r is not None, f"node {i} is down"
        return r

    def stats(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for node in self.nodes:
            if node.replica is not None:
                for k, v in node.replica.stats.items():
                    total[k] = total.get(k, 0) + v
        return total
