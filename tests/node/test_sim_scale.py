"""Scale runs of the whole-node simulator (issue 19, item 7), scaled down.

``node.sim.scale`` runs n validators (and observers) of the product's node core over
a WAN-like link with a steady client load and meters every frame. What a user of
``scripts/sim_scale.py`` relies on: every honest node commits the same blocks, the
message counts are PBFT's (a PRE-PREPARE to each peer, then PREPAREs and COMMITs all
to all: ~2n(n-1) per block), observers receive every validator's broadcasts and
follow the chain, and a crashed primary is replaced by a view change after the view
timeout. All times asserted are simulated.
"""

from __future__ import annotations

import pytest

from ledger.consortium import ChainParams
from node.sim.scale import ScaleConfig, ScaleResult, run_scale, sizing


@pytest.fixture(scope="module")
def n7() -> ScaleResult:
    return run_scale(ScaleConfig(n=7, observers=3, warmup_ms=600, steady_ms=800))


@pytest.fixture(scope="module")
def n16() -> ScaleResult:
    return run_scale(ScaleConfig(n=16, warmup_ms=600, steady_ms=600, view_change=False))


def _per_block(r: ScaleResult, kind: str) -> float:
    return r.by_kind.get(kind, (0.0, 0.0))[0]


def test_every_honest_node_commits_the_same_blocks(n7: ScaleResult, n16: ScaleResult) -> None:
    for r in (n7, n16):
        assert r.violations == []  # agreement (a), order, no double signing (e), ...
        assert r.blocks >= 4 and r.txs_per_block > 0
        assert r.agreed_heights >= r.blocks
        up = [h for h in r.heights[: r.n] if h is not None]
        # every validator still up committed (nearly) everything the checker agreed on
        assert len(up) >= r.n - 1
        # none behind by more than what may be in flight (the pipeline window)
        assert min(up) >= r.agreed_heights - ChainParams().pipeline_window
    # the observers follow the same chain (the agreement checker covers them too)
    observers = n7.heights[n7.n :]
    assert len(observers) == 3
    assert all(h is not None and h >= n7.agreed_heights - 8 for h in observers)


def test_votes_are_all_to_all(n7: ScaleResult, n16: ScaleResult) -> None:
    """Per block each validator sends its PREPARE and COMMIT to every other node:
    n(n-1) of each among validators, plus one copy per observer."""
    for r in (n7, n16):
        peers = r.n - 1 + r.observers
        for kind in ("prepare", "commit"):
            # every validator signs one of each per height (the primary too)
            assert _per_block(r, kind) == pytest.approx(r.n * peers, rel=0.1)
        assert _per_block(r, "pre_prepare") == pytest.approx(peers, rel=0.1)

    def among_validators(r: ScaleResult) -> float:
        return _per_block(r, "prepare") * (r.n - 1) / (r.n - 1 + r.observers)

    ratio = among_validators(n16) / among_validators(n7)
    assert ratio == pytest.approx(16 * 15 / (7 * 6), rel=0.1)  # quadratic, not linear
    # the messages each validator receives grow linearly, its bytes too
    assert n16.validator_recv_bytes_per_block > 1.5 * n7.validator_recv_bytes_per_block


def test_observers_get_every_broadcast_and_fetch_blocks(n7: ScaleResult) -> None:
    assert n7.observer_recv_msgs_per_block >= 2 * n7.n  # every PREPARE and COMMIT
    assert n7.by_kind["fetch"][1] > 0  # and they fetch the blocks they commit


def test_a_crashed_primary_is_replaced(n7: ScaleResult) -> None:
    timeout = ChainParams().view_timeout_ms
    assert n7.view_entered_ms is not None and n7.view_change_ms is not None
    # nobody suspects the primary before its view timeout; the new view then commits
    assert timeout <= n7.view_entered_ms <= n7.view_change_ms <= 3 * timeout
    assert n7.view_change_bytes > 0


def test_the_sizing_model_reproduces_the_simulation(n7: ScaleResult) -> None:
    """docs/PERFORMANCE.md sizes a 50-institution consortium with ``sizing``: at the
    simulated load it must give what the simulation metered."""
    blocks_per_s = n7.blocks / 0.8  # the steady window is 800 ms
    m = sizing(n7.n, n7.observers, n7.txs_per_block * blocks_per_s, blocks_per_s, n7)
    assert m.primary_sent / blocks_per_s == pytest.approx(n7.primary_sent_bytes_per_block, rel=0.1)
    assert m.validator_recv / blocks_per_s == pytest.approx(
        n7.validator_recv_bytes_per_block, rel=0.1
    )
    assert m.observer_recv / blocks_per_s == pytest.approx(
        n7.observer_recv_bytes_per_block, rel=0.1
    )
    assert m.votes_per_block == 2 * 7 * 6 + 6
