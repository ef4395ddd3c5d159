"""A restarted validator votes again (whole-node simulation).

The scenario of the node-key rotation drill (scripts/harness/drills.py), without the
governance around it: in a calm run (no loss, no Byzantine node) one validator's
process stops while the other three commit on under load, then starts again from its
disks. It catches up (``node.core_catchup``), starts its replica, and must go back to
voting in the group's view: checker (c) flags any view change in a calm run, and the
certificates committed after the restart must hold the restarted node's signature.

Before the fix the restarted replica often moved to view 1 alone and stayed there,
following by block sync without voting (Castro & Liskov TOCS'02 §4.5.2: a replica
alone in a view change waits for f + 1 others, who had no reason to move): its one
fetch of the block under its new stable checkpoint came back empty (the peer had not
stored it yet), the core did not pass the empty answer on, and the replica waited the
whole fetch timeout -- longer than its view timeout.

The mirror case: the primary is stopped, the other three replace it (view 1), and it
starts again in view 0. It followed view 1's commit certificates for ever, never
timing out (it committed) and so never asking to join: votes of view 1 from f + 1
members now make it join view 1 (``ViewChangeMixin.note_higher_view``).
"""

from __future__ import annotations

import pytest

from node.sim.cluster import World, WorldConfig
from node.sim.pbft.network import LinkModel

VICTIM = 3
CRASH_AT_MS = 800
CHECK_LAST = 20  # certificates examined at the end


def _load(world: World, start_ms: int, end_ms: int) -> None:
    now = start_ms
    while now < end_ms:
        now += 40
        world.run_until(now)
        world.submit()


def _restart(world: World, victim: int, down_ms: int, after_ms: int = 2000) -> World:
    _load(world, 0, CRASH_AT_MS)
    world.crash(victim)
    _load(world, CRASH_AT_MS, CRASH_AT_MS + down_ms)
    world.restart(victim)
    _load(world, CRASH_AT_MS + down_ms, CRASH_AT_MS + down_ms + after_ms)
    return world


def _signed_by(world: World, victim: int) -> int:
    """How many of the last ``CHECK_LAST`` certificates in a peer's chain ``victim`` signed."""
    core = world.nodes[(victim + 1) % len(world.nodes)].core
    assert core is not None
    store, key = core.ledger.store, world.nodes[victim].key.public_key
    top = store.height
    signed = 0
    for height in range(top - CHECK_LAST + 1, top + 1):
        cert = store.get_certificate(height)
        index = core.ledger.tip.validators_at(height).index_of(key)
        if cert is not None and any(i == index for i, _ in cert.signatures):
            signed += 1
    return signed


@pytest.mark.parametrize("down_ms", [1500, 4000])
@pytest.mark.parametrize("seed", range(4))
def test_a_validator_restarted_behind_the_group_votes_again(seed: int, down_ms: int) -> None:
    world = World(WorldConfig(seed=seed, link=LinkModel(1, 5, 0.0, 0.0), calm=True))
    _restart(world, VICTIM, down_ms)
    assert world.checker.ok, world.checker.violations[:3]  # (c): no view change at all
    replica = world.nodes[VICTIM].core.replica  # type: ignore[union-attr]
    assert replica is not None, "the restarted validator never started its replica"
    views = [n.core.replica.view for n in world.nodes if n.core and n.core.replica]
    assert views == [0, 0, 0, 0] and not replica.in_vc, views
    assert _signed_by(world, VICTIM) > 0, "the restarted validator signs no certificate"


@pytest.mark.parametrize("seed", range(4))
def test_a_primary_restarted_after_its_replacement_joins_the_new_view(seed: int) -> None:
    world = World(WorldConfig(seed=seed, link=LinkModel(1, 5, 0.0, 0.0), calm=False))
    primary = 0  # view 0's primary: the others must change view while it is down
    _restart(world, primary, 2200, after_ms=3000)
    assert world.checker.ok, world.checker.violations[:3]
    replica = world.nodes[primary].core.replica  # type: ignore[union-attr]
    assert replica is not None and not replica.in_vc
    views = [n.core.replica.view for n in world.nodes if n.core and n.core.replica]
    assert len(set(views)) == 1 and views[0] > 0, views
    assert _signed_by(world, primary) > 0, "the restarted primary signs no certificate"
