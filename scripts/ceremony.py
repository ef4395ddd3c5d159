#!/usr/bin/env python3
"""The key ceremony of docs/OPERATIONS.md at full size, timed: every organisation runs
``dvp org init`` in its own folder (as on its own machine), the coordinator makes the
genesis from the exported member descriptions only, each organisation checks the hash
with ``dvp genesis show`` and writes its peers with ``dvp org peers``, then every node
starts from its own folder on 127.0.0.1, an issuer attests a document through its node
and a verifier checks it through an observer against its own genesis copy.

Default: 4 validators (the demo consortium's cnix, szcredit, webank, hkbank, and
``validatorN`` beyond) plus 2 observer organisations. tests/system/test_ceremony.py is
the scaled-down test of the same steps (scripts/harness/ceremony.py). Prints each step's
time and ends with one JSON line: validators, observers, org_init_s, genesis_new_s,
check_and_configure_s, nodes_first_block_s, attest_s, verify_s, total_s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.harness.ceremony import Org, attest_and_verify, prepare, start, stop  # noqa: E402

NAMED = [
    Org("cnix", "China Internet Exchange (Qianhai)", ("auditor",)),
    Org("szcredit", "Shenzhen Credit Service Co.", ("issuer",), ("credit-report",)),
    Org("webank", "WeBank Technology Services"),
    Org("hkbank", "A Hong Kong bank", ("verifier",)),
]


def organisations(validators: int, observers: int) -> list[Org]:
    orgs = NAMED[:validators]
    orgs += [Org(f"validator{i + 1}", f"Validator {i + 1}") for i in range(len(orgs), validators)]
    if not any("issuer" in o.roles for o in orgs):
        raise SystemExit("--validators must be at least 2 (szcredit issues the document)")
    orgs += [
        Org(f"observer{i + 1}", f"Observer bank {i + 1}", ("verifier",), observer=True)
        for i in range(observers)
    ]
    return orgs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--validators", type=int, default=4)
    ap.add_argument("--observers", type=int, default=2)
    ap.add_argument("--dir", help="folder to use (default: a temporary one, removed)")
    ap.add_argument("--keep", action="store_true", help="leave the nodes running")
    args = ap.parse_args()
    orgs = organisations(args.validators, args.observers)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="dvp-ceremony-"))
    t0 = time.monotonic()
    c = prepare(root, orgs)
    try:
        same = set(c.hashes_seen.values()) == {c.genesis_hash}
        print(f"genesis hash {c.genesis_hash}: the same in all {len(orgs)} folders: {same}")
        if not same:
            raise SystemExit(f"genesis hashes differ: {c.hashes_seen}")
        start(c)
        verifier = orgs[-1]  # an observer when there is one
        out = attest_and_verify(c, orgs[1], "credit-report", verifier)
        print(f"attested through szcredit's node, verified through {verifier.id}'s node: "
              f"{out['verdict']['status']}")  # fmt: skip
        if out["verdict"]["status"] != "VALID":
            raise SystemExit("the attestation did not verify")
    finally:
        if not args.keep:
            stop(c)
    total = round(time.monotonic() - t0, 2)
    for step, seconds in c.timings_s.items():
        print(f"  {step.removesuffix('_s'):<22} {seconds:7.2f} s")
    print(f"  {'total':<22} {total:7.2f} s")
    if args.keep:
        print(f"nodes left running in {root}; stop them with kill -TERM "
              + " ".join(str(p.pid) for p in c.procs.values()))  # fmt: skip
    elif not args.dir:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps({"validators": args.validators, "observers": args.observers,
                      **c.timings_s, "total_s": total}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
