"""Scale runs of the whole-node simulator: messages, bytes and latencies against n.

``run_scale(ScaleConfig(n=16, observers=100))`` boots n validators (and observers) of
the product's node core in ``cluster.World`` over a WAN-like link (Hong Kong <->
Shenzhen: 5-20 ms one way, uniform jitter; optionally some members far away), feeds a
steady client load of real signed ATTESTs to random validators, and measures over a
steady window:

- messages and bytes per committed block, by message kind and per node (sent and
  received), by the real encoded sizes (``node.sim.traffic``);
- commit latency: from the primary's PRE-PREPARE leaving it to each validator's commit
  of that height (simulated ms);
- then crashes the current primary (a power cut) and measures the view change: until
  the first validator enters a new view, and until the first commit by a validator in
  its new view.

Production chain parameters (``ledger.consortium.ChainParams`` defaults: view timeout
2 s, pipeline window 4, checkpoints every 16) unless the config says otherwise.
Everything runs on simulated time, so a run is determined by its config; wall time
only says what the simulation cost (real Ed25519 in every node).
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass, field

from ledger.consortium import ChainParams
from ledger.testchain import CHAIN_ID, GENESIS_TIME_MS
from ledger.types import Attest, Block, Transaction
from node.sim.cluster import World, WorldConfig
from node.sim.pbft.network import LinkModel
from node.sim.traffic import Snapshot


@dataclass
class ScaleConfig:
    n: int = 4
    observers: int = 0
    seed: int = 1
    tx_per_s: int = 200  # the client's steady load
    batch: int = 10  # transactions per client request
    warmup_ms: int = 1000
    steady_ms: int = 3000
    view_change: bool = True
    vc_limit_ms: int = 20_000  # give up waiting for the new view's first commit
    link: LinkModel = field(default_factory=lambda: LinkModel(5, 20))
    far: int = 0  # members (the last validators) far away
    far_ms: int = 140  # added one way per far end: ~150 ms one way from HK/SZ
    params: ChainParams = field(default_factory=ChainParams)


@dataclass
class ScaleResult:
    n: int
    observers: int
    blocks: int  # committed in the steady window
    txs_per_block: float
    tx_bytes: int  # one encoded ATTEST
    msgs_per_block: float  # every frame sent, to every destination
    bytes_per_block: float
    by_kind: dict[str, tuple[float, float]]  # label -> (msgs, bytes) per block
    validator_sent_bytes_per_block: float  # mean over validators
    validator_recv_bytes_per_block: float
    primary_sent_bytes_per_block: float  # the busiest validator
    observer_recv_bytes_per_block: float  # mean over observers
    observer_recv_msgs_per_block: float
    commit_ms_p50: float
    commit_ms_p99: float
    view_entered_ms: float | None  # primary crash -> first validator in a new view
    view_change_ms: float | None  # primary crash -> first commit in the new view
    view_change_bytes: int  # VIEW-CHANGE + NEW-VIEW bytes sent
    new_view_bytes: int  # of which NEW-VIEW (the new primary's, to every peer)
    violations: list[str]
    agreed_heights: int  # heights the agreement checker saw committed (all the same)
    heights: list[int | None]  # each node's committed height at the end (None: down)
    sim_ms: int
    wall_s: float


def make_attests(count: int, seed: int, world: World) -> list[Transaction]:
    """``count`` distinct ATTESTs by the issuer (szcredit), as clients sign them."""
    key = world.consortium.member_keys["szcredit"]
    expiry = world.genesis.params.tx_ttl_heights // 2
    out = []
    for i in range(count):
        doc = hashlib.sha256(b"%d/%d" % (seed, i)).digest()
        p = Attest("credit-report", doc, GENESIS_TIME_MS, 0, b"")
        out.append(Transaction(CHAIN_ID, key.public_key, i + 1, expiry, p).signed(key))
    return out


class _Client:
    """A steady load: ``batch`` transactions every ``interval`` ms to a random
    validator that is up, on the world's scheduler."""

    def __init__(self, world: World, cfg: ScaleConfig, txs: list[Transaction]) -> None:
        self.world, self.cfg, self.txs = world, cfg, txs
        self.rng = random.Random(cfg.seed ^ 0xC11E)
        self.interval = max(1, round(cfg.batch * 1000 / cfg.tx_per_s))
        self.sent = 0
        world.net.after(self.interval, self.tick)

    def tick(self) -> None:
        world = self.world
        up = [x.index for x in world.nodes if x.core is not None and not x.observer]
        chunk = self.txs[self.sent : self.sent + self.cfg.batch]
        if up and chunk:
            self.sent += len(chunk)
            world.submit_txs(self.rng.choice(up), chunk)
        world.net.after(self.interval, self.tick)


def _pct(values: list[int], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return float(s[min(len(s) - 1, int(p * len(s)))])


def _height(world: World, validators: list[int], pick: str = "max") -> int:
    hs = [c.ledger.height for i in validators if (c := world.nodes[i].core) is not None]
    return max(hs) if pick == "max" else min(hs)


def run_scale(cfg: ScaleConfig) -> ScaleResult:
    started = time.perf_counter()
    world = World(
        WorldConfig(
            seed=cfg.seed,
            n=cfg.n,
            link=cfg.link,
            params=cfg.params,
            observers=cfg.observers,
            check_observer_mempools=False,
        )
    )
    for i in range(cfg.n - cfg.far, cfg.n):
        world.net.extra_delay_ms[i] = cfg.far_ms
    validators = list(range(cfg.n))
    total_ms = cfg.warmup_ms + cfg.steady_ms + (cfg.vc_limit_ms if cfg.view_change else 0)
    txs = make_attests(cfg.tx_per_s * total_ms // 1000 + cfg.batch, cfg.seed, world)
    _Client(world, cfg, txs)
    traffic = world.traffic

    world.run_until(cfg.warmup_ms)
    t0, s0, h0 = world.net.now, traffic.snapshot(), _height(world, validators)
    world.run_until(cfg.warmup_ms + cfg.steady_ms)
    t1, s1, h1 = world.net.now, traffic.snapshot(), _height(world, validators)
    blocks = max(1, h1 - h0)
    d: Snapshot = s1.minus(s0)
    core0 = world.nodes[0].core
    assert core0 is not None
    store = core0.ledger.store
    committed_txs = 0
    for h in range(h0 + 1, min(h1, core0.ledger.height) + 1):
        raw = store.get_block_bytes(h)
        if raw is not None:
            committed_txs += len(Block.decode(raw).tx_ids)

    latencies = [
        at - traffic.proposed[h]
        for h, by_node in traffic.commits.items()
        if h in traffic.proposed and t0 <= traffic.proposed[h] < t1
        for i, at in by_node.items()
        if i < cfg.n
    ]
    per = float(blocks)
    obs = range(cfg.n, cfg.n + cfg.observers)
    result = ScaleResult(
        n=cfg.n,
        observers=cfg.observers,
        blocks=blocks,
        txs_per_block=committed_txs / per,
        tx_bytes=len(txs[0].encoded),
        msgs_per_block=sum(d.msgs.values()) / per,
        bytes_per_block=sum(d.size.values()) / per,
        by_kind={k: (d.msgs[k] / per, d.size[k] / per) for k in sorted(d.msgs)},
        validator_sent_bytes_per_block=sum(d.sent_bytes[i] for i in validators) / cfg.n / per,
        validator_recv_bytes_per_block=sum(d.recv_bytes[i] for i in validators) / cfg.n / per,
        primary_sent_bytes_per_block=max(d.sent_bytes[i] for i in validators) / per,
        observer_recv_bytes_per_block=(
            sum(d.recv_bytes[i] for i in obs) / len(obs) / per if cfg.observers else 0.0
        ),
        observer_recv_msgs_per_block=(
            sum(d.recv_msgs[i] for i in obs) / len(obs) / per if cfg.observers else 0.0
        ),
        commit_ms_p50=_pct(latencies, 0.50),
        commit_ms_p99=_pct(latencies, 0.99),
        view_entered_ms=None,
        view_change_ms=None,
        view_change_bytes=0,
        new_view_bytes=0,
        violations=[],
        agreed_heights=0,
        heights=[],
        sim_ms=0,
        wall_s=0.0,
    )
    if cfg.view_change:
        _view_change(world, cfg, result)
    result.violations = list(world.checker.violations)
    result.agreed_heights = max(world.checker.agreed, default=0)
    result.heights = [x.core.ledger.height if x.core else None for x in world.nodes]
    result.sim_ms = world.net.now
    result.wall_s = time.perf_counter() - started
    return result


def _view_change(world: World, cfg: ScaleConfig, result: ScaleResult) -> None:
    """Power-cut the primary of the current view; time the view change."""
    honest = [i for i in range(cfg.n) if world.nodes[i].core is not None]
    views = [r.view for i in honest if (r := world.nodes[i].core.replica) is not None]  # type: ignore[union-attr]
    view = max(views)
    primary = view % cfg.n
    traffic = world.traffic
    before = traffic.snapshot()
    n_views = len(traffic.views)
    world.crash(primary)
    t_crash = world.net.now

    def new_view_commit() -> int | None:
        """When the first validator committed a height after entering a view > view."""
        entered: dict[int, int] = {}
        for at, node, v in traffic.views[n_views:]:
            if v > view and node < cfg.n:
                entered.setdefault(node, at)
        best = None
        for by_node in traffic.commits.values():
            for node, at in by_node.items():
                if node in entered and at >= entered[node] and at >= t_crash:
                    best = at if best is None else min(best, at)
        return best

    deadline = t_crash + cfg.vc_limit_ms
    found = None
    while world.net.now < deadline and world.checker.ok:
        world.run_until(min(deadline, world.net.now + 50))
        found = new_view_commit()
        if found is not None:
            break
    firsts = [at for at, node, v in traffic.views[n_views:] if v > view and node < cfg.n]
    result.view_entered_ms = float(min(firsts) - t_crash) if firsts else None
    result.view_change_ms = float(found - t_crash) if found is not None else None
    d = traffic.snapshot().minus(before)
    result.view_change_bytes = d.size["view_change"] + d.size["new_view"]
    result.new_view_bytes = d.size["new_view"]


@dataclass
class Sizing:
    """Per-second load of one node in a consortium of ``n`` validators and ``observers``
    at ``tx_per_s`` in ``blocks_per_s`` blocks, from the measured message sizes (see
    docs/PERFORMANCE.md, "Sizing a consortium of 50 institutions"). Bytes per second."""

    validator_recv: float
    validator_sent: float  # a backup, on average (its share of gossip and block serving)
    primary_sent: float
    observer_recv: float
    verifies_per_block: int  # signature checks per validator per height
    votes_per_block: int  # messages among validators per height (all to all)


def sizing(
    n: int,
    observers: int,
    tx_per_s: float,
    blocks_per_s: float,
    measured: ScaleResult,
    checkpoint_interval: int = 16,
) -> Sizing:
    """The model: a client's transaction is gossiped once by the validator that took it
    to every peer; the primary sends the block (all its transactions) to every peer;
    every validator sends a PREPARE and a COMMIT to every peer, a CHECKPOINT every
    ``checkpoint_interval`` heights; each observer fetches each block once from some
    validator. Sizes (transaction, votes, block overhead) are ``measured``'s."""
    size = {k: (b / m if m else 0.0) for k, (m, b) in measured.by_kind.items()}
    tx = measured.tx_bytes
    txs_per_block = tx_per_s / blocks_per_s
    overhead = size["pre_prepare"] - measured.txs_per_block * tx  # header, signature
    block = txs_per_block * tx + overhead
    # a CHECKPOINT is about a PREPARE's size (171 B and 172 B): a short window may hold none
    checkpoint = size.get("checkpoint", size["prepare"])
    votes = size["prepare"] + size["commit"] + checkpoint / checkpoint_interval
    peers = n - 1 + observers
    gossip_in = tx_per_s * tx
    val_recv = gossip_in * (n - 1) / n + blocks_per_s * (block + (n - 1) * votes)
    fetch_out = observers * blocks_per_s * block / n
    val_sent = gossip_in / n * peers + blocks_per_s * peers * votes + fetch_out
    prim_sent = val_sent + blocks_per_s * peers * block
    obs_recv = gossip_in + blocks_per_s * (2 * block + n * votes)
    q = 2 * n // 3 + 1
    verifies = 1 + 2 * (n - 1) + q + (n - 1) // checkpoint_interval
    return Sizing(val_recv, val_sent, prim_sent, obs_recv, verifies, 2 * n * (n - 1) + n - 1)
