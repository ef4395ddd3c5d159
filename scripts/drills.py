#!/usr/bin/env python3
"""Governance drills under load: a real 4-validator consortium changes while it commits.

Starts four validator processes on 127.0.0.1 (scripts/harness, short consensus timers)
and the chaos harness's load (signed ATTEST transactions of the issuer szcredit to every
node, each acknowledged only when a node answers ``committed``), lets it run for
``--window-s``, then runs the drills one after the other (scripts/harness/drills.py and
drills_nodes.py):

| drill | what changes |
| --- | --- |
| issuer-rotation | ROTATE_KEY of szcredit's member key; the load switches to the new key; a |
|  | document attested before must still verify VALID (``dvp verify``) |
| validator-add-remove | gzfintech's observer becomes a fifth validator (ADD_VALIDATOR, node |
|  | restarted with its node key), then webank is removed (REMOVE_VALIDATOR) |
| node-key-rotation | hkbank's consensus key replaced (REMOVE_VALIDATOR, ADD_VALIDATOR with a |
|  | new node key, node restarted with it) |
| rolling-upgrade | validators restarted one at a time onto the "new build" (protocol |
|  | versions 1-2: DVP_PROTOCOL_MAX=2), ACTIVATE_VERSION 2 at a height ~20 s of blocks |
|  | ahead; one validator left on the old build must stop with its one line (exit 5) |
|  | and be refused on the old build, then rejoins upgraded |
| identity-replacement | an observer (of a member with no validator) gets a new p2p |
|  | identity (ROTATE_KEY of its member key) and a new TLS certificate for its HTTPS |
|  | RPC; restarted, clients pinning the new certificate reach it, the old one fails |

Per drill it prints committed tx/s (acknowledged commits of the load) in the
``--window-s`` before, during the change and in the ``--window-s`` after, the longest
time without an acknowledged commit during the change, and the verdict (every
acknowledged transaction in every live node's chain exactly once, no fork, every
certificate verifies). At the end the auditor's full replay of one node's chain, and one
JSON line: ``<drill>_tx_per_s_before|during|after``, ``<drill>_longest_pause_ms``,
``<drill>_seconds``, ``acked``, ``lost_transactions``, ``audit_ok``. Exit status 1 if a
transaction was lost or anything failed.

    python scripts/drills.py                       # all five, load of 4 clients
    python scripts/drills.py --drills issuer-rotation --window-s 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.harness import FAST_PARAMS, open_env  # noqa: E402
from scripts.harness.drills import Drill  # noqa: E402
from scripts.harness.drills_nodes import NodeDrills  # noqa: E402

ALL = [
    "issuer-rotation",
    "validator-add-remove",
    "node-key-rotation",
    "rolling-upgrade",
    "identity-replacement",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--drills", default=",".join(ALL), help=f"comma-separated, of {ALL}")
    ap.add_argument(
        "--window-s", type=float, default=30.0, help="load measured before and after each drill"
    )
    ap.add_argument(
        "--pause-s",
        type=float,
        default=0.05,
        help="each load client's pause between batches of 5 (the load's rate)",
    )
    ap.add_argument("--dir", type=Path, default=None, help="devnet folder (default: temporary)")
    args = ap.parse_args()
    wanted = [d.strip() for d in args.drills.split(",") if d.strip()]
    unknown = [d for d in wanted if d not in ALL]
    if unknown:
        ap.error(f"--drills: unknown {unknown}; known: {ALL}")
    base = args.dir or Path(tempfile.mkdtemp(prefix="dvp-drills-"))
    print(f"drills {wanted}, windows {args.window_s} s, devnet {base / 'net'}", flush=True)

    def log(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    done: list[Drill] = []
    with open_env(base / "net", netns=False, params=FAST_PARAMS) as env:
        env.load.pause_s = args.pause_s
        drills = NodeDrills(env, log)
        time.sleep(args.window_s)  # the load's steady state before the first drill
        for name in wanted:
            log(f"drill {name}")
            if name == "issuer-rotation":
                d = drills.rotate_issuer_key(args.window_s)
            elif name == "validator-add-remove":
                d = drills.add_and_remove_validator(args.window_s)
            elif name == "node-key-rotation":
                d = drills.rotate_node_key(args.window_s)
            elif name == "rolling-upgrade":
                d = drills.rolling_upgrade(args.window_s)
            else:
                d = drills.replace_node_identity(args.window_s)
            log(d.line())
            log(f"  {d.details}")
            done.append(d)
        env.load.stop()
        final = env.verdict(honest=drills.live, wait_s=120)
        # After a rolling upgrade the auditor runs the new build too.
        os.environ.update(drills.build_env)
        audit = env.checker.full_audit(drills.live[0])
    print("\n=== drills report ===")
    for d in done:
        print(d.line())
    print(
        f"load: {final.acked} acknowledged, uncertain {len(env.load.uncertain)}, rejected "
        f"{dict(env.load.rejected)}, unreachable-node submits {env.load.errors}; verdict "
        f"{'OK' if final.ok else 'FAILED'}; heights {final.heights}"
    )
    print(
        f"full audit replay of {drills.live[0]}: {'OK' if audit.ok else audit.failure} "
        f"({audit.blocks} blocks, {audit.transactions} txs)"
    )
    out: dict[str, object] = {}
    for d in done:
        for k in ("before", "during", "after"):
            out[f"{d.name}_tx_per_s_{k}"] = round(d.tx_per_s[k], 1)
        out[f"{d.name}_longest_pause_ms"] = round(d.longest_pause_s * 1000)
        out[f"{d.name}_seconds"] = round(d.ended - d.started, 1)
        out |= {f"{d.name}_{k}": v for k, v in d.details.items() if isinstance(v, bool)}
    out["acked"] = final.acked
    out["lost_transactions"] = len(final.lost_ids)
    out["audit_ok"] = audit.ok
    print(json.dumps(out))
    return 0 if final.ok and audit.ok else 1


if __name__ == "__main__":
    sys.exit(main())
