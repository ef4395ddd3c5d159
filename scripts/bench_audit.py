#!/usr/bin/env python3
"""Benchmark the auditor's replay (ledger/audit.py) against the raw Ed25519 verify rate.

1. Build a chain of ``--attestations`` signed ATTESTs in blocks of ``--block-txs`` in a
   LevelDB through the real ledger (signatures made by ``--workers`` processes; the
   builder trusts them, the replay checks every one).
2. Replay it from the data directory exactly as ``dvp audit replay --datadir`` does:
   decode, chain link, certificate, every signature and rule, roots, app metadata and
   index cross-checks, history consistency, then the stored state tree re-hashed.
3. The machine is shared and noisy, so after every replayed block (from the progress
   callback) a raw libsodium verify of as many signatures is timed; that time is not
   counted as replay time. Rates and the ratio are medians over blocks, as in
   scripts/bench_ledger.py; the wall-clock totals are printed too.

Ends with one JSON line: replay_tx_per_s (median per-block replay rate),
replay_vs_verify_ratio (median per block of raw verify time / replay time for the same
number of signatures), ed25519_verify_per_s (median raw rate), blocks, transactions,
state_tree_s (the final stored-state-tree check, not included in the rates).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nacl.bindings  # noqa: E402

from ledger.audit import AuditProgress, replay_datadir  # noqa: E402
from ledger.chain import Ledger  # noqa: E402
from ledger.codec import Domain, tagged  # noqa: E402
from ledger.testchain import CHAIN_ID, GENESIS_TIME_MS, Consortium  # noqa: E402
from ledger.types import Attest, ChainParams, Genesis, Transaction  # noqa: E402

EXPIRY_AHEAD = 500


def commitment_of(i: int) -> bytes:
    """The commitment the chain's ``i``-th ATTEST attests."""
    return hashlib.sha256(i.to_bytes(8, "big")).digest()


def _unsigned(cons: Consortium, i: int, expiry: int) -> Transaction:
    key = cons.member_keys["szcredit"]
    return Transaction(
        CHAIN_ID,
        key.public_key,
        i,
        expiry,
        Attest("credit-report", commitment_of(i), GENESIS_TIME_MS + i, 0, b""),
    )


def _sign_block(job: tuple[int, int, int]) -> list[bytes]:
    """Worker: the signatures of transactions start..start+count (one block)."""
    start, count, expiry = job
    cons = Consortium.make()
    key = cons.member_keys["szcredit"]
    return [
        key.sign(Domain.TX, _unsigned(cons, i, expiry).body_bytes)
        for i in range(start, start + count)
    ]


def build_chain(
    cons: Consortium,
    path: Path,
    attestations: int,
    block_txs: int,
    workers: int,
    progress: int = 0,
) -> int:
    """Commit the chain; returns its height. ``progress``: print the rate every so
    many blocks (0: never)."""
    jobs = []
    for b, start in enumerate(range(0, attestations, block_txs)):
        jobs.append((start, min(block_txs, attestations - start), b + 1 + EXPIRY_AHEAD))
    t0 = time.perf_counter()
    sender = cons.member_keys["szcredit"].public_key
    with Pool(workers) as pool, Ledger.open(path, cons.genesis) as lg:
        for (start, count, expiry), sigs in zip(jobs, pool.imap(_sign_block, jobs), strict=True):
            txs = [  # as _unsigned makes them, with the worker's signature
                Transaction(
                    CHAIN_ID,
                    sender,
                    i,
                    expiry,
                    Attest("credit-report", commitment_of(i), GENESIS_TIME_MS + i, 0, b""),
                    sig,
                )
                for i, sig in zip(range(start, start + count), sigs, strict=True)
            ]
            ex = lg.build(
                txs, time_ms=lg.tip.time_ms + 500, proposer=cons.proposer, verified=lambda _id: True
            )
            assert not ex.rejected, ex.rejected[:1]
            lg.commit(ex.block, cons.certify(ex.block), verified=lambda _id: True)
            if progress and lg.height % progress == 0:
                done = start + count
                rate = done / (time.perf_counter() - t0)
                print(f"  {done:,} attestations, {rate:,.0f}/s", flush=True)
        height = lg.height
    print(
        f"built {attestations:,} attestations in {height} blocks "
        f"({time.perf_counter() - t0:.0f} s)",
        flush=True,
    )
    return height


class Interleaved:
    """The progress callback: after each replayed block, times a raw verify of as many
    signatures and keeps that time out of the replay's (as scripts/bench_ledger.py)."""

    def __init__(self) -> None:
        pk, sk = nacl.bindings.crypto_sign_seed_keypair(b"\x01" * 32)
        # same shape as a transaction's signed message: the tagged ~110-byte body
        self.sm = nacl.bindings.crypto_sign(tagged(Domain.TX, b"x" * 110), sk)
        self.pk = pk
        self.verify_rates: list[float] = []
        self.replay_rates: list[float] = []
        self.block_ratios: list[float] = []
        self.excluded_s = 0.0
        self.blocks_done_at = 0.0
        self.last = time.perf_counter()
        self.last_txs = 0

    def __call__(self, p: AuditProgress) -> None:
        now = time.perf_counter()
        if p.phase != "replay":
            return
        n = p.transactions - self.last_txs
        if n:
            replay_s = now - self.last
            open_ = nacl.bindings.crypto_sign_open
            sm, pk = self.sm, self.pk
            t0 = time.perf_counter()
            for _ in range(n):
                open_(sm, pk)
            verify_s = time.perf_counter() - t0
            self.verify_rates.append(n / verify_s)
            self.replay_rates.append(n / replay_s)
            self.block_ratios.append(verify_s / replay_s)
            self.last_txs = p.transactions
        self.last = self.blocks_done_at = time.perf_counter()
        self.excluded_s += self.last - now


def measure_replay(datadir: Path, genesis: Genesis, workdir: str | Path) -> dict[str, float] | None:
    """Replay ``datadir`` as ``dvp audit replay --datadir`` does, print the figures and
    return them (the keys of this script's JSON line), or None if the replay failed.
    scripts/bench_rpc.py measures its replay figure with this too."""
    probe = Interleaved()
    t0 = time.perf_counter()
    report = replay_datadir(datadir, genesis, workdir=workdir, progress=probe)
    t_end = time.perf_counter()
    if not report.ok:
        print(f"replay FAILED: {report.failure}")
        return None
    state_s = t_end - probe.blocks_done_at
    blocks_s = t_end - t0 - probe.excluded_s - state_s
    med = statistics.median
    verify, rate, ratio = med(probe.verify_rates), med(probe.replay_rates), med(probe.block_ratios)
    print(
        f"replay: {report.blocks} blocks, {report.transactions:,} transactions verified; "
        f"{rate:,.0f} tx/s (median over blocks); raw ed25519 verify interleaved "
        f"{verify:,.0f}/s (median); median per-block ratio {ratio:.0%}"
    )
    print(
        f"wall clock: blocks {blocks_s:.1f} s ({report.transactions / blocks_s:,.0f} tx/s "
        f"overall), then the stored state tree ({report.state_entries:,} entries, "
        f"{report.state_versions} versions) re-hashed in {state_s:.1f} s"
    )
    return {
        "replay_tx_per_s": round(rate),
        "replay_vs_verify_ratio": round(ratio, 3),
        "ed25519_verify_per_s": round(verify),
        "blocks": report.blocks,
        "transactions": report.transactions,
        "state_tree_s": round(state_s, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attestations", type=int, default=100_000)
    ap.add_argument("--block-txs", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2, help="signing processes")
    ap.add_argument("--dir", help="where to build (default: a temp dir)")
    args = ap.parse_args()
    cons = Consortium.make(ChainParams(max_block_txs=args.block_txs))
    with tempfile.TemporaryDirectory(prefix="bench_audit_", dir=args.dir) as d:
        datadir = Path(d) / "node"
        height = build_chain(
            cons, datadir / "ledger", args.attestations, args.block_txs, args.workers
        )
        figures = measure_replay(datadir, cons.genesis, d)
        if figures is None:
            return 1
        assert figures["blocks"] == height + 1, figures  # genesis included
        assert figures["transactions"] == args.attestations
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
