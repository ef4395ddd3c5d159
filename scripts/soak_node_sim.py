"""Soak the whole-node simulator: run many seeds, print failures, end with one JSON line.

    python scripts/soak_node_sim.py --seeds 2000 --start 0 --length-ms 1500 --workers 2

Each seed runs four of the product's node cores (``node.core.NodeCore``) in the
whole-node simulator (``node.sim``); ``--retire`` runs the governance scenario instead
(the Byzantine validator is removed, then forges with its retired key). Each failure
prints the seed, its violations and the tail of its trace; replay one with
``--start SEED --seeds 1`` (or ``DVP_SIM_SEED=SEED pytest tests/node/test_node_sim.py
-k replay``). ``mempool_failures`` counts the seeds on which checker (d) (mempool vs
ledger) fired; they are failures too. Exit status: 0 if no seed failed a checker; 1
otherwise.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.sim.schedules import SeedResult, run_seed  # noqa: E402


def _run(job: tuple[int, int, bool]) -> SeedResult:
    seed, length_ms, retire = job
    return run_seed(seed, length_ms, retire=retire)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=1000, help="how many seeds (default 1000)")
    ap.add_argument("--start", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--length-ms", type=int, default=1500, help="fault phase, simulated ms")
    ap.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    ap.add_argument("--retire", action="store_true", help="the governance scenario")
    args = ap.parse_args()
    started = time.perf_counter()
    jobs = [(s, args.length_ms, args.retire) for s in range(args.start, args.start + args.seeds)]
    failures = mempool = heights = admitted = crashes = forged = refused = 0
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
        for result in pool.map(_run, jobs, chunksize=4):
            heights += result.heights
            admitted += result.admitted
            crashes += result.crashes
            forged += sum(result.forged.values())
            refused += result.refused_blocks
            if result.mempool_violations:
                mempool += 1
            if result.violations:
                failures += 1
                print(result.describe(), "\n", flush=True)
    figures = {
        "seeds": len(jobs),
        "failures": failures,
        "mempool_failures": mempool,
        "heights": heights,
        "admitted_txs": admitted,
        "power_cuts": crashes,
        "forged_certificates": forged,
        "refused_blocks": refused,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(figures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
