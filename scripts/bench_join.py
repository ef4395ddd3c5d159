#!/usr/bin/env python3
"""Time to join: state sync versus full catch-up (issue 19 item 2).

1. Build a chain of ``--attestations`` signed ATTESTs in blocks of ``--block-txs``
   through the real ledger (scripts/bench_audit.py's ``build_chain``), the source peer.
2. **Full catch-up**: an empty ledger asks the source for every block with node/sync.py's
   ``blocks`` requests and commits each one as a catching-up node does
   (``Ledger.commit``: the certificate against the validator set in force, the block
   re-executed with every signature verified -- a new node's signature cache is empty).
3. **State sync**: an empty store imports the source's snapshot at its head with
   ``node.state_sync.fetch`` (the ``snapshot`` / ``snap_*`` requests, every page
   verified by ``ledger.state_snapshot.SnapshotImport``), then opens as a ``Ledger``.

Both go through the sync protocol's encodings, answered by ``sync.serve`` on the source
store in this process: no network. The bytes each way moved are reported, so a link's
time can be added (a peer's sync channel is limited to 4 MiB/s by default, p2p/config.py).
Both joins end at the source's head with its state root (checked).

Ends with one JSON line: join_state_sync_s, join_full_catchup_s, speedup,
attestations, blocks, snapshot_leaves, snapshot_bodies (the blocks of the transaction
lifetime a snapshot carries), state_sync_bytes, full_catchup_bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ledger.chain import Ledger  # noqa: E402
from ledger.store import Store  # noqa: E402
from ledger.testchain import Consortium  # noqa: E402
from ledger.types import Block, ChainParams, CommitCertificate  # noqa: E402
from node import sync  # noqa: E402
from node.state_sync import fetch  # noqa: E402
from scripts.bench_audit import build_chain  # noqa: E402


def full_catchup(src: Store, cons: Consortium, dst: Path) -> tuple[float, int, bytes]:
    """Seconds, bytes answered, final state root."""
    moved = 0
    t0 = time.perf_counter()
    with Ledger.open(dst, cons.genesis) as lg:
        while lg.height < src.height:
            answer = sync.serve(src, sync.blocks_request(lg.height + 1, src.height))
            moved += len(answer)
            for block_bytes, cert_bytes in sync.parse_blocks(answer):
                block, cert = Block.decode(block_bytes), CommitCertificate.decode(cert_bytes)
                lg.commit(block, cert, verified=lambda _id: False)
        elapsed = time.perf_counter() - t0
        return elapsed, moved, lg.head.state_root


def state_sync(src: Store, cons: Consortium, dst: Path) -> tuple[float, int, int, int, bytes]:
    """Seconds, bytes answered, leaves, bodies, final state root."""
    moved = 0

    async def ask(request: bytes) -> bytes:
        nonlocal moved
        answer = sync.serve(src, request)
        moved += len(answer)
        return answer

    g = cons.genesis
    t0 = time.perf_counter()
    with Store.open(dst, chain_id=g.chain_id, genesis_hash=g.hash, create=True) as store:
        info = trio.run(fetch, ask, store, g)
        lg = Ledger(store, g)
        elapsed = time.perf_counter() - t0
        return elapsed, moved, info.leaves, info.height - info.bodies_from + 1, lg.head.state_root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--attestations", type=int, default=1_000_000)
    ap.add_argument("--block-txs", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2, help="signing processes")
    ap.add_argument("--dir", help="where to build (default: a temp dir)")
    args = ap.parse_args()
    n = args.attestations
    cons = Consortium.make(ChainParams(max_block_txs=max(args.block_txs, 1)))
    with tempfile.TemporaryDirectory(prefix="bench-join-", dir=args.dir) as tmp:
        src_path = Path(tmp) / "source"
        height = build_chain(cons, src_path, n, args.block_txs, args.workers)
        with Ledger.open(src_path, cons.genesis, create=False) as src:
            root = src.head.state_root
            ss_s, ss_bytes, leaves, bodies, ss_root = state_sync(
                src.store, cons, Path(tmp) / "state-sync"
            )
            print(f"state sync: {ss_s:.1f} s, {ss_bytes:,} bytes, {leaves:,} leaves", flush=True)
            fc_s, fc_bytes, fc_root = full_catchup(src.store, cons, Path(tmp) / "catch-up")
            print(f"full catch-up: {fc_s:.1f} s, {fc_bytes:,} bytes", flush=True)
        assert ss_root == fc_root == root, "a join did not end at the source's state"
    print(
        json.dumps(
            {
                "attestations": n,
                "blocks": height,
                "snapshot_leaves": leaves,
                "snapshot_bodies": bodies,
                "state_sync_bytes": ss_bytes,
                "full_catchup_bytes": fc_bytes,
                "speedup": round(fc_s / ss_s, 2),
                "join_state_sync_s": round(ss_s, 2),
                "join_full_catchup_s": round(fc_s, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
