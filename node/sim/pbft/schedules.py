"""Randomized schedules: a safety phase full of faults, then a healed liveness phase.

``random_schedule(seed, n)`` is fully determined by its seed (TigerBeetle VOPR: "a
seed replays the exact run"). The safety phase mixes, at random times: crashes and
restarts of honest nodes, partitions that form and heal, isolating the current
primary, per-link message filters, and up to f Byzantine nodes with random
behaviours from ``node.sim.pbft.byzantine``. The checker runs after every step. Then
everything heals (crashed nodes restart, partitions and filters go) and every honest
node must commit new blocks within a bounded simulated time.

``views`` counts the views the cluster went through: for each epoch, one more than
the highest view any honest replica reached.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from consensus.messages import Commit, Prepare, PrePrepare, ViewChange
from consensus.quorum import max_faulty, primary_key
from consensus.replica import Replica
from node.sim.pbft import byzantine as byz
from node.sim.pbft.cluster import Cluster, ReplicaFactory, SimConfig
from node.sim.pbft.network import LinkModel


@dataclass
class ScheduleResult:
    seed: int
    nodes: int
    views: int
    heights: int
    violations: list[str]
    byzantine: dict[int, str]
    trace: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def describe(self) -> str:
        head = (
            f"seed={self.seed} nodes={self.nodes} byzantine={self.byzantine} "
            f"views={self.views} heights={self.heights}"
        )
        return "\n".join([head, *self.violations[:10], "trace:", *self.trace[-30:]])


def count_views(cluster: Cluster) -> int:
    top: dict[int, int] = {}
    for epoch, view in cluster.views:
        top[epoch] = max(top.get(epoch, 0), view)
    return sum(v + 1 for v in top.values())


def current_primary(cluster: Cluster) -> int | None:
    """The primary of the most advanced honest replica (the one making progress)."""
    live = [r for i in cluster.honest if (r := cluster.nodes[i].replica) is not None]
    if not live:
        return None
    r = max(live, key=lambda r: (r.committed, not r.in_vc, r.view))
    return cluster.key_index[primary_key(r.vset, r.view)]


def random_schedule(
    seed: int,
    n: int = 4,
    *,
    chaos_ms: int = 3000,
    liveness_ms: int | None = None,
    wire: bool | None = None,
    max_byzantine: int | None = None,
    replica_factory: ReplicaFactory = Replica,
) -> ScheduleResult:
    started = time.perf_counter()
    rng = random.Random(seed * 7919 + n)
    f = max_faulty(n)
    # Two flavours: "mixed" faults of every kind, and "churn" (fast links, the primary
    # is hit again and again) which drives many views through the view-change path.
    churn = rng.random() < 0.5
    reconfig = rng.random() < 0.2  # validator-set changes decided during the run
    nbyz = rng.randint(0, f if max_byzantine is None else min(f, max_byzantine))
    faulty = rng.sample(range(n), nbyz)
    behaviours = {i: rng.choice(byz.all_behaviours()) for i in faulty}
    max_delay = rng.choice([5, 10] if churn else [5, 10, 20, 40])
    link = LinkModel(1, max_delay, rng.choice([0.0, 0.0, 0.01, 0.05, 0.1]), rng.choice([0.0, 0.02]))
    view_timeout = max(40, 4 * max_delay)
    cfg = SimConfig(
        n=n,
        spare=1 if reconfig else 0,
        seed=seed,
        window=rng.choice([1, 2, 4]),
        checkpoint_interval=rng.choice([4, 8]),
        view_timeout_ms=view_timeout,
        censor_timeout_ms=40 * view_timeout,
        max_backoff_exp=1 if churn else 3,
        link=link,
        wire=rng.random() < 0.1 if wire is None else wire,
        tx_interval_ms=rng.choice([40, 80]),
        txs_per_tick=rng.choice([1, 3]),
        build_delay_ms=rng.choice([2, 10, 20]),
        idle_propose_ms=10 * view_timeout,
    )
    cluster = Cluster(cfg, byzantine=behaviours, replica_factory=replica_factory)
    if any(isinstance(b, byz.Censor) for b in behaviours.values()):
        cluster.censored_every = 5
    trace = [
        f"config churn={churn} reconfig={reconfig} window={cfg.window} "
        f"K={cfg.checkpoint_interval} timeout={view_timeout} "
        f"link={link} byz={behaviours} wire={cfg.wire}"
    ]
    checker = cluster.checker
    honest = cluster.honest
    now = 0
    while now < chaos_ms and checker.ok:
        now += rng.randint(30, 120) if churn else rng.randint(10, 200)
        cluster.run_until(now, lambda: not checker.ok)
        step = _churn_step(cluster, rng, honest) if churn else _chaos_step(cluster, rng, honest, f)
        if reconfig and rng.random() < 0.08:
            # Keep at most f faulty in the new set: n or n + 1 members of n + 1 keys.
            cluster.pending_change = sorted(rng.sample(range(n + 1), rng.choice([n, n + 1])))
            step += f"; change validators to {cluster.pending_change}"
        trace.append(f"t={now} {step} heights={cluster.heights()}")
    if checker.ok:
        cluster.heal_all()
        trace.append(f"t={cluster.net.now} heal heights={cluster.heights()}")
        before = cluster.heights()
        window = liveness_ms or 12 * (view_timeout << cfg.max_backoff_exp) + 2000
        up = [i for i in honest if cluster.nodes[i].up]

        def done() -> bool:  # every honest node committed two new blocks: liveness shown
            return not checker.ok or all(cluster.nodes[i].height >= before[i] + 2 for i in up)

        cluster.run_until(cluster.net.now + window, done)
        checker.check_liveness(before, cluster.heights(), up, window)
        trace.append(f"t={cluster.net.now} end heights={cluster.heights()}")
    return ScheduleResult(
        seed,
        n,
        count_views(cluster),
        len(checker.agreed),
        list(checker.violations),
        {i: repr(b) for i, b in behaviours.items()},
        trace,
        time.perf_counter() - started,
    )


def _churn_step(cluster: Cluster, rng: random.Random, honest: list[int]) -> str:
    """Hit the current primary: isolate it (maybe with a buddy), or crash it."""
    down = [i for i in honest if not cluster.nodes[i].up]
    for i in down:
        cluster.restart(i)
    primary = current_primary(cluster)
    if primary is None:
        return "noop"
    n = len(cluster.nodes)
    if rng.random() < 0.3 and primary in honest:
        cluster.crash(primary)
        return f"restart {down}, crash primary {primary}"
    others = [i for i in range(n) if i != primary]
    buddy = rng.sample(others, rng.randint(0, max_faulty(n) - 1))  # the rest keep a quorum
    group = [primary, *buddy]
    cluster.net.partition([group, [i for i in others if i not in group]])
    return f"restart {down}, isolate primary {primary} with {buddy}"


def _chaos_step(cluster: Cluster, rng: random.Random, honest: list[int], f: int) -> str:
    n = len(cluster.nodes)
    down = [i for i in honest if not cluster.nodes[i].up]
    up = [i for i in honest if cluster.nodes[i].up]
    primary = current_primary(cluster)
    roll = rng.random()
    if roll < 0.10 and len(down) < f + 1 and up:
        victim = rng.choice(up)
        cluster.crash(victim)
        return f"crash {victim}"
    if roll < 0.20 and len(down) < f + 1 and primary in up:
        cluster.crash(primary)
        return f"crash primary {primary}"
    if roll < 0.35 and down:
        back = rng.choice(down)
        cluster.restart(back)
        return f"restart {back}"
    if roll < 0.45:
        nodes = list(range(n))
        rng.shuffle(nodes)
        cut = rng.randint(1, n - 1)
        cluster.net.partition([nodes[:cut], nodes[cut:]])
        return f"partition {sorted(nodes[:cut])} | {sorted(nodes[cut:])}"
    if roll < 0.65 and primary is not None and primary < n:
        others = [i for i in range(n) if i != primary]
        buddy = rng.sample(others, rng.randint(0, 1))
        group = [primary, *buddy]
        cluster.net.partition([group, [i for i in others if i not in group]])
        return f"isolate primary {primary} with {buddy}"
    if roll < 0.85:
        cluster.net.heal()
        return "heal partition"
    if roll < 0.93:
        kind = rng.choice([PrePrepare, Prepare, Commit, ViewChange])
        a, b = rng.sample(range(n), 2)

        def drop(s: int, d: int, m: object, a: int = a, b: int = b, kind: type = kind) -> bool:
            return s == a and d == b and isinstance(m, kind)

        cluster.net.filters.append(drop)
        return f"drop {kind.__name__} {a}->{b}"
    if roll < 0.97:
        cluster.net.filters.clear()
        return "clear filters"
    return "noop"


def run_many(seeds: range | list[int], n: int, **kwargs: object) -> tuple[int, int, list[str]]:
    """Run schedules; return (schedules, views, failure descriptions)."""
    views = 0
    failures: list[str] = []
    count = 0
    for seed in seeds:
        result = random_schedule(seed, n, **kwargs)  # type: ignore[arg-type]
        count += 1
        views += result.views
        if result.violations:
            failures.append(result.describe())
    return count, views, failures
