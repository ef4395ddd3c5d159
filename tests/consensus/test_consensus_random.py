"""Randomized schedules: many seeds of faults, and hypothesis-driven fault sequences.

VOPR style (TigerBeetle): each seed fully determines a run -- a safety phase full of
crashes, restarts, partitions, message filters and up to f Byzantine replicas, then a
healed liveness phase. The external checker runs after every step. The suite runs at
least ``TARGET_VIEWS`` simulated views in total (n = 4 and n = 7) and prints the
count; a failure prints the seed and the schedule's trace so it can be replayed with
``node.sim.pbft.schedules.random_schedule(seed, n)`` or
``python scripts/soak_consensus.py --seed SEED --nodes N``.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from consensus.messages import Commit, Prepare, PrePrepare, ViewChange
from node.sim.pbft import byzantine as byz
from node.sim.pbft.cluster import Cluster, SimConfig
from node.sim.pbft.network import LinkModel
from node.sim.pbft.schedules import ScheduleResult, random_schedule

TARGET_VIEWS = 10_000
MAX_SCHEDULES = 4000
WORKERS = 2  # CI runs on two cores


def _seeds() -> Iterator[tuple[int, int]]:
    seed = 0
    while True:
        yield seed, 4
        if seed % 6 == 0:  # n = 7 costs ~4x more per view: fewer, but always some
            yield seed, 7
        seed += 1


def _run(job: tuple[int, int]) -> ScheduleResult:
    return random_schedule(job[0], job[1])


def test_randomized_schedules_n4_n7_total_views(capsys: pytest.CaptureFixture[str]) -> None:
    views = schedules = heights = 0
    by_n = {4: 0, 7: 0}
    failures: list[str] = []
    jobs = _seeds()
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=WORKERS, mp_context=ctx) as pool:
        while views < TARGET_VIEWS and schedules < MAX_SCHEDULES and not failures:
            batch = [next(jobs) for _ in range(16)]
            for result in pool.map(_run, batch):  # in order: the seeds run are deterministic
                schedules += 1
                views += result.views
                heights += result.heights
                by_n[result.nodes] += result.views
                if result.violations:
                    failures.append(result.describe())
    with capsys.disabled():
        print(
            f"\nconsensus random schedules: {schedules} schedules, {views} views "
            f"(n=4: {by_n[4]}, n=7: {by_n[7]}), {heights} heights committed"
        )
    assert not failures, "\n\n".join(failures[:3])
    assert views >= TARGET_VIEWS


def test_wire_encoded_schedules() -> None:
    """A few schedules with every message round-tripped through the codec."""
    for seed in range(6):
        result = random_schedule(10_000 + seed, 4, wire=True)
        assert not result.violations, result.describe()


class ClusterMachine(RuleBasedStateMachine):
    """Hypothesis chooses the fault sequence; the checker is an invariant."""

    cluster: Cluster

    @initialize(
        seed=st.integers(0, 2**32 - 1),
        n=st.sampled_from([4, 7]),
        loss=st.sampled_from([0.0, 0.02, 0.1]),
        dup=st.sampled_from([0.0, 0.05]),
        behaviour=st.sampled_from([None, *range(len(byz.all_behaviours()))]),
        window=st.sampled_from([1, 4]),
    )
    def setup(
        self, seed: int, n: int, loss: float, dup: float, behaviour: int | None, window: int
    ) -> None:
        f = (n - 1) // 3
        faulty = {} if behaviour is None else {i: byz.all_behaviours()[behaviour] for i in range(f)}
        self.cluster = Cluster(
            SimConfig(
                n=n,
                seed=seed,
                window=window,
                checkpoint_interval=4,
                view_timeout_ms=60,
                max_backoff_exp=3,
                link=LinkModel(1, 10, loss, dup),
                tx_interval_ms=40,
            ),
            byzantine=faulty,
        )
        self.f = f
        self.seed = seed

    def honest_up(self) -> list[int]:
        return [i for i in self.cluster.honest if self.cluster.nodes[i].up]

    @rule(ms=st.integers(5, 400))
    def run(self, ms: int) -> None:
        self.cluster.run_for(ms)

    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        down = len(self.cluster.honest) - len(self.honest_up())
        if self.honest_up() and down <= self.f:
            self.cluster.crash(data.draw(st.sampled_from(self.honest_up())))

    @rule(data=st.data())
    def restart(self, data: st.DataObject) -> None:
        down = [n.index for n in self.cluster.nodes if not n.up]
        if down:
            self.cluster.restart(data.draw(st.sampled_from(down)))

    @rule(data=st.data())
    def partition(self, data: st.DataObject) -> None:
        nodes = list(range(self.cluster.cfg.n))
        side = data.draw(st.sets(st.sampled_from(nodes), min_size=1, max_size=len(nodes) - 1))
        self.cluster.net.partition([sorted(side), [i for i in nodes if i not in side]])

    @rule()
    def heal(self) -> None:
        self.cluster.net.heal()

    @rule(
        kind=st.sampled_from([PrePrepare, Prepare, Commit, ViewChange]),
        src=st.integers(0, 6),
        dst=st.integers(0, 6),
    )
    def drop(self, kind: type, src: int, dst: int) -> None:
        self.cluster.net.filters.append(
            lambda s, d, m: s == src and d == dst and isinstance(m, kind)
        )

    @invariant()
    def safe(self) -> None:
        checker = self.cluster.checker
        assert checker.ok, f"seed={self.seed}\n" + "\n".join(checker.violations)

    def teardown(self) -> None:
        cluster = self.cluster
        cluster.heal_all()
        before = cluster.heights()
        up = self.honest_up()
        cluster.run_until(
            cluster.net.now + 20_000,
            lambda: all(cluster.nodes[i].height >= before[i] + 2 for i in up),
        )
        cluster.checker.check_liveness(before, cluster.heights(), up, 20_000)
        assert cluster.checker.ok, f"seed={self.seed}\n" + "\n".join(cluster.checker.violations)


TestClusterMachine = ClusterMachine.TestCase
TestClusterMachine.settings = settings(
    max_examples=25, stateful_step_count=20, deadline=None, suppress_health_check=list(HealthCheck)
)
