#!/usr/bin/env python3
"""Benchmark the state tree (ledger/smt.py) at ledger scale.

Builds a tree of --entries keys (SHA-256 outputs, values of --value-size bytes) in
batches, then measures, on the latest version:

* node bytes per key: every stored node of the latest version (internal + leaf,
  root record included) minus the value bytes, divided by the number of keys; also
  shown with the node keys counted;
* proof generation and verification, median over --proofs keys (half present);
* batched update throughput: --rounds batches of --batch new keys on top of the tree,
  with nodes in a dict (MemoryNodeStore), and, unless --no-leveldb, with the nodes in a
  plyvel LevelDB (cold decoded-node cache, one write batch per update).

Prints human-readable lines, then one JSON line as the last line of output.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ledger.smt import (  # noqa: E402 - after the sys.path fix so the script runs from anywhere
    DEFAULT_CACHE_NODES,
    MemoryNodeStore,
    NodeReader,
    Proof,
    SparseMerkleTree,
    verify_proof,
)


def make_keys(start: int, count: int) -> list[bytes]:
    sha = hashlib.sha256
    return [sha(i.to_bytes(8, "big")).digest() for i in range(start, start + count)]


def make_values(count: int, size: int) -> list[bytes]:
    buf = os.urandom(count * size)
    return [buf[i * size : (i + 1) * size] for i in range(count)]


def median_us(samples_ns: list[int]) -> float:
    return statistics.median(samples_ns) / 1000.0


def build(
    tree: SparseMerkleTree, store: MemoryNodeStore, entries: int, batch: int, value_size: int
) -> tuple[int, float]:
    """Insert ``entries`` keys in batches, keeping only the latest version. -> (version, s)"""
    version: int | None = None
    t0 = time.perf_counter()
    done = 0
    while done < entries:
        n = min(batch, entries - done)
        changes = dict(zip(make_keys(done, n), make_values(n, value_size), strict=True))
        new_version = 0 if version is None else version + 1
        result = tree.update(version, new_version, changes)
        store.apply(result)
        store.prune(new_version)
        version = new_version
        done += n
    assert version is not None
    return version, time.perf_counter() - t0


def node_bytes(store: MemoryNodeStore, entries: int, value_size: int) -> tuple[float, float]:
    """(bytes/key of node values excluding values, same including node keys)."""
    enc = sum(len(v) for v in store.nodes.values())
    keys = sum(len(k) for k in store.nodes)
    values = entries * value_size
    return (enc - values) / entries, (enc + keys - values) / entries


def bench_proofs(
    tree: SparseMerkleTree, version: int, entries: int, count: int
) -> dict[str, float]:
    root = tree.root(version)
    present = make_keys(entries // 3, count // 2)
    absent = make_keys(10**12, count - count // 2)
    gen: list[int] = []
    ver: list[int] = []
    dec_ver: list[int] = []
    sizes: list[int] = []
    clock = time.perf_counter_ns
    for i, key in enumerate(present + absent):
        t0 = clock()
        value, proof = tree.get_with_proof(key, version)
        t1 = clock()
        ok = verify_proof(root, key, value, proof)
        t2 = clock()
        raw = proof.to_bytes()
        t3 = clock()
        ok2 = verify_proof(root, key, value, Proof.from_bytes(raw))
        t4 = clock()
        assert ok and ok2 and (value is not None) == (i < len(present))
        gen.append(t1 - t0)
        ver.append(t2 - t1)
        dec_ver.append(t4 - t3)
        sizes.append(len(raw))
    # prove() alone (without returning the value) for the headline figure
    gen_only: list[int] = []
    for key in present:
        t0 = clock()
        tree.prove(key, version)
        gen_only.append(clock() - t0)
    return {
        "gen_us": median_us(gen_only),
        "gen_with_value_us": median_us(gen),
        "verify_us": median_us(ver),
        "decode_verify_us": median_us(dec_ver),
        "proof_bytes": statistics.median(sizes),
    }


def bench_updates(
    tree: SparseMerkleTree,
    reader_store: MemoryNodeStore | None,
    commit: object,
    version: int,
    first_key: int,
    rounds: int,
    batch: int,
    value_size: int,
    cpu: list[float] | None = None,
    must_be_new: bool = False,
) -> tuple[float, float, int]:
    """(keys/s of update() alone, keys/s including commit, last version). If ``cpu`` is
    given, appends the update() rate by process CPU time (less sensitive to other load
    on a shared machine than the wall clock). ``must_be_new``: every key of a batch is
    passed as must_be_new (they are all new), to show what that check costs."""
    upd = 0.0
    upd_cpu = 0.0
    total = 0.0
    key_no = first_key
    for _ in range(rounds):
        changes = dict(zip(make_keys(key_no, batch), make_values(batch, value_size), strict=True))
        key_no += batch
        c0 = time.process_time()
        t0 = time.perf_counter()
        if must_be_new:
            result = tree.update(version, version + 1, changes, must_be_new=changes)
        else:
            result = tree.update(version, version + 1, changes)
        t1 = time.perf_counter()
        upd_cpu += time.process_time() - c0
        if reader_store is not None:
            reader_store.apply(result)
            reader_store.prune(version + 1)
        else:
            commit(result)  # type: ignore[operator]
        t2 = time.perf_counter()
        upd += t1 - t0
        total += t2 - t0
        version += 1
    n = rounds * batch
    if cpu is not None:
        cpu.append(n / upd_cpu)
    return n / upd, n / total, version


class LevelDBReader:
    """NodeReader over a plyvel DB: the whole adapter is one method."""

    def __init__(self, db: object) -> None:
        self.get_node = db.get  # type: ignore[attr-defined]


def bench_leveldb(
    store: MemoryNodeStore,
    version: int,
    first_key: int,
    rounds: int,
    batch: int,
    value_size: int,
    cache_nodes: int,
    warmup: int,
) -> tuple[float, float, float]:
    import plyvel  # type: ignore[import-not-found]  # noqa: PLC0415 - optional phase

    with tempfile.TemporaryDirectory(prefix="bench_smt_") as tmp:
        db = plyvel.DB(tmp, create_if_missing=True)
        t0 = time.perf_counter()
        with db.write_batch() as wb:
            for k, v in store.nodes.items():
                wb.put(k, v)
        # A node that has been running has compacted tables; a bulk load leaves
        # overlapping level-0 files that make every read probe several of them.
        db.compact_range()
        load_s = time.perf_counter() - t0
        reader: NodeReader = LevelDBReader(db)
        tree = SparseMerkleTree(reader, cache_nodes)

        def commit(result: object) -> None:
            with db.write_batch() as wb:
                for k, v in result.new_nodes.items():  # type: ignore[attr-defined]
                    wb.put(k, v)
                for k in result.stale:  # type: ignore[attr-defined]
                    wb.delete(k)

        # Warm the node cache the way a running node would have it.
        _, _, version = bench_updates(
            tree, None, commit, version, first_key, warmup, batch, value_size
        )
        first_key += warmup * batch
        upd, total, _ = bench_updates(
            tree, None, commit, version, first_key, rounds, batch, value_size
        )
        db.close()
    return upd, total, load_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=5_000, help="keys per measured update")
    ap.add_argument("--rounds", type=int, default=20, help="measured update batches")
    ap.add_argument("--build-batch", type=int, default=100_000)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--proofs", type=int, default=2_000)
    ap.add_argument("--no-leveldb", action="store_true")
    ap.add_argument(
        "--cache-nodes",
        type=int,
        default=DEFAULT_CACHE_NODES,
        help="decoded-node cache of the trees (entries)",
    )
    ap.add_argument("--warmup", type=int, default=10, help="LevelDB warm-up batches")
    ap.add_argument(
        "--must-be-new",
        action="store_true",
        help="dict-store phase: pass every batch key as must_be_new",
    )
    args = ap.parse_args()

    store = MemoryNodeStore()
    tree = SparseMerkleTree(store, args.cache_nodes)
    version, build_s = build(tree, store, args.entries, args.build_batch, args.value_size)
    print(
        f"build: {args.entries:,} keys in batches of {args.build_batch:,}: {build_s:.1f} s "
        f"({args.entries / build_s:,.0f} keys/s), {len(store):,} nodes"
    )

    per_key, per_key_with_keys = node_bytes(store, args.entries, args.value_size)
    print(
        f"node bytes/key at latest version (values excluded): {per_key:.1f} "
        f"({per_key_with_keys:.1f} counting node keys)"
    )

    gc.collect()
    proofs = bench_proofs(tree, version, args.entries, args.proofs)
    print(
        f"proof gen median: {proofs['gen_us']:.1f} us "
        f"(get_with_proof {proofs['gen_with_value_us']:.1f} us); "
        f"verify median: {proofs['verify_us']:.1f} us "
        f"(from_bytes + verify {proofs['decode_verify_us']:.1f} us); "
        f"median proof {proofs['proof_bytes']:.0f} bytes"
    )

    snapshot = dict(store.nodes)  # the LevelDB phase starts from the same built tree
    cpu: list[float] = []
    upd, total, _ = bench_updates(
        tree,
        store,
        None,
        version,
        args.entries,
        args.rounds,
        args.batch,
        args.value_size,
        cpu,
        args.must_be_new,
    )
    checked = " (all must_be_new)" if args.must_be_new else ""
    print(
        f"updates (dict store): {args.rounds} batches x {args.batch:,} new keys{checked}: "
        f"{upd:,.0f} keys/s in update() ({cpu[0]:,.0f} keys/s by CPU time), "
        f"{total:,.0f} keys/s with apply+prune; load average {os.getloadavg()[0]:.2f}"
    )

    result = {
        "smt_updates_per_s": round(upd),
        "proof_gen_us": round(proofs["gen_us"], 1),
        "proof_verify_us": round(proofs["verify_us"], 1),
        "smt_node_bytes_per_key": round(per_key, 1),
        "entries": args.entries,
        "batch": args.batch,
        "build_s": round(build_s, 1),
        "smt_updates_per_s_cpu": round(cpu[0]),
    }
    if not args.no_leveldb:
        store.nodes = snapshot
        store.stale_index.clear()
        del tree
        gc.collect()
        lupd, ltotal, load_s = bench_leveldb(
            store,
            version,
            args.entries + 10**9,
            args.rounds,
            args.batch,
            args.value_size,
            args.cache_nodes,
            args.warmup,
        )
        print(
            f"updates (LevelDB, cold cache then {args.warmup} warm-up batches; "
            f"load + compaction {load_s:.1f} s): "
            f"{lupd:,.0f} keys/s in update(), {ltotal:,.0f} keys/s with write batch commit"
        )
        result["smt_updates_per_s_leveldb"] = round(lupd)
        result["smt_updates_per_s_leveldb_committed"] = round(ltotal)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
