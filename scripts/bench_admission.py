#!/usr/bin/env python3
"""Measure what mempool admission costs per transaction (node/mempool.py ``Mempool.add``).

Builds a real ledger holding ``--committed`` attestations (so state-tree reads walk a
tree of realistic depth), then admits ``--txs`` fresh signed ATTESTs to an empty
mempool several ways and reports the median cost per transaction:

- ``client``: a client's transaction, signature not yet checked (what the RPC door pays);
- ``client_cached``: the same with the signature already in the verified cache, i.e.
  the rule book alone (decode and signature excluded);
- ``peer`` / ``peer_cached``: a transaction gossiped by a peer (``from_peer=True``).

Then it commits blocks of ``--block-txs`` of the admitted transactions and reports what
the mempool's after-commit step costs per block (``committed``), while the rest stay
pending. Run it on an idle machine; the figures are medians over ``--rounds`` rounds.

Ends with one JSON line: admit_client_us, admit_client_cached_us, admit_peer_us,
admit_peer_cached_us, after_commit_ms (per block), pending_at_commit, block_txs.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ledger.chain import Ledger  # noqa: E402
from ledger.testchain import CHAIN_ID, GENESIS_TIME_MS, Consortium  # noqa: E402
from ledger.types import Attest, ChainParams, Transaction  # noqa: E402
from node.mempool import AddStatus, Mempool  # noqa: E402


def attests(cons: Consortium, start: int, count: int, expiry: int) -> list[Transaction]:
    key = cons.member_keys["szcredit"]
    out = []
    for i in range(start, start + count):
        commitment = hashlib.sha256(i.to_bytes(8, "big")).digest()
        p = Attest("credit-report", commitment, GENESIS_TIME_MS + i, 0, b"")
        out.append(Transaction(CHAIN_ID, key.public_key, i, expiry, p).signed(key))
    return out


def _peer_kw() -> dict[str, Any]:
    """The mempool's "gossiped by a peer" flag (named ``check_state`` before issue 15)."""
    names = inspect.signature(Mempool.add).parameters
    return {"from_peer": True} if "from_peer" in names else {"check_state": False}


def admit_us(lg: Ledger, txs: list[Transaction], *, peer: bool, cached: bool) -> float:
    mp = Mempool(CHAIN_ID, max_txs=10**7, max_bytes=1 << 40)
    if cached:
        mp.mark_verified(t.tx_id for t in txs)
    kw = _peer_kw() if peer else {}
    head = lg.head
    t0 = time.perf_counter()
    for tx in txs:
        r = mp.add(tx, head, **kw)
        if r.status != AddStatus.ADDED:
            raise SystemExit(f"admission refused a valid transaction: {r}")
    return (time.perf_counter() - t0) / len(txs) * 1e6


def after_commit_ms(lg: Ledger, cons: Consortium, txs: list[Transaction], block_txs: int) -> float:
    """Admit ``txs``, then commit them a block at a time; median ms of the mempool's part."""
    mp = Mempool(CHAIN_ID, max_txs=10**7, max_bytes=1 << 40)
    mp.mark_verified(t.tx_id for t in txs)
    for tx in txs:
        mp.add(tx, lg.head)
    times = []
    while len(mp) > block_txs:
        ex = lg.build(
            mp.take(block_txs, 1 << 40),
            time_ms=lg.tip.time_ms + 500,
            proposer=cons.proposer,
            verified=mp.verified,
        )
        lg.commit(ex.block, cons.certify(ex.block), verified=mp.verified)
        t0 = time.perf_counter()
        if hasattr(mp, "committed"):
            mp.committed(ex.block, lg.head)
        else:  # the API before issue 15
            mp.remove(ex.block.tx_ids)
            mp.drop_expired(lg.height + 1)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Example: python scripts/bench_admission.py --committed 200000 --txs 5000",
    )
    ap.add_argument("--committed", type=int, default=100_000, help="attestations in the state")
    ap.add_argument("--txs", type=int, default=5000, help="fresh transactions admitted per round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per figure (median)")
    ap.add_argument("--block-txs", type=int, default=2000, help="transactions per block")
    args = ap.parse_args()
    cons = Consortium.make(ChainParams(max_block_txs=max(args.block_txs, 1)))
    with tempfile.TemporaryDirectory(prefix="bench_admission_") as d:
        lg = Ledger.open(Path(d) / "db", cons.genesis)
        done = 0
        while done < args.committed:
            n = min(args.block_txs, args.committed - done)
            txs = attests(cons, 10_000_000 + done, n, lg.height + 500)
            ex = lg.build(
                txs, time_ms=lg.tip.time_ms + 500, proposer=cons.proposer, verified=lambda _: True
            )
            lg.commit(ex.block, cons.certify(ex.block), verified=lambda _: True)
            done += n
        print(f"state: {done:,} attestations at height {lg.height}", flush=True)
        fresh = attests(cons, 0, args.txs, lg.height + 400)
        figures: dict[str, Any] = {}
        for name, peer, cached in [
            ("client", False, False),
            ("client_cached", False, True),
            ("peer", True, False),
            ("peer_cached", True, True),
        ]:
            us = statistics.median(
                admit_us(lg, fresh, peer=peer, cached=cached) for _ in range(args.rounds)
            )
            figures[f"admit_{name}_us"] = round(us, 1)
            print(f"admission, {name}: {us:.1f} us/tx", flush=True)
        pending = 3 * args.block_txs
        ms = after_commit_ms(lg, cons, fresh[: pending + 1], args.block_txs)
        print(f"after-commit step: {ms:.2f} ms per block of {args.block_txs}", flush=True)
        figures.update(
            after_commit_ms=round(ms, 2), pending_at_commit=pending, block_txs=args.block_txs
        )
        lg.close()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
