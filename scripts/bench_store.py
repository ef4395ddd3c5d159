#!/usr/bin/env python3
"""Measure the block store's bytes on disk per transaction and per block.

Commits --txs signed ATTEST transactions in blocks of --block-txs through
``ledger.store.Store`` (real state-tree updates, certificates and app metadata, built by
tests/store_crash_writer.ChainBuilder), once keeping every state version and once
pruning state versions older than --retain after every block. Prints, per run, the
directory size right after the run and after a full compaction, per transaction and per
block, and the logical (uncompressed key + value) bytes per key prefix.
Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import plyvel  # noqa: E402

from scripts.store_crash_writer import ChainBuilder, open_store  # noqa: E402


def logical_bytes(path: Path) -> dict[str, int]:
    db = plyvel.DB(str(path))
    out: dict[str, int] = {}
    try:
        for k, v in db.iterator():
            p = chr(k[0])
            out[p] = out.get(p, 0) + len(k) + len(v)
    finally:
        db.close()
    return out


def run(path: Path, txs: int, block_txs: int, retain: int | None) -> dict[str, object]:
    t0 = time.perf_counter()
    with open_store(path) as store:
        builder = ChainBuilder(store, seed=1)
        builder.commit_next(0)
        tx_bytes = 0
        for _ in range(txs // block_txs):
            block = builder.commit_next(block_txs)
            tx_bytes += sum(len(tx.encode()) for tx in block.txs)
            if retain is not None and store.height > retain:
                store.prune_state(store.height - retain)
        blocks = store.height + 1
        elapsed = time.perf_counter() - t0
        raw = store.disk_bytes()
        store.compact()
        compacted = store.disk_bytes()
    return {
        "pruning": f"retain {retain}" if retain is not None else "none",
        "blocks": blocks,
        "txs": txs,
        "seconds": round(elapsed, 1),
        "tx_bytes_avg": round(tx_bytes / txs, 1),
        "disk_bytes": raw,
        "disk_bytes_compacted": compacted,
        "per_tx": round(raw / txs, 1),
        "per_tx_compacted": round(compacted / txs, 1),
        "per_block_compacted": round(compacted / blocks),
        "logical_by_prefix": logical_bytes(path),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--txs", type=int, default=100_000)
    ap.add_argument("--block-txs", type=int, default=1000)
    ap.add_argument("--retain", type=int, default=8, help="state versions kept when pruning")
    ap.add_argument(
        "--modes",
        choices=("both", "prune", "none"),
        default="both",
        help="run without pruning, with pruning, or both",
    )
    args = ap.parse_args()
    results = []
    modes = {"both": (None, args.retain), "prune": (args.retain,), "none": (None,)}
    for retain in modes[args.modes]:
        with tempfile.TemporaryDirectory() as tmp:
            r = run(Path(tmp) / "db", args.txs, args.block_txs, retain)
        results.append(r)
        print(
            f"pruning={r['pruning']}: {r['blocks']} blocks, {r['txs']} txs "
            f"(avg tx {r['tx_bytes_avg']} B) in {r['seconds']} s; disk {r['disk_bytes']} B "
            f"= {r['per_tx']} B/tx; compacted {r['disk_bytes_compacted']} B = "
            f"{r['per_tx_compacted']} B/tx, {r['per_block_compacted']} B/block"
        )
        print(f"  logical bytes by key prefix: {r['logical_by_prefix']}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
