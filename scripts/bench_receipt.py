#!/usr/bin/env python3
"""Benchmark offline re-verification of a receipt (ledger/receipt.py, docs/PROOFS.md §12).

What ``dvp verify --offline --receipt`` does after reading the files: decode the receipt
(strict JSON schema), check its genesis hash and commitment, re-verify its bundle with
``ledger.verify`` as of its ``checked_at_ms`` (a validator-set change, certificates,
state proof, the ATTEST's and REVOKE's signatures and inclusion proofs) and compare the
answer. The receipt is of a REVOKED document on tests/support/bundles.make_chain's chain
(the heaviest verdict: two transactions and a validator-set change to follow). The time
is the median over ``--runs`` runs; the machine is shared, so its raw Ed25519 verify rate
(scripts/bench_ledger.py's measure) is printed for scale. ``measure_receipt_verify`` is
also what scripts/bench_rpc.py reports as ``receipt_verify_ms_p50``.

Ends with one JSON line: receipt_verify_ms_p50, receipt_verify_ms_p90, runs,
ed25519_verify_per_s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_ledger import ed25519_verify_rate  # noqa: E402

from ledger.receipt import build, decode, encode, reverify  # noqa: E402
from ledger.verify import TrustAnchor, verify_bundle_json  # noqa: E402
from tests.support.bundles import NOW_MS, C, make_chain  # noqa: E402


def measure_receipt_verify(runs: int) -> dict[str, Any]:
    """Median and p90 ms of ``reverify(decode(receipt))`` over ``runs`` runs, with the
    receipt's size and verdict."""
    with tempfile.TemporaryDirectory(prefix="bench_receipt_") as d:
        cons, lg, bundles = make_chain(Path(d) / "db")
        lg.close()
    genesis, bundle = cons.genesis, bundles["revoked"]
    verdict = verify_bundle_json(bundle, TrustAnchor.from_genesis(genesis), now_ms=NOW_MS)
    data = encode(build(bundle, verdict, genesis, C[1], checked_at_ms=NOW_MS, max_age_ms=30_000))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = reverify(decode(data), genesis, C[1])
        times.append((time.perf_counter() - t0) * 1000)
    assert result.to_json() == verdict.to_json()
    times.sort()
    return {
        "receipt_verify_ms_p50": round(statistics.median(times), 3),
        "receipt_verify_ms_p90": round(times[int(len(times) * 0.9)], 3),
        "receipt_bytes": len(data),
        "status": str(verdict.status),
    }


def describe(m: dict[str, Any], runs: int) -> str:
    return (
        f"receipt re-verification ({m['receipt_bytes']:,} bytes, {m['status']}): median "
        f"{m['receipt_verify_ms_p50']:.3f} ms, p90 {m['receipt_verify_ms_p90']:.3f} ms over "
        f"{runs} runs (target <= 2 ms)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    verify = ed25519_verify_rate()
    print(f"ed25519 verify (raw libsodium, 2 s): {verify:,.0f}/s")
    m = measure_receipt_verify(args.runs)
    print(describe(m, args.runs))
    print(
        json.dumps(
            {
                "receipt_verify_ms_p50": m["receipt_verify_ms_p50"],
                "receipt_verify_ms_p90": m["receipt_verify_ms_p90"],
                "runs": args.runs,
                "ed25519_verify_per_s": round(verify),
            }
        )
    )


if __name__ == "__main__":
    main()
