#!/usr/bin/env python3
"""Benchmark the ledger core on this machine (issue: ledger core acceptance figures).

Phases (all single-process, one core):
1. raw Ed25519 verify rate (the reference ceiling);
2. block apply with full signature verification: a second ledger re-executes
   (``validate_block``: decode, every signature, every rule, state-tree update, roots)
   and commits (one synced LevelDB batch) blocks of ``--block-txs`` signed ATTESTs;
3. state-tree batched updates at ``--smt-entries`` entries and proof generation and
   verification medians (scripts/bench_smt.py does the work);
4. bytes on disk per attestation after ``--attestations`` attestations committed through
   the real ledger (signatures were checked in phase 2, so this phase trusts them).

Ends with one JSON line: apply_tx_per_s, ed25519_verify_per_s, apply_vs_verify_ratio,
smt_updates_per_s, proof_gen_us, proof_verify_us, disk_bytes_per_attestation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import bench_smt  # noqa: E402
import nacl.bindings  # noqa: E402

from ledger.chain import Ledger  # noqa: E402
from ledger.smt import MemoryNodeStore, SparseMerkleTree  # noqa: E402
from ledger.testchain import CHAIN_ID, GENESIS_TIME_MS, Consortium  # noqa: E402
from ledger.types import Attest, ChainParams, Transaction  # noqa: E402


def ed25519_verify_rate(seconds: float = 2.0) -> float:
    pk, sk = nacl.bindings.crypto_sign_seed_keypair(b"\x01" * 32)
    msg = b"x" * 200
    sm = nacl.bindings.crypto_sign(msg, sk)
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(500):
            nacl.bindings.crypto_sign_open(sm, pk)
        n += 500
    return n / (time.perf_counter() - t0)


def make_attests(cons: Consortium, start: int, count: int, expiry: int) -> list[Transaction]:
    key = cons.member_keys["szcredit"]
    out = []
    for i in range(start, start + count):
        commitment = hashlib.sha256(i.to_bytes(8, "big")).digest()
        p = Attest("credit-report", commitment, GENESIS_TIME_MS + i, 0, b"")
        out.append(Transaction(CHAIN_ID, key.public_key, i, expiry, p).signed(key))
    return out


def bench_apply(
    cons: Consortium, blocks: int, block_txs: int, tmp: Path
) -> tuple[float, float, float, float]:
    """A replica re-executing and committing blocks, interleaved with raw verify runs.

    The machine is shared and noisy, so each block's apply is paired with a raw
    libsodium verify of the same number of signatures measured right before it; the
    ratio is the median of the per-block ratios. Returns (apply tx/s, validate-only
    tx/s, raw verify/s, median ratio), rates as medians over blocks.
    """
    from ledger.codec import Domain, tagged
    from ledger.types import Block

    src = Ledger.open(tmp / "src", cons.genesis)
    dst = Ledger.open(tmp / "dst", cons.genesis)
    made = []
    for b in range(blocks):
        txs = make_attests(cons, b * block_txs, block_txs, src.height + 500)
        ex = src.build(
            txs, time_ms=src.tip.time_ms + 500, proposer=cons.proposer, verified=lambda _id: True
        )
        assert not ex.rejected, ex.rejected[:1]
        cert = cons.certify(ex.block)
        src.commit(ex.block, cert, verified=lambda _id: True)
        # Ship the block as bytes: the replica decodes it as it would from the network.
        signed = [(tx.signature + tagged(Domain.TX, tx.body_bytes), tx.sender) for tx in txs]
        made.append((ex.block.encode(), cert, signed))
    apply_rates, validate_rates, verify_rates, ratios = [], [], [], []
    open_ = nacl.bindings.crypto_sign_open
    for raw, cert, signed in made:
        t0 = time.perf_counter()
        for sm, pk in signed:
            open_(sm, pk)
        t1 = time.perf_counter()
        block = Block.decode(raw)
        dst.validate(block)
        t2 = time.perf_counter()
        dst.commit(block, cert)
        t3 = time.perf_counter()
        n = len(signed)
        verify_rates.append(n / (t1 - t0))
        validate_rates.append(n / (t2 - t1))
        apply_rates.append(n / (t3 - t1))
        ratios.append((t1 - t0) / (t3 - t1))
    assert dst.head.state_root == src.head.state_root
    src.close()
    dst.close()
    med = statistics.median
    return med(apply_rates), med(validate_rates), med(verify_rates), med(ratios)


def bench_disk(cons: Consortium, attestations: int, block_txs: int, tmp: Path) -> tuple[float, int]:
    lg = Ledger.open(tmp / "disk", cons.genesis)
    done = 0
    t0 = time.perf_counter()
    last = t0
    while done < attestations:
        n = min(block_txs, attestations - done)
        expiry = lg.height + 500
        txs = make_attests(cons, 10_000_000 + done, n, expiry)
        ex = lg.build(
            txs, time_ms=lg.tip.time_ms + 500, proposer=cons.proposer, verified=lambda _id: True
        )
        assert not ex.rejected, ex.rejected[:1]
        lg.commit(ex.block, cons.certify(ex.block), verified=lambda _id: True)
        done += n
        if time.perf_counter() - last > 15:
            last = time.perf_counter()
            print(
                f"  disk phase: {done:,} attestations, {lg.store.disk_bytes() / done:.0f} B each",
                flush=True,
            )
    before = lg.store.disk_bytes()
    lg.store.compact()
    after = lg.store.disk_bytes()
    print(
        f"  disk: {before / done:.0f} B/attestation before compaction, {after / done:.0f} after"
        f" ({time.perf_counter() - t0:.0f} s, height {lg.height})"
    )
    lg.close()
    return after / done, lg.height


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--block-txs", type=int, default=2000)
    ap.add_argument("--apply-blocks", type=int, default=10)
    ap.add_argument("--smt-entries", type=int, default=1_000_000)
    ap.add_argument("--smt-batch", type=int, default=2000)
    ap.add_argument("--attestations", type=int, default=1_000_000)
    args = ap.parse_args()
    params = ChainParams(max_block_txs=max(args.block_txs, 1))
    cons = Consortium.make(params)

    print(f"ed25519 verify (raw libsodium, 2 s): {ed25519_verify_rate():,.0f}/s")
    with tempfile.TemporaryDirectory(prefix="bench_ledger_") as d:
        tmp = Path(d)
        apply_rate, validate_rate, verify, ratio = bench_apply(
            cons, args.apply_blocks, args.block_txs, tmp
        )
        print(
            f"block apply, full signature verification, {args.block_txs} tx/block: "
            f"{apply_rate:,.0f} tx/s with synced commit; {validate_rate:,.0f} tx/s validation "
            f"alone; raw verify interleaved {verify:,.0f}/s; median ratio {ratio:.0%}"
        )

        store = MemoryNodeStore()
        tree = SparseMerkleTree(store)
        version, build_s = bench_smt.build(tree, store, args.smt_entries, 100_000, 100)
        upd, _, version = bench_smt.bench_updates(
            tree, store, None, version, args.smt_entries, 20, args.smt_batch, 100
        )
        proofs = bench_smt.bench_proofs(tree, version, args.smt_entries, 2000)
        print(
            f"state tree at {args.smt_entries:,} entries: {upd:,.0f} keys/s in batches of "
            f"{args.smt_batch}; proof gen {proofs['gen_us']:.1f} us, verify "
            f"{proofs['verify_us']:.1f} us (medians), {proofs['proof_bytes']:.0f} B/proof"
        )
        del store, tree

        disk, height = bench_disk(cons, args.attestations, args.block_txs, tmp)
        print(
            f"disk: {disk:.0f} bytes per attestation at {args.attestations:,} attestations "
            f"({height} blocks)"
        )

    figures = {
        "apply_tx_per_s": round(apply_rate),
        "ed25519_verify_per_s": round(verify),
        "apply_vs_verify_ratio": round(ratio, 3),
        "smt_updates_per_s": round(upd),
        "proof_gen_us": round(proofs["gen_us"], 1),
        "proof_verify_us": round(proofs["verify_us"], 1),
        "disk_bytes_per_attestation": round(disk),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
