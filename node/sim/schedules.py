"""Seeded whole-node runs: a fault phase, then a healed phase with a liveness bound.

``run_seed(seed, length_ms)`` is fully determined by its arguments. One seed in four
is *calm* (honest nodes, a lossless network, no crashes: checker (c) holds it to no
view change at all); the others mix crashes (power cuts) and restarts, partitions,
message loss and duplication, and in half of them a Byzantine node (equivocating as
primary, lying about its height and forging certificates when serving catch-up). With
``retire`` governance removes the Byzantine validator first. The client submits
throughout. Then everything heals and every admitted transaction must commit within
``LIVENESS_MS``. Replay one: ``DVP_SIM_SEED=<seed> [DVP_SIM_MS=<ms>] [DVP_SIM_RETIRE=1]
pytest tests/node/test_node_sim.py -k replay`` or ``python scripts/soak_node_sim.py
--start <seed> --seeds 1 [--length-ms <ms>] [--retire]``.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from ledger.state import execute
from node.sim.checker import proposer_of
from node.sim.cluster import World, WorldConfig
from node.sim.pbft.network import LinkModel

LIVENESS_MS = 8000


@dataclass
class SeedResult:
    seed: int
    calm: bool
    byzantine: dict[int, str]
    violations: list[str]
    mempool_violations: list[str] = field(default_factory=list)
    heights: int = 0
    admitted: int = 0
    signed: int = 0
    view_changes: int = 0
    crashes: int = 0
    sim_ms: int = 0
    retired: bool = False  # governance retired the Byzantine node's validator
    forged: dict[str, int] = field(default_factory=dict)  # forged certificates served
    refused_blocks: int = 0  # fetched blocks honest cores refused
    wall_s: float = 0.0
    trace: list[str] = field(default_factory=list)
    length_ms: int = 0
    retire: bool = False

    def describe(self) -> str:
        replay = f"DVP_SIM_SEED={self.seed} DVP_SIM_MS={self.length_ms}"
        if self.retire:
            replay += " DVP_SIM_RETIRE=1"
        head = (
            f"seed={self.seed} calm={self.calm} byzantine={self.byzantine} "
            f"heights={self.heights} admitted={self.admitted} crashes={self.crashes} "
            f"(replay: {replay} python -m pytest tests/node/test_node_sim.py -k replay)"
        )
        return "\n".join([head, *self.violations[:8], "trace:", *self.trace[-25:]])


def make_world(
    seed: int, *, unsynced_cdb: bool = False, calm: bool | None = None, retire: bool = False
) -> World:
    rng = random.Random(seed * 1_000_003 + 17)
    is_calm = False if retire else rng.random() < 0.25 if calm is None else calm
    byzantine: dict[int, str] = {}
    if retire or (not is_calm and rng.random() < 0.5):
        byzantine = {rng.randrange(4): "equivocate+forge"}
    if is_calm:
        link = LinkModel(1, rng.choice([2, 5, 10]), 0.0, 0.0)
    else:
        link = LinkModel(
            1, rng.choice([5, 10, 20]), rng.choice([0.0, 0.02, 0.08]), rng.choice([0.0, 0.03])
        )
    return World(
        WorldConfig(
            seed=seed, link=link, byzantine=byzantine, calm=is_calm, unsynced_cdb=unsynced_cdb
        )
    )


def run_seed(
    seed: int, length_ms: int = 1500, *, unsynced_cdb: bool = False, retire: bool = False
) -> SeedResult:
    """One seed; ``retire``: a Byzantine node that governance retires (REMOVE_VALIDATOR
    through the client), after which it forges certificates with its retired key and
    an honest node restarts and catches up from it."""
    started = time.perf_counter()
    world = make_world(seed, unsynced_cdb=unsynced_cdb, retire=retire)
    rng = random.Random(seed ^ 0xC0FFEE)
    checker = world.checker
    trace = world.trace
    trace.append(f"link={world.cfg.link} calm={world.cfg.calm} byz={world.cfg.byzantine}")
    crashes = 0
    now = 0
    byz = next(iter(world.cfg.byzantine), None)
    retry_at = 0
    while now < length_ms and checker.ok:
        now += rng.randint(20, 120)
        world.run_until(now)
        what = world.submit() if rng.random() < 0.7 else "idle"
        if retire and byz is not None and not world.nodes[byz].retired and now >= retry_at:
            what += "; " + world.retire(byz)
            retry_at = now + 400
        elif retire and byz is not None and world.nodes[byz].retired and retry_at >= 0:
            # Once retired: an honest node restarts and catches up from the liar.
            victim = rng.choice(sorted(world.honest))
            world.crash(victim)
            retry_at = -1
            what += f"; crash {victim}"
            crashes += 1
        elif not world.cfg.calm:
            what += "; " + _fault(world, rng)
            crashes += "crash" in what
        trace.append(f"t={now} {what} heights={_heights(world)}")
    heal_at = world.net.now
    if checker.ok:  # (after a violation the run stopped: liveness would be meaningless)
        world.heal()
        trace.append(f"t={heal_at} heal")
        deadline = heal_at + LIVENESS_MS
        while world.net.now < deadline and checker.ok:
            world.run_until(min(deadline, world.net.now + 250))
            if _all_resolved(world):
                break
        trace.append(f"t={world.net.now} end heights={_heights(world)}")
        honest_up = {i: ids for i, ids in world.committed.items() if i in world.honest}
        checker.now = world.net.now
        if checker.ok:
            checker.check_liveness(heal_at, LIVENESS_MS, honest_up, _refused(world))
    return SeedResult(
        seed,
        world.cfg.calm,
        dict(world.cfg.byzantine),
        list(checker.violations),
        list(checker.mempool_violations),
        heights=max(checker.agreed, default=0),
        admitted=len(checker.admitted),
        signed=checker.messages_signed,
        view_changes=checker.view_changes,
        crashes=crashes,
        sim_ms=world.net.now,
        retired=byz is not None and world.nodes[byz].retired,
        forged=dict(world.forged),
        refused_blocks=world.refused_blocks,
        wall_s=time.perf_counter() - started,
        trace=trace,
        length_ms=length_ms,
        retire=retire,
    )


def _heights(world: World) -> list[int | None]:
    return [n.core.ledger.height if n.core else None for n in world.nodes]


def _fault(world: World, rng: random.Random) -> str:
    n = len(world.nodes)
    down = [x.index for x in world.nodes if x.core is None]
    roll = rng.random()
    if roll < 0.12 and not down:
        victim = rng.randrange(n)
        world.crash(victim)
        return f"crash {victim}"
    if roll < 0.30 and down:
        world.restart(down[0])
        return f"restart {down[0]}"
    if roll < 0.40:
        nodes = list(range(n))
        rng.shuffle(nodes)
        cut = rng.randint(1, n - 1)
        world.net.partition([nodes[:cut], nodes[cut:]])
        return f"partition {sorted(nodes[:cut])}|{sorted(nodes[cut:])}"
    if roll < 0.60:
        world.net.heal()
        return "heal partition"
    return "-"


def _all_resolved(world: World) -> bool:
    honest = [world.committed[i] for i in world.honest]
    refused = None
    for tx_id in world.checker.admitted:
        if all(tx_id in ids for ids in honest):
            continue
        if refused is None:
            refused = _refused(world)
        if not refused.get(tx_id, False):
            return False
    return True


def _refused(world: World) -> dict[bytes, bool]:
    """For admitted, not everywhere committed transactions: does the ledger refuse them
    now (on the committed head of the most advanced honest node)?"""
    cores = [world.nodes[i].core for i in world.honest if world.nodes[i].core is not None]
    if not cores:
        return {}
    best = max(cores, key=lambda c: c.ledger.height)  # type: ignore[union-attr]
    assert best is not None
    head = best.ledger.head
    by_id = {tx.tx_id: tx for tx in world.client.sent}
    out: dict[bytes, bool] = {}
    for tx_id in world.checker.admitted:
        if best.ledger.store.tx_location(tx_id) is not None:
            out[tx_id] = False
            continue
        tx = by_id.get(tx_id)
        if tx is None:
            out[tx_id] = True  # forgotten by the client (old): cannot judge, skip
            continue
        try:
            execute(head, [tx], time_ms=head.time_ms + 1, proposer=proposer_of(head), strict=True)
            out[tx_id] = False
        except Exception:  # noqa: BLE001 - any refusal counts
            out[tx_id] = True
    return out
