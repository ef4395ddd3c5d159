#!/usr/bin/env python
"""Soak the PBFT replica: fresh randomized simulation schedules for a fixed wall time.

    python scripts/soak_consensus.py --seconds 60 --seed 7 --nodes 7

Runs ``node.sim.pbft.schedules.random_schedule`` over a stream of schedule seeds derived
from ``--seed`` until ``--seconds`` of wall time have passed, with the external
checker after every step (agreement, validity, certificates, order, no honest
equivocation) and a liveness check after each schedule heals. Prints every failing
schedule (its seed and trace, enough to replay it with
``random_schedule(schedule_seed, nodes)``), then one JSON line:

    {"seed": ..., "nodes": ..., "schedules": ..., "views": ..., "heights_committed": ...,
     "violations": ...}

Exit status 0 only if every invariant held in every schedule.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from node.sim.pbft.schedules import random_schedule  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, required=True, help="wall time to soak for")
    parser.add_argument("--seed", type=int, required=True, help="seed of the schedule stream")
    parser.add_argument("--nodes", type=int, choices=(4, 7), default=4)
    parser.add_argument(
        "--chaos-ms", type=int, default=3000, help="simulated length of each schedule's fault phase"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stream = random.Random(args.seed)  # fresh schedule seeds, reproducible from --seed
    deadline = time.monotonic() + args.seconds
    schedules = views = heights = violations = 0
    while time.monotonic() < deadline:
        schedule_seed = stream.getrandbits(48)
        result = random_schedule(schedule_seed, args.nodes, chaos_ms=args.chaos_ms)
        schedules += 1
        views += result.views
        heights += result.heights
        if result.violations:
            violations += len(result.violations)
            print(
                f"VIOLATION in schedule seed={schedule_seed} nodes={args.nodes}:", file=sys.stderr
            )
            print(result.describe(), file=sys.stderr)
    print(
        json.dumps(
            {
                "seed": args.seed,
                "nodes": args.nodes,
                "schedules": schedules,
                "views": views,
                "heights_committed": heights,
                "violations": violations,
            }
        )
    )
    return 0 if violations == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
