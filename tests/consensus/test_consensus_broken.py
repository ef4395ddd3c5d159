"""The checker catches deliberately broken replicas (so a green suite means something).

Two of PBFT's load-bearing rules are removed in turn (tests/consensus/broken.py):
quorum intersection (TOCS'02 §4.1: certificates need 2f + 1) and carrying prepared
certificates through view changes (§4.5.1: the P set in VIEW-CHANGE). Each scenario
is also run with the correct replica, which must pass it.
"""

from __future__ import annotations

import pytest

from consensus.api import Action, Broadcast, Send
from consensus.messages import Commit, PrePrepare
from consensus.replica import Replica
from node.sim.pbft import byzantine as byz
from node.sim.pbft.app import make_payload, parse
from node.sim.pbft.cluster import Cluster, Node, SimConfig
from node.sim.pbft.schedules import random_schedule
from tests.consensus.broken import AmnesiacViewChangeReplica, QuorumMinusOneReplica


class SplitBrainPrimary(byz.Behaviour):
    """Sends its proposal (and its votes) to replica 1 only, and a conflicting
    proposal to replicas 2 and 3."""

    name = "split-brain"

    def rewrite(self, cluster: Cluster, node: Node, actions: list[Action]) -> list[Action]:
        out: list[Action] = []
        for a in actions:
            if isinstance(a, Broadcast) and isinstance(a.message, PrePrepare):
                m = a.message
                payload = make_payload(m.height, m.parent_id, node.index, 10**6 + m.height)
                cluster.checker.on_proposed(payload)
                other = PrePrepare(
                    m.height,
                    m.view,
                    parse(payload).block_id,  # type: ignore[union-attr]
                    m.parent_id,
                    payload,
                ).signed_by(node.crypto, "sim-chain")
                out += [
                    Send(cluster.keys[1], m),
                    Send(cluster.keys[2], other),
                    Send(cluster.keys[3], other),
                ]
            elif isinstance(a, Broadcast) and a.message.sender == node.key:
                out.append(Send(cluster.keys[1], a.message))
            else:
                out.append(a)
        return out


def split_brain(factory: type[Replica]) -> Cluster:
    cluster = Cluster(
        SimConfig(n=4, seed=1, window=1),
        byzantine={0: SplitBrainPrimary()},
        replica_factory=factory,
    )
    # The two sides do not hear each other's view-0 COMMITs (an unlucky network).
    cluster.net.filters.append(
        lambda s, d, m: (
            isinstance(m, Commit) and m.view == 0 and (s == 1) != (d == 1) and 0 not in (s, d)
        )
    )
    cluster.run_for(3000)
    return cluster


def test_quorum_minus_one_is_caught_as_disagreement() -> None:
    cluster = split_brain(QuorumMinusOneReplica)
    assert any("AGREEMENT" in v for v in cluster.checker.violations), cluster.checker.violations


def test_split_brain_primary_is_harmless_with_real_quorums() -> None:
    cluster = split_brain(Replica)
    assert cluster.checker.ok, cluster.checker.violations
    assert len(cluster.checker.agreed) > 5, "view change away from the equivocating primary"


def lost_commits(factory: type[Replica]) -> Cluster:
    """Height 3 commits at replica 3 only (everyone else loses the view-0 COMMITs);
    the other replicas then change view. The NEW-VIEW must re-propose that block."""
    cluster = Cluster(SimConfig(n=4, seed=2, window=1), replica_factory=factory)
    assert cluster.run_until_height(2, 5000)
    h = max(cluster.heights().values()) + 1
    cluster.net.filters.append(
        lambda s, d, m: isinstance(m, Commit) and m.height == h and m.view == 0 and d != 3
    )
    cluster.run_for(5000)
    return cluster


def test_dropping_prepared_certificates_in_view_change_is_caught() -> None:
    cluster = lost_commits(AmnesiacViewChangeReplica)
    assert any("AGREEMENT" in v for v in cluster.checker.violations), cluster.checker.violations


def test_lost_commits_are_recovered_by_the_real_view_change() -> None:
    cluster = lost_commits(Replica)
    assert cluster.checker.ok, cluster.checker.violations
    assert min(cluster.heights().values()) > 10


@pytest.mark.parametrize("factory", [AmnesiacViewChangeReplica], ids=lambda f: f.__name__)
def test_random_schedules_find_the_broken_view_change(factory: type[Replica]) -> None:
    """Not only the hand-made scenario: random schedules find it too (seed printed)."""
    for seed in range(80):
        result = random_schedule(seed, 4, replica_factory=factory)
        if any("AGREEMENT" in v for v in result.violations):
            print(f"broken replica caught by seed {seed}")
            return
    pytest.fail("80 random schedules did not catch a replica that forgets prepared certificates")
