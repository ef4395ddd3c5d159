"""Named scenarios in the deterministic simulator, each checking one claim of the paper.

References: Castro & Liskov, OSDI'99 §4 and TOCS'02 §4 (normal case §4.2, garbage
collection §4.3, view changes §4.5, liveness §4.5.2), §5.3 (state transfer). The
external checker (node/sim/pbft/checker.py) runs after every step of every node in every
test: agreement, validity, certificates, in-order exactly-once delivery, no honest
equivocation, verifiable evidence only against faulty nodes.
"""

from __future__ import annotations

import pytest

from consensus.messages import Commit, Prepare, PrePrepare
from node.sim.pbft import byzantine as byz
from node.sim.pbft.app import parse
from node.sim.pbft.cluster import Cluster, SimConfig
from node.sim.pbft.network import LinkModel


def assert_ok(cluster: Cluster) -> None:
    assert cluster.checker.ok, f"seed={cluster.cfg.seed}\n" + "\n".join(cluster.checker.violations)


def agreed(cluster: Cluster, height: int) -> bytes:
    return cluster.checker.agreed[height]


def test_normal_case_n4_and_n7_without_faults() -> None:
    """§4.2: with no faults every replica commits the same blocks in order."""
    for n in (4, 7):
        cluster = Cluster(SimConfig(n=n, seed=n))
        assert cluster.run_until_height(50, 20_000), cluster.heights()
        assert_ok(cluster)
        assert len(cluster.views) == 1, "no view change without faults"


def test_primary_crashes_after_some_but_not_all_replicas_prepared() -> None:
    """§4.5: a request prepared at some correct replica survives the view change.

    Replica 1 becomes prepared at height h, replica 2 only pre-prepares it, replica 3
    never sees it, nobody commits; then the primary crashes. The NEW-VIEW built from
    any quorum of VIEW-CHANGEs must re-propose exactly that block at h.
    """
    cluster = Cluster(SimConfig(n=4, seed=11, window=1))
    assert cluster.run_until_height(3, 5000)
    h = max(cluster.heights().values()) + 1
    seen: dict[str, bytes] = {}

    def cut(src: int, dst: int, m: object) -> bool:
        if isinstance(m, PrePrepare) and m.height == h:
            seen["block"] = m.block_id
            return dst == 3
        if isinstance(m, Prepare) and m.height == h:
            return dst != 1
        return isinstance(m, Commit) and m.height == h

    cluster.net.filters.append(cut)

    def one_prepared() -> bool:
        slot = cluster.replica(1).slots.get(h)
        return slot is not None and slot.prepared is not None

    cluster.run_until(cluster.net.now + 5000, one_prepared)
    assert one_prepared() and cluster.replica(2).slots[h].prepared is None
    assert h not in cluster.replica(3).slots or cluster.replica(3).slots[h].accepted is None
    cluster.crash(0)
    cluster.net.filters.clear()
    assert cluster.run_until_height(h + 2, 20_000, nodes=[1, 2, 3]), cluster.heights()
    assert_ok(cluster)
    assert agreed(cluster, h) == seen["block"], "the prepared block was re-proposed"
    assert all(cluster.replica(i).view >= 1 for i in (1, 2, 3))


def test_view_change_during_a_view_change() -> None:
    """§4.5.2: if the new primary fails too, the timer expires and replicas move to
    v + 2 (with a doubled timeout) -- a view change during a view change."""
    cluster = Cluster(SimConfig(n=7, seed=5))
    assert cluster.run_until_height(5, 5000)
    cluster.crash(0)  # primary of view 0
    cluster.crash(1)  # primary of view 1: the first view change cannot complete
    before = cluster.heights()
    assert cluster.run_until_height(before[2] + 5, 30_000, nodes=range(2, 7)), cluster.heights()
    assert_ok(cluster)
    views = {cluster.replica(i).view for i in range(2, 7)}
    assert min(views) >= 2, views
    stats = cluster.stats()
    assert stats.get("view_change_timeouts", 0) >= 1, stats
    cluster.restart(0)
    cluster.restart(1)
    assert cluster.run_until_height(max(cluster.heights().values()) + 3, 30_000)
    assert_ok(cluster)


@pytest.mark.parametrize("n", [4, 7])
def test_partition_isolating_the_primary_with_one_replica(n: int) -> None:
    """§4.5.2 liveness: with n = 4 neither side has a quorum, so nothing commits until
    the heal; with n = 7 the majority changes view and keeps going. After the heal
    every replica commits new blocks."""
    cluster = Cluster(SimConfig(n=n, seed=21 + n, link=LinkModel(1, 10, 0.02)))
    assert cluster.run_until_height(5, 5000)
    cluster.net.partition([[0, 1], list(range(2, n))])
    cluster.run_for(3000)
    during = cluster.heights()
    cluster.run_for(2000)
    if n == 4:
        assert (
            cluster.heights() == during
            or max(cluster.heights().values()) <= max(during.values()) + 1
        ), "no quorum on either side"
    else:
        assert min(cluster.heights()[i] for i in range(2, n)) > max(during.values()), (
            "the majority side keeps committing"
        )
    cluster.net.heal()
    target = max(cluster.heights().values()) + 5
    assert cluster.run_until_height(target, 30_000), cluster.heights()
    assert_ok(cluster)


def test_restart_safety_under_repeated_crashes() -> None:
    """A replica restored from its signing record never signs a conflicting message
    (the checker's no-honest-equivocation invariant), here with an equivocating
    primary tempting replicas that forgot what they signed."""
    cluster = Cluster(
        SimConfig(n=4, seed=33, link=LinkModel(1, 15, 0.05, 0.02)), byzantine={0: byz.Equivocate()}
    )
    rng = cluster.rng
    crashed = 0
    for _ in range(60):
        cluster.run_for(rng.randint(20, 150))
        victim = rng.choice([1, 2, 3])
        cluster.crash(victim)
        crashed += 1
        cluster.run_for(rng.randint(0, 40))
        cluster.restart(victim)
        assert_ok(cluster)
    assert cluster.run_until_height(max(cluster.heights().values()) + 3, 30_000)
    assert_ok(cluster)
    assert crashed == 60 and sum(len(s) for s in cluster.checker.signed.values()) > 500
    assert cluster.checker.evidence_seen > 0, "the equivocation was reported as evidence"


def test_restarted_backup_with_record_refuses_a_conflicting_proposal() -> None:
    """Crash a backup right after it sent PREPARE at (h, v); restart it; the primary
    then proposes a different block at (h, v). The backup must not prepare it."""
    cluster = Cluster(SimConfig(n=4, seed=3, window=1), byzantine={0: byz.Behaviour()})
    assert cluster.run_until_height(3, 5000)
    node = cluster.nodes[2]
    replica = cluster.replica(2)
    h = replica.committed + 1
    cluster.run_until(
        cluster.net.now + 2000, lambda: replica.guard.has_vote(Prepare.KIND, h, replica.view)
    )
    record = node.record
    assert record is not None and any(v.height == h for v in record.votes)
    cluster.crash(2)
    cluster.restart(2)
    restored = cluster.replica(2)
    prepared = next(v for v in record.votes if v.height == h and v.kind is Prepare.KIND)
    other = parse(restored.slots[h].payloads[prepared.block_id]) if h in restored.slots else None
    assert other is not None, "the accepted payload was persisted with PersistBlock"
    from consensus.api import MessageReceived
    from node.sim.pbft.app import make_payload

    payload = make_payload(h, prepared.parent_id, 0, 12345, ())
    conflicting = PrePrepare(
        h,
        prepared.view,
        parse(payload).block_id,  # type: ignore[union-attr]
        prepared.parent_id,
        payload,
    ).signed_by(cluster.nodes[0].crypto, "sim-chain")
    actions = restored.step(MessageReceived(conflicting))
    assert not any(getattr(a, "message", None).__class__ is Prepare for a in actions)
    assert restored.stats.get("guard_refused", 0) + restored.stats.get("evidence", 0) >= 1


def test_checkpoint_garbage_collection_keeps_memory_bounded() -> None:
    """§4.3: stable checkpoints discard old protocol state; run long and measure."""
    cfg = SimConfig(n=4, seed=8, checkpoint_interval=8, window=4, link=LinkModel(1, 10, 0.03, 0.02))
    cluster = Cluster(cfg)
    samples: list[dict[str, int]] = []
    for _ in range(120):
        cluster.run_for(250)
        for i in range(4):
            samples.append(cluster.replica(i).memory_sizes())
        if cluster.checker.commits and len(cluster.checker.agreed) > 1500:
            break
    assert_ok(cluster)
    assert len(cluster.checker.agreed) > 1000, len(cluster.checker.agreed)
    log = cluster.config.log_size
    limits = {
        "slots": log,
        "certs": log,
        "committed_ids": log + 1,
        "view_changes": 4 * 7,
        "checkpoints": 4 * 5 + 4,
        "prepares": 4 * log,
        "commits": 3 * 4 * log,
        "payloads": 4 * log,
        "record": 4 * log + 4,
        "fetched": 256,
        "evidence_keys": 4096,
        "answered": 4 * 4 * log,
        "pending_txs": 5000,
    }
    worst = {k: max(s[k] for s in samples) for k in samples[0]}
    for key, limit in limits.items():
        assert worst[key] <= limit, (key, worst[key], limit)
    half = len(samples) // 2
    for key in ("slots", "prepares", "commits", "certs", "record"):
        late = max(s[key] for s in samples[half:])
        early = max(s[key] for s in samples[:half])
        assert late <= max(early, limits[key]), (key, early, late)
    assert cluster.stats()["stable_checkpoints"] >= 4 * (1000 // 8) - 8


def test_catch_up_of_a_replica_partitioned_past_several_checkpoints() -> None:
    """§4.3/§5.3: a replica that missed several checkpoints learns of a stable one,
    fetches the certified blocks, verifies them and rejoins the protocol."""
    cluster = Cluster(SimConfig(n=4, seed=9, checkpoint_interval=4))
    assert cluster.run_until_height(3, 5000)
    cluster.net.partition([[0, 1, 2], [3]])
    assert cluster.run_until_height(cluster.nodes[3].height + 30, 30_000, nodes=[0, 1, 2])
    behind = cluster.nodes[3].height
    cluster.net.heal()
    assert cluster.run_until_height(behind + 40, 30_000), cluster.heights()
    assert_ok(cluster)
    stats = cluster.replica(3).stats
    assert stats.get("fetch_requests", 0) >= 1 and stats.get("stable_checkpoints", 0) >= 1
    # While cut off it moved to a view change the others never joined; like in PBFT it
    # follows by certificates until the next view change, then votes again.
    cluster.crash(0)
    top = cluster.nodes[3].height
    assert cluster.run_until_height(top + 10, 20_000, nodes=[1, 2, 3]), cluster.heights()
    late = cluster.nodes[1].certs[-5:]
    assert any(3 in [i for i, _ in c.signatures] for c in late), "replica 3 votes again"
    assert_ok(cluster)


def test_validator_set_change_at_a_height() -> None:
    """Quorums and primaries come from the set in force at each height: replace
    validator 0 by validator 4 (a new node that starts outside the set), then add 0
    back (n = 5, quorum 4). The checker verifies every certificate against the set in
    force at its height."""
    cluster = Cluster(SimConfig(n=4, spare=1, seed=12, change_delay=6))
    assert cluster.run_until_height(4, 5000)
    cluster.pending_change = [1, 2, 3, 4]
    assert cluster.run_until_height(25, 20_000, nodes=[1, 2, 3, 4]), cluster.heights()
    ref = cluster.checker.reference
    start = ref.schedule[1][0]
    new_set = ref.validators_at(start)
    assert new_set is not None
    assert [v.member_id for v in new_set.validators] == ["v001", "v002", "v003", "v004"]
    cert = cluster.nodes[1].certs[start]  # height start + 1
    assert {i for i, _ in cert.signatures} <= {0, 1, 2, 3}
    first_new = parse(cluster.nodes[1].chain[start - 1])
    assert first_new is not None and first_new.proposer == 1, "primary of view 0 of the new set"
    cluster.pending_change = [0, 1, 2, 3, 4]
    assert cluster.run_until_height(60, 30_000, nodes=[0, 1, 2, 3, 4]), cluster.heights()
    assert_ok(cluster)
    grown = ref.validators_at(59)
    assert len(ref.schedule) == 3 and grown is not None and grown.n == 5
    last = cluster.nodes[4].certs[-1]
    assert len(last.signatures) >= 4, "quorum of 5 is 4"
    assert cluster.replica(4).me_index is not None


@pytest.mark.parametrize("behaviour", byz.all_behaviours(), ids=repr)
@pytest.mark.parametrize("n", [4, 7])
def test_up_to_f_byzantine_replicas(behaviour: byz.Behaviour, n: int) -> None:
    """Safety with f Byzantine replicas of each kind, and liveness once links are fair."""
    f = (n - 1) // 3
    faulty = {i: behaviour for i in range(f)}  # includes the first primaries
    cluster = Cluster(
        SimConfig(
            n=n,
            seed=40 + n,
            link=LinkModel(1, 10, 0.02, 0.01),
            censor_timeout_ms=1000,
            tx_interval_ms=100,
            txs_per_tick=4,
        ),
        byzantine=faulty,
    )
    if isinstance(behaviour, byz.Censor):
        cluster.censored_every = 3
    cluster.run_for(4000)
    assert_ok(cluster)
    before = cluster.heights()
    honest = cluster.honest
    assert cluster.run_until_height(max(before[i] for i in honest) + 5, 30_000), cluster.heights()
    assert_ok(cluster)
    if isinstance(behaviour, byz.Equivocate):
        assert cluster.checker.evidence_seen > 0
    if isinstance(behaviour, byz.Censor):
        # Each censoring primary is caught within 2 censor timeouts; f of them in a row.
        cluster.run_for(2 * 1000 * (f + 1) + 2000)
        old = [
            tx
            for tx in cluster.uncommitted
            if tx[:1] == b"\xcc" and int.from_bytes(tx[1:], "big") < cluster.tx_counter - 200
        ]
        assert not old, f"{len(old)} censored transactions never committed"


def test_cluster_over_the_wire_encoding() -> None:
    """Every message round-trips through the canonical codec between nodes."""
    cluster = Cluster(SimConfig(n=4, seed=14, wire=True, link=LinkModel(1, 20, 0.05, 0.02)))
    cluster.run_for(1000)
    cluster.crash(0)
    assert cluster.run_until_height(max(cluster.heights().values()) + 5, 20_000, nodes=[1, 2, 3])
    assert_ok(cluster)


@pytest.mark.parametrize("n", [4, 7])
def test_no_message_storms(n: int) -> None:
    """Helping and answering retransmissions must not echo: over a long lossy,
    duplicating run, messages per committed height stay near the protocol's cost
    (one PRE-PREPARE, n PREPAREs and n COMMITs broadcast, n/K CHECKPOINTs)."""
    counts: dict[str, int] = {}
    cluster = Cluster(
        SimConfig(n=n, seed=61, checkpoint_interval=8, link=LinkModel(1, 20, 0.02, 0.02))
    )
    deliver = cluster._deliver

    def counting(src: int, dst: int, message: object) -> None:
        name = type(message).__name__
        counts[name] = counts.get(name, 0) + 1
        deliver(src, dst, message)  # type: ignore[arg-type]

    cluster._deliver = counting  # type: ignore[method-assign]
    cluster.run_until(8000)
    assert_ok(cluster)
    heights = len(cluster.checker.agreed)
    assert heights > 300
    per_height = {k: v / heights for k, v in counts.items()}
    fanout = n * (n - 1)
    assert per_height["Commit"] < 1.3 * fanout, per_height
    assert per_height["Prepare"] < 1.3 * fanout, per_height
    assert per_height.get("Checkpoint", 0) < 2.0 * fanout / 8, per_height
