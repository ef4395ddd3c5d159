#!/usr/bin/env python3
"""Benchmark proofs at scale: proof generation and bundle serving at 100 k and 10 M
attestations (issue 19 item 6: at 10 M within 1.5x of 100 k).

For each ``--sizes`` entry a chain is bulk-loaded into ``--dir``/n<size>/ (reused when
it is already there): signed ATTESTs in blocks of ``--block-txs``, executed by the real
ledger with the signatures vouched for (``scripts/bench_audit.py``'s ``build_chain``,
as ``scripts/bench_rpc.py`` builds; no consensus, no network), then one block revoking
``--revoked`` of them. Then, on that chain:

* **proof generation**: ``ledger.prove.Prover.bundle`` for ``--lookups`` commitments
  drawn at random (90 % attested, 10 % never attested), in-process, after a warm-up of
  as many other look-ups: median and p99 per bundle; then as many again with the
  prover's caches dropped before each (``Prover.drop_caches``: the cost of a proof of
  data not served lately, which is most of a large store, while a small one fits in the
  caches whole);
* **bundle serving**: one ``dvp node run`` process per size (observer, no peers, the
  same verifier API key setup as bench_rpc) and one client sending
  ``getAttestationProof`` requests one at a time on a keep-alive connection to each:
  median and p99 per request, HTTP and JSON included. Every answer is checked to be a
  bundle for the asked commitment.

Sizes are measured interleaved (look-up by look-up, request by request), so load from
elsewhere on the shared machine falls on each alike. Random look-ups into a large store
are LevelDB reads that the OS page cache may or may not hold (a shared machine evicts
it); ``--page-cache`` reads every data file once before measuring, as a node that has
been serving for a while would hold them when RAM allows.
* **disk**: bytes of the data directory per attestation.

The machine is shared, so sizes are measured in one sitting and compared as ratios;
its raw Ed25519 verify rate is printed for scale. Ends with one JSON line:
``proof_ms_p50_<size>``, ``proof_uncached_ms_p50_<size>``, ``serving_ms_p50_<size>``,
``serving_ms_p99_<size>``, ``disk_bytes_per_attestation_<size>``, and for the largest
size against the smallest ``proof_ratio``, ``proof_uncached_ratio`` and
``serving_ratio`` (medians), ``ed25519_verify_per_s``.

    python scripts/bench_scale.py --sizes 100000,10000000 --dir /var/tmp/dvp-scale
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import random
import shutil
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_audit  # noqa: E402
import bench_rpc  # noqa: E402
from bench_ledger import ed25519_verify_rate  # noqa: E402
from bench_proc import pct  # noqa: E402

Chain = tuple[Path, Any, list[bytes]]  # data directory, consortium, attested commitments


def chain_for(size: int, root: Path, args: argparse.Namespace) -> Chain:
    """The data directory of a ``size`` chain (built unless it is there, built by a build
    with the same genesis encoding), the consortium and the attested commitments."""
    datadir = root / f"n{size}"
    done = datadir / "BUILT"  # "<size>\n<genesis hash>\n" once the build finished
    build_args = argparse.Namespace(
        attestations=size, block_txs=args.block_txs, revoked=args.revoked, workers=args.workers
    )
    cons = bench_rpc.chain_consortium(args.block_txs, args.revoked)
    marker = f"{size}\n{cons.genesis.hash.hex()}\n"
    if done.exists() and done.read_text() == marker:
        attested = [bench_audit.commitment_of(i) for i in range(size)]
        print(f"reusing the {size:,}-attestation chain in {datadir}", flush=True)
        return datadir, cons, attested
    if datadir.exists():
        # An unfinished build, or one whose genesis (so whose encodings) a later build
        # changed: the node would refuse to open it.
        print(f"{datadir} holds an unfinished or older-format chain: building it again")
        shutil.rmtree(datadir)
    t0 = time.perf_counter()
    cons, attested, revoked = bench_rpc.build_chain(datadir, build_args, progress=250)
    attested += revoked
    done.write_text(marker)
    print(f"built {size:,} attestations in {time.perf_counter() - t0:.0f} s", flush=True)
    return datadir, cons, attested


def sample(attested: list[bytes], n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    present = [attested[rng.randrange(len(attested))] for _ in range(n * 9 // 10)]
    absent = [hashlib.sha256(b"absent %d %d" % (seed, i)).digest() for i in range(n - len(present))]
    out = present + absent
    rng.shuffle(out)
    return out


def proof_times(
    chains: dict[int, Chain], n: int
) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """Per size, ms per ``Prover.bundle``, (warm, uncached): after the warm-up, with the
    prover's caches as that left them; then with them dropped before each look-up
    (``Prover.drop_caches``), the cost of a proof of data not served lately. Sizes
    alternate look-up by look-up, so load from elsewhere on the machine falls on each
    alike."""
    from ledger.chain import Ledger
    from ledger.prove import Prover

    with ExitStack() as stack:
        provers = {}
        for size, (datadir, cons, _) in chains.items():
            lg = stack.enter_context(Ledger.open(datadir / "ledger", cons.genesis))
            provers[size] = Prover(lg)
        for size, (_, _, attested) in chains.items():  # warm-up: caches, the history tree
            for c in sample(attested, n, 1):
                provers[size].bundle(c)
        runs: list[dict[int, list[float]]] = []
        for seed, uncached in ((2, False), (3, True)):
            picks = {size: sample(attested, n, seed) for size, (_, _, attested) in chains.items()}
            times: dict[int, list[float]] = {size: [] for size in chains}
            for i in range(n):
                for size, prover in provers.items():
                    if uncached:
                        prover.drop_caches()
                    t0 = time.perf_counter()
                    prover.bundle(picks[size][i])
                    times[size].append((time.perf_counter() - t0) * 1000)
            runs.append({size: sorted(t) for size, t in times.items()})
    return runs[0], runs[1]


def serving_times(chains: dict[int, Chain], n: int) -> dict[int, list[float]]:
    """Per size, ms per ``getAttestationProof`` request to that size's node; one node per
    size, all up at once, requests alternating between them (the first n warm up)."""
    nodes: dict[int, bench_rpc.NodeProcess] = {}
    try:
        conns = {}
        headers: dict[int, dict[str, str]] = {}
        for size, (datadir, cons, _) in chains.items():
            home = datadir.parent / f"{datadir.name}-node"  # config, keys, log: made anew
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            node = nodes[size] = bench_rpc.NodeProcess(home, datadir, cons, None)
            node.start()
            headers[size] = {"Content-Type": "application/json"}
            if "open" not in node.auth:
                headers[size]["Authorization"] = f"Bearer {node.api.key}"
            conns[size] = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
        picks = {size: sample(attested, 2 * n, 3) for size, (_, _, attested) in chains.items()}
        times: dict[int, list[float]] = {size: [] for size in chains}
        for i in range(2 * n):
            for size, conn in conns.items():
                c = picks[size][i]
                body = json.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": i,
                        "method": "getAttestationProof",
                        "params": {"commitment": c.hex()},
                    }
                ).encode()
                t0 = time.perf_counter()
                conn.request("POST", "/", body, headers[size])
                doc = json.loads(conn.getresponse().read())
                elapsed = (time.perf_counter() - t0) * 1000
                assert doc["result"]["commitment"] == c.hex(), doc
                if i >= n:
                    times[size].append(elapsed)
        for conn in conns.values():
            conn.close()
    finally:
        for node in nodes.values():
            node.stop()
    return {size: sorted(t) for size, t in times.items()}


def read_through(path: Path) -> None:
    """Read every file under ``path`` once, so the OS page cache holds it (when RAM
    allows) as it would for a node that has served for a while."""
    for f in path.rglob("*"):
        if f.is_file():
            with f.open("rb") as fh:
                while fh.read(1 << 20):
                    pass


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,10000000", help="attestation counts")
    ap.add_argument("--dir", required=True, help="where chains are built and kept for reuse")
    ap.add_argument("--block-txs", type=int, default=2000)
    ap.add_argument("--revoked", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2, help="signing processes for the build")
    ap.add_argument("--lookups", type=int, default=2000)
    ap.add_argument(
        "--page-cache",
        action="store_true",
        help="read every data file once first (a long-running node's OS page cache)",
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    chains = {size: chain_for(size, root, args) for size in sizes}
    if args.page_cache:
        for datadir, _, _ in chains.values():
            read_through(datadir)
    verify = ed25519_verify_rate()
    print(f"ed25519 verify (raw libsodium, 2 s): {verify:,.0f}/s; load {os.getloadavg()}")
    out: dict[str, Any] = {}
    (proofs, uncached), served = (
        proof_times(chains, args.lookups),
        serving_times(chains, args.lookups),
    )
    for size, (datadir, _, _) in chains.items():
        p, u, r = proofs[size], uncached[size], served[size]
        per = disk_bytes(datadir) / size
        print(
            f"{size:>12,} attestations: proof generation p50 {statistics.median(p):.3f} ms "
            f"p99 {pct(p, 99):.3f} ms, uncached p50 {statistics.median(u):.3f} ms; "
            f"served over RPC p50 {statistics.median(r):.3f} ms p99 {pct(r, 99):.3f} ms; "
            f"{per:,.0f} bytes on disk per attestation"
        )
        out[f"proof_ms_p50_{size}"] = round(statistics.median(p), 3)
        out[f"proof_uncached_ms_p50_{size}"] = round(statistics.median(u), 3)
        out[f"serving_ms_p50_{size}"] = round(statistics.median(r), 3)
        out[f"serving_ms_p99_{size}"] = round(pct(r, 99), 3)
        out[f"disk_bytes_per_attestation_{size}"] = round(per)
    small, large = min(sizes), max(sizes)
    if small != large:
        out["proof_ratio"] = round(out[f"proof_ms_p50_{large}"] / out[f"proof_ms_p50_{small}"], 2)
        out["proof_uncached_ratio"] = round(
            out[f"proof_uncached_ms_p50_{large}"] / out[f"proof_uncached_ms_p50_{small}"], 2
        )
        out["serving_ratio"] = round(
            out[f"serving_ms_p50_{large}"] / out[f"serving_ms_p50_{small}"], 2
        )
        print(
            f"{large:,} vs {small:,}: proof generation x{out['proof_ratio']} (uncached "
            f"x{out['proof_uncached_ratio']}), serving x{out['serving_ratio']} (target <= 1.5)"
        )
    out["ed25519_verify_per_s"] = round(verify)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
