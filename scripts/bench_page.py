#!/usr/bin/env python3
"""Benchmark the verification page's in-browser check of a proof bundle (page_verify_ms).

Starts a 4-node devnet with an attested document (tests/support/browser.py, the harness of
the Chromium tests) and runs the officer's check in Debian's Chromium ``--runs`` times, each
in a fresh page: choose the file, type the code, press Verify. The page times its own call
of verify.mjs's verifyBundle (WebCrypto SHA-256 + Ed25519 over the head's certificate, the
state proof and the ATTEST's inclusion proofs) and leaves it on the result element; the
file's hashing and the node's answer are not in it. The machine is shared, so its raw
Ed25519 verify rate (scripts/bench_ledger.py's measure) is printed for scale. Needs
/usr/bin/chromium.

Ends with one JSON line: page_verify_ms_p50, page_verify_ms_p90, page_verify_ms_max, runs,
ed25519_verify_per_s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench_ledger import ed25519_verify_rate  # noqa: E402

from tests.support.browser import check_in_page, chromium, devnet_with_documents  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    verify = ed25519_verify_rate()
    print(f"ed25519 verify (raw libsodium, 2 s): {verify:,.0f}/s")
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench_page_") as d:
        with devnet_with_documents(Path(d) / "devnet") as net, chromium() as browser:
            for _ in range(args.runs):
                page = browser.new_page()
                try:
                    result = check_in_page(page, net.url, net.docs["valid"])
                finally:
                    page.close()
                if result.verdict != "VALID" or result.page_verify_ms is None:
                    raise SystemExit(f"the page showed {result.verdict}: {result.text}")
                times.append(result.page_verify_ms)
    ordered = sorted(times)
    p50, p90 = statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    print(
        f"page check of a VALID bundle in Chromium: median {p50:.1f} ms, p90 {p90:.1f} ms, "
        f"max {ordered[-1]:.1f} ms over {args.runs} runs (first: {times[0]:.1f} ms)"
    )
    print(
        json.dumps(
            {
                "page_verify_ms_p50": round(p50, 2),
                "page_verify_ms_p90": round(p90, 2),
                "page_verify_ms_max": round(ordered[-1], 2),
                "runs": args.runs,
                "ed25519_verify_per_s": round(verify),
            }
        )
    )


if __name__ == "__main__":
    main()
