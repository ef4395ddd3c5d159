"""Whole-node simulation at consortium scale: messages, bytes and latencies against n.

    python scripts/sim_scale.py            # n = 4, 7, 16, 31 (+ 100 observers), ~6 minutes
    python scripts/sim_scale.py --quick    # n = 4, 7, 16, fewer blocks

Each row runs n validators of the product's node core (``node.sim.scale``) over a
Hong Kong <-> Shenzhen link model (5-20 ms one way, uniform jitter), production chain
parameters, and a steady client load of real signed ATTESTs (``--tx-per-s`` in
requests of ``--batch``), all on simulated time. Per committed block it reports every
frame sent (to every destination) and its bytes (real encoded sizes; transport framing
excluded), per validator and per observer; commit latency from the primary's
PRE-PREPARE to each validator's commit (p50/p99); and, after a power cut of the primary,
the time until the first validator enters a new view and until the first commit in it
(the view timeout is 2 s). Observers cost the simulation dearly (n = 31 with 100 of
them is ~3 minutes): with ``--quick`` fewer are simulated and the figures for
``--observers`` are extrapolated, linearly (every validator broadcast goes to each
observer and each observer fetches each block once; the ``obs`` column says what was
simulated, ``*`` marks an extrapolation). ``--far K`` adds a row at n = 16 with K members
~150 ms away. Ends with the machine's Ed25519 verify rate (the ceiling that CPU sets)
and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_ledger import ed25519_verify_rate  # noqa: E402

from node.sim.scale import ScaleConfig, ScaleResult, run_scale, sizing  # noqa: E402


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}"


def extrapolated(r: ScaleResult, observers: int) -> tuple[float, float, float]:
    """(msgs, bytes, mean validator bytes sent) per block with ``observers`` observers."""
    extra = observers - r.observers
    msgs = r.msgs_per_block + extra * r.observer_recv_msgs_per_block
    size = r.bytes_per_block + extra * r.observer_recv_bytes_per_block
    sent = r.validator_sent_bytes_per_block + extra * r.observer_recv_bytes_per_block / r.n
    return msgs, size, sent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="n = 4, 7, 16 and fewer blocks")
    ap.add_argument("--tx-per-s", type=int, default=400, help="client load (default 400)")
    ap.add_argument("--batch", type=int, default=50, help="txs per client request (50)")
    ap.add_argument("--observers", type=int, default=100, help="observers to report (100)")
    ap.add_argument("--far", type=int, default=0, help="a row at n = 16 with K far members")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model-tx-per-s", type=int, default=3000, help="model load (3000)")
    ap.add_argument("--model-blocks-per-s", type=float, default=5.0, help="model (5)")
    args = ap.parse_args()
    started = time.perf_counter()
    steady = 1000 if args.quick else 1500
    # (n, observers simulated, far members): --quick simulates 10 observers at n = 16
    # and extrapolates to --observers (the cost is linear; see the docstring).
    rows: list[tuple[int, int, int]] = [(4, 0, 0), (7, 0, 0)]
    if args.quick:
        rows += [(16, 10, 0)]
    else:
        rows += [(16, args.observers, 0), (31, args.observers, 0)]
        if args.far:
            rows += [(16, 0, args.far)]
    results: list[tuple[ScaleResult, int]] = []
    for n, obs, far in rows:
        cfg = ScaleConfig(
            n=n,
            observers=obs,
            seed=args.seed,
            tx_per_s=args.tx_per_s,
            batch=args.batch,
            steady_ms=steady,
            far=far,
        )
        r = run_scale(cfg)
        results.append((r, far))
        print(
            f"n={n} observers={obs} far={far}: {r.blocks} blocks, wall {r.wall_s:.0f} s, "
            f"violations {len(r.violations)}",
            file=sys.stderr,
            flush=True,
        )
        if r.violations:
            print("\n".join(r.violations[:5]), file=sys.stderr)

    print(
        f"\nper committed block, {args.tx_per_s} tx/s in requests of {args.batch}; "
        f"link 5-20 ms one way; 'obs' = observers simulated, figures for "
        f"{args.observers} observers extrapolated linearly where fewer (*)"
    )
    head = (
        f"{'n':>3} {'far':>3} {'obs':>4} {'blocks':>6} {'tx/blk':>6} {'msgs/blk':>9} "
        f"{'KB/blk':>8} {'val sent KB':>11} {'prim sent KB':>12} {'val recv KB':>11} "
        f"{'msgs/blk@obs':>12} {'KB/blk@obs':>10} {'obs recv KB':>11} "
        f"{'p50 ms':>6} {'p99 ms':>6} {'vc enter':>8} {'vc commit':>9} {'vc KB':>7}"
    )
    print(head)
    figures: dict[str, float | int | None] = {}
    for r, far in results:
        m_obs, b_obs, _sent = extrapolated(r, args.observers)
        star = "*" if 0 < r.observers != args.observers else " "
        print(
            f"{r.n:>3} {far:>3} {r.observers:>4} {r.blocks:>6} {r.txs_per_block:>6.0f} "
            f"{r.msgs_per_block:>9,.0f} {r.bytes_per_block / 1e3:>8,.0f} "
            f"{r.validator_sent_bytes_per_block / 1e3:>11,.1f} "
            f"{r.primary_sent_bytes_per_block / 1e3:>12,.1f} "
            f"{r.validator_recv_bytes_per_block / 1e3:>11,.1f} "
            f"{(f'{m_obs:,.0f}' if r.observers else '-'):>11}{star} "
            f"{(f'{b_obs / 1e3:,.0f}' if r.observers else '-'):>9}{star} "
            f"{r.observer_recv_bytes_per_block / 1e3:>11,.1f} "
            f"{r.commit_ms_p50:>6.0f} {r.commit_ms_p99:>6.0f} "
            f"{_ms(r.view_entered_ms):>8} {_ms(r.view_change_ms):>9} "
            f"{r.view_change_bytes / 1e3:>7,.0f}"
        )
        key = f"n{r.n}" + (f"_far{far}" if far else "")
        figures[f"{key}_msgs_per_block"] = round(r.msgs_per_block, 1)
        figures[f"{key}_bytes_per_block"] = round(r.bytes_per_block)
        figures[f"{key}_validator_sent_bytes_per_block"] = round(r.validator_sent_bytes_per_block)
        figures[f"{key}_primary_sent_bytes_per_block"] = round(r.primary_sent_bytes_per_block)
        figures[f"{key}_observers_simulated"] = r.observers
        if r.observers:
            figures[f"{key}_obs{args.observers}_msgs_per_block"] = round(m_obs)
            figures[f"{key}_obs{args.observers}_bytes_per_block"] = round(b_obs)
            figures[f"{key}_observer_recv_bytes_per_block"] = round(r.observer_recv_bytes_per_block)
        figures[f"{key}_commit_ms_p50"] = r.commit_ms_p50
        figures[f"{key}_commit_ms_p99"] = r.commit_ms_p99
        figures[f"{key}_view_entered_ms"] = r.view_entered_ms
        figures[f"{key}_view_change_ms"] = r.view_change_ms
        figures[f"{key}_view_change_bytes"] = r.view_change_bytes
        figures[f"{key}_new_view_bytes"] = r.new_view_bytes
        figures[f"{key}_violations"] = len(r.violations)

    print("\nby message kind, per block (messages x mean bytes), observers included:")
    for r, far in results:
        parts = [f"{k} {m:,.0f}x{(b / m if m else 0):,.0f}" for k, (m, b) in r.by_kind.items() if m]
        print(f"  n={r.n:<2} far={far} obs={r.observers:<3} " + ", ".join(parts))
    r0 = results[0][0]
    figures["tx_bytes"] = r0.tx_bytes
    for kind in ("prepare", "commit", "checkpoint"):
        m, b = r0.by_kind.get(kind, (0.0, 0.0))
        figures[f"{kind}_msg_bytes"] = round(b / m) if m else None
    big = max((r for r, far in results if not far), key=lambda r: r.n)
    print(
        f"\nmodel (docs/PERFORMANCE.md), sizes measured at n={big.n}: "
        f"{args.model_tx_per_s:,} tx/s in {args.model_blocks_per_s} blocks/s, Mbit/s per node"
    )
    print(
        f"{'n':>3} {'obs':>4} {'val recv':>8} {'val sent':>8} {'primary sent':>12} "
        f"{'obs recv':>8} {'verifies/height':>15} {'votes/height':>12}"
    )
    for n in (16, 31, 50, 100):
        for obs in (0, args.observers):
            m = sizing(n, obs, args.model_tx_per_s, args.model_blocks_per_s, big)
            print(
                f"{n:>3} {obs:>4} {m.validator_recv * 8 / 1e6:>8.1f} "
                f"{m.validator_sent * 8 / 1e6:>8.1f} {m.primary_sent * 8 / 1e6:>12.1f} "
                f"{(f'{m.observer_recv * 8 / 1e6:.1f}' if obs else '-'):>8} "
                f"{m.verifies_per_block:>15} {m.votes_per_block:>12,}"
            )
            if n == 50:
                tag = f"model_n50_obs{obs}"
                figures[f"{tag}_validator_recv_mbit_s"] = round(m.validator_recv * 8 / 1e6, 1)
                figures[f"{tag}_validator_sent_mbit_s"] = round(m.validator_sent * 8 / 1e6, 1)
                figures[f"{tag}_primary_sent_mbit_s"] = round(m.primary_sent * 8 / 1e6, 1)
                if obs:
                    figures[f"{tag}_observer_recv_mbit_s"] = round(m.observer_recv * 8 / 1e6, 1)
    verify = ed25519_verify_rate()
    print(f"\ned25519 verify (raw libsodium, 2 s): {verify:,.0f}/s (the CPU ceiling)")
    figures["ed25519_verify_per_s"] = round(verify)
    figures["wall_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(figures))
    return 1 if any(r.violations for r, _ in results) else 0


if __name__ == "__main__":
    sys.exit(main())
