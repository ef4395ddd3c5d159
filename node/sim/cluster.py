"""The simulated world around N node cores: network, clock, power-cut disks, faults.

Each node is the product's ``node.core.NodeCore`` (built by ``host.boot``) over two
``ledger.kv.MemoryKV`` stores (ledger and consensus database); this module executes its
effects as the trio shell (``node.node``) does, into the simulated network.
``consensus.sim.network.SimNetwork`` is the seeded scheduler and the lossy, reordering,
duplicating, partitionable network; frames are ``(channel, payload)`` pairs. The clock
is simulated: a node is stepped with ``Tick`` at its ``next_deadline`` and with every
frame at its delivery time, nothing else moves time.

A crash is a power cut: the node's core and in-flight work vanish and each store keeps
its durable image plus a random prefix of its unsynced writes (``MemoryKV.crash``).
A restart reopens both stores from that image (``Ledger.open_kv``, ``ConsensusDB``)
and builds a new core, as a real process restart would; the core catches up from its
peers (``AskHeights`` / ``Fetch``, answered here from the peers' stores) before its
replica votes again.

A Byzantine node (``Byzantine``) runs the same core; its outgoing consensus frames are
rewritten: an equivocating primary sends two different signed PRE-PREPAREs (two valid
blocks) to the two halves of the cluster and conflicting PREPARE/COMMIT votes; when
serving catch-up it forges certificates (a repeated signer, a signer outside the set, a
signature by a key that is no validator's: the retired-key case) over tampered blocks.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import Any

from consensus.api import CertifiedPayload
from consensus.messages import Commit, Prepare, PrePrepare, decode_message
from consensus.sim.network import LinkModel, SimNetwork
from ledger.codec import Domain
from ledger.crypto import KeyPair
from ledger.kv import MemoryKV
from ledger.state import execute
from ledger.testchain import Consortium
from ledger.types import ChainParams, CommitCertificate, commit_vote_body
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
from node.sim import host
from node.sim.checker import NodeChecker
from node.sim.client import RandomClient
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

    @property
    def up(self) -> bool:
        return self.core is not None


class World:
    _consortia: dict[tuple[Any, ...], Consortium] = {}

    def __init__(self, cfg: WorldConfig) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.net = SimNetwork(self.rng, cfg.link)
        self.consortium = Consortium.make(cfg.params, n_validators=cfg.n)
        self.genesis = self.consortium.genesis
        names = [v.member_id for v in self.genesis.validators.validators]
        self.nodes: list[SimNode] = []
        for i, name in enumerate(names):
            node = SimNode(
                i,
                name,
                self.consortium.node_keys[name],
                MemoryKV(name=f"{name}/ledger"),
                MemoryKV(name=f"{name}/consensus"),
                byz=cfg.byzantine.get(i),
            )
            node.cdb_kv.ignore_sync = cfg.unsynced_cdb
            self.nodes.append(node)
        self.key_index = {n.key.public_key: n.index for n in self.nodes}
        self.honest = {n.index for n in self.nodes if n.byz is None}
        self.checker = NodeChecker(self.honest, cfg.calm)
        self.checker.set_keys({n.index: n.key.public_key for n in self.nodes})
        self.client = RandomClient(self.consortium, random.Random(cfg.seed ^ 0x5EED))
        self.outsider = KeyPair.from_seed(b"\x01" * 32)  # signs "as a retired validator"
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
        core = host.boot(node.name, node.key, self.genesis, node.ledger_kv, node.cdb_kv)
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
        effects = host.step(core, event, self.net.now)
        self._effects(node, effects)
        return effects

    def _effects(self, node: SimNode, effects: list[Any]) -> None:
        """Execute the core's effects in order, as ``node.node.Node._execute`` does."""
        core = node.core
        assert core is not None
        checker = self.checker
        for eff in effects:
            kind = type(eff)
            if kind is Broadcast:
                payloads = self._rewrite(node, eff) if node.byz else None
                if eff.channel == CONSENSUS:
                    for payload in {eff.payload} if payloads is None else set(payloads.values()):
                        checker.on_frame(node.index, payload)
                for other in self.nodes:
                    if other.index == node.index:
                        continue
                    payload = eff.payload if payloads is None else payloads[other.index]
                    self.net.send(node.index, other.index, (eff.channel, payload), self._deliver)
            elif kind is Send:
                dst = self.key_index.get(eff.peer)
                if eff.channel == CONSENSUS:
                    checker.on_frame(node.index, eff.payload)
                if dst is not None and dst != node.index:
                    self.net.send(node.index, dst, (eff.channel, eff.payload), self._deliver)
            elif kind is Committed:
                # The block is in the store before its Committed effect (core rule 1).
                block_id = core.ledger.store.get_block_id(eff.height)
                assert block_id is not None
                checker.on_committed(node.index, eff.height, block_id)
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
            elif kind is Log:
                if eff.message == "equivocation evidence recorded":
                    accused = self.key_index.get(eff.fields.get("peer", b""))
                    checker.on_evidence(node.index, accused)
            elif kind is StoreFailed:
                # MemoryKV never refuses a write: the core must not think it did.
                checker.violation(f"STORE FAILED on node {node.index}: {eff.reason}")
        if node.index in self.honest and node.core is core:
            pool = core.mempool
            checker.check_mempool(node.index, [pool.get(t) for t in pool.tx_ids()], core.ledger)
        self._schedule(node)

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
        allow = self.nodes[dst].allowlist
        key = self.nodes[src].key.public_key
        if allow is not None and key not in allow:
            return  # the transport refuses peers outside the allowlist
        self.step(dst, PeerFrame(key, frame[0], frame[1]))

    # -- catch-up ----------------------------------------------------------------------

    def _ask_heights(self, node: SimNode) -> None:
        """``AskHeights``: a status request to every connected peer, answered after a
        round trip by those up and reachable (``node.node.Node._ask_heights``)."""
        peers = [
            p
            for p in self.nodes
            if p is not node and p.core is not None and self.net.connected(node.index, p.index)
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
            if peer.core is not None and self.net.connected(i, p):
                heights[peer.key.public_key] = peer.core.ledger.height
        self.step(i, PeerHeights(heights, len(peers)))

    def _serve(self, node: SimNode, req: Fetch) -> None:
        """``Fetch``: certified blocks from the peer's store after a round trip; every
        Fetch gets exactly one answer (None when the peer is down or cut off)."""
        blocks: tuple[CertifiedPayload, ...] | None = None
        p = self.key_index.get(req.peer)
        peer = self.nodes[p] if p is not None else None
        if peer is not None and peer.core is not None and self.net.connected(node.index, p):
            store = peer.core.ledger.store
            hi = min(req.hi, store.height, req.lo + MAX_FETCH_BLOCKS - 1)
            got: list[CertifiedPayload] = []
            for h in range(req.lo, hi + 1):
                raw, cert = store.get_block_bytes(h), store.get_certificate(h)
                if raw is None or cert is None:
                    break
                got.append(CertifiedPayload(raw, cert))
            if peer.byz and got:
                got = self._forge(peer, got)
            blocks = tuple(got)
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
        self.requests += 1
        self._answers[self.requests] = tuple(txs)
        self.step(node.index, ClientTxs(self.requests, tuple(txs)))
        return f"client {kind} x{len(txs)} -> {node.index}"

    # -- running -------------------------------------------------------------------------

    def run_until(self, time_ms: int) -> None:
        net = self.net
        while self.checker.ok:
            nxt = net.next_time()
            if nxt is None or nxt > time_ms:
                break
            net.run_one()
        net.now = max(net.now, time_ms)

    # -- Byzantine behaviour ---------------------------------------------------------------

    def _rewrite(self, node: SimNode, eff: Broadcast) -> dict[int, bytes] | None:
        """Equivocation: one signed message to half the nodes, a conflicting one to the rest."""
        if eff.channel != CONSENSUS or node.core is None:
            return None
        m = decode_message(eff.payload)
        if m.sender != node.key.public_key:
            return None
        alt: Any = None
        crypto = node.core.crypto
        chain_id = node.core.chain_id
        if isinstance(m, PrePrepare):
            ledger = node.core.ledger
            parent = ledger.state_of_block(m.parent_id)
            block = node.core.app.block_of(m.payload)
            if parent is None or block is None:
                return None
            other = execute(
                parent,
                block.txs[:-1] if block.txs else [],
                time_ms=block.header.time_ms + 1 + self.rng.randrange(1000),
                proposer=node.key.public_key,
                strict=False,
            ).block
            alt = PrePrepare(m.height, m.view, other.block_id, m.parent_id, other.encode())
        elif isinstance(m, Prepare | Commit):
            alt = dataclasses.replace(m, block_id=self.rng.randbytes(32))
        if alt is None:
            return None
        alt_bytes = alt.signed_by(crypto, chain_id).encoded
        others = [n.index for n in self.nodes if n.index != node.index]
        self.rng.shuffle(others)
        half = len(others) // 2
        return {i: (eff.payload if k < half else alt_bytes) for k, i in enumerate(others)}

    def _forge(self, peer: SimNode, blocks: list[CertifiedPayload]) -> list[CertifiedPayload]:
        """Tampered blocks under forged certificates (each must be refused)."""
        assert peer.core is not None
        first = blocks[0]
        block = peer.core.app.block_of(first.payload)
        if block is None:
            return blocks
        ledger = peer.core.ledger
        parent = ledger.store.get_block(block.height - 1)
        if parent is None:
            return blocks
        try:
            parent_state = ledger.head if block.height - 1 == ledger.head.height else None
            if parent_state is None:
                return blocks
            fake = execute(
                parent_state,
                [],
                time_ms=block.header.time_ms + 7,
                proposer=peer.key.public_key,
                strict=False,
            ).block
        except Exception:  # noqa: BLE001 - a forger gives up quietly
            return blocks
        body = commit_vote_body(self.genesis.chain_id, fake.height, 0, fake.block_id)
        own = self.genesis.validators.index_of(peer.key.public_key)
        assert own is not None
        mine = peer.key.sign(Domain.COMMIT, body)
        stranger = self.outsider.sign(Domain.COMMIT, body)
        honest_idx = next(i for i in range(self.cfg.n) if i != own)
        how = self.rng.randrange(3)
        if how == 0:  # one signer repeated up to a quorum
            sigs = tuple((own, mine) for _ in range(self.genesis.validators.quorum))
        elif how == 1:  # a signer outside the set
            sigs = ((own, mine), (self.cfg.n + 3, stranger), (self.cfg.n + 4, stranger))
        else:  # a retired validator's key signing in an honest validator's place
            sigs = ((own, mine), (honest_idx, stranger), ((honest_idx + 1) % self.cfg.n, stranger))
        cert = CommitCertificate(fake.height, 0, fake.block_id, tuple(sorted(sigs)))
        return [CertifiedPayload(fake.encode(), cert)]
