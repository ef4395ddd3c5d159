#!/usr/bin/env python3
"""Disk per attestation of an archive store and of a pruned one (issue 19, bounded disks).

1. Build a chain of ``--attestations`` signed ATTESTs in blocks of ``--block-txs``
   through the real ledger (scripts/bench_audit.py's ``build_chain``: 8 state versions
   retained, as a node), then compact it: the archive figure (every block body kept).
2. Prune the same store to the newest ``--retain-blocks`` bodies
   (``Ledger.prune_bodies``, what ``[ledger] retain_blocks`` does after commits and
   ``dvp store prune`` at once) and compact again: the pruned figure. Headers,
   certificates, app metadata, the tx and attested-commitment indexes and the state
   stay, so the pruned figure is what the state and the indexes cost.
3. Check the pruned store in full (``check_ledger``), so the figure is of a store a node
   accepts.

Disk is the size of the LevelDB directory's files after a full compaction
(``Store.disk_bytes``). Ends with one JSON line: disk_bytes_per_attestation_archive,
disk_bytes_per_attestation_pruned, body_bytes_per_attestation (the kept bodies' stored
bytes before pruning, per attestation: transaction chunks and tx-tree node records),
attestations, blocks, retain_blocks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ledger.chain import Ledger  # noqa: E402
from ledger.store_check import check_ledger  # noqa: E402
from ledger.store_format import P_BLOCK, P_CHUNK, P_TX_TREE  # noqa: E402
from ledger.testchain import Consortium  # noqa: E402
from ledger.types import ChainParams  # noqa: E402
from scripts.bench_audit import build_chain  # noqa: E402


def _body_bytes(lg: Ledger) -> int:
    """Keys and values of the bodies: the transaction chunks and tx-tree node records."""
    total = 0
    for prefix in (P_BLOCK, P_CHUNK, P_TX_TREE):
        with lg.store._db.iterator(prefix=prefix) as it:  # the bench may look inside
            for key, value in it:
                total += len(key) + len(value)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attestations", type=int, default=1_000_000)
    ap.add_argument("--block-txs", type=int, default=2000)
    ap.add_argument("--retain-blocks", type=int, default=10, help="bodies the pruned store keeps")
    ap.add_argument("--workers", type=int, default=2, help="signing processes")
    ap.add_argument("--dir", help="where to build (default: a temp dir)")
    args = ap.parse_args()
    n = args.attestations
    cons = Consortium.make(ChainParams(max_block_txs=max(args.block_txs, 1)))
    with tempfile.TemporaryDirectory(prefix="bench-disk-", dir=args.dir) as tmp:
        path = Path(tmp) / "ledger"
        height = build_chain(cons, path, n, args.block_txs, args.workers)
        with Ledger.open(path, cons.genesis, create=False) as lg:
            t0 = time.perf_counter()
            lg.store.compact()
            archive = lg.store.disk_bytes()
            bodies = _body_bytes(lg)
            print(f"archive: {archive:,} bytes ({time.perf_counter() - t0:.0f} s to compact)")
            lg.retain_blocks = args.retain_blocks
            t0 = time.perf_counter()
            deleted = lg.prune_bodies()
            prune_s = time.perf_counter() - t0
            lg.store.compact()
            pruned = lg.store.disk_bytes()
            print(
                f"pruned {deleted} bodies in {prune_s:.2f} s, kept from height "
                f"{lg.store.bodies_from}: {pruned:,} bytes",
                flush=True,
            )
            check = check_ledger(lg, recent=None)
            print(f"full store check of the pruned store: ok ({check.elapsed_s:.0f} s)")
    print(
        json.dumps(
            {
                "attestations": n,
                "blocks": height,
                "retain_blocks": args.retain_blocks,
                "disk_bytes_per_attestation_archive": round(archive / n, 1),
                "disk_bytes_per_attestation_pruned": round(pruned / n, 1),
                "body_bytes_per_attestation": round(bodies / n, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
