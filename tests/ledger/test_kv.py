"""The key-value backends: memory behaves like LevelDB, and its power-cut model."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from ledger.chain import Ledger
from ledger.kv import KVError, MemoryKV, open_leveldb
from ledger.testchain import Consortium
from node.consensus_db import ConsensusDB


def _key(rng: random.Random) -> bytes:
    # Never a bare one-byte key: plyvel 1.5 skips a key equal to the prefix in a reverse
    # prefix scan when a later key exists; the stores never have such keys.
    return bytes([rng.choice(b"abc")]) + rng.randbytes(rng.randint(1, 2))


def test_memory_backend_answers_like_leveldb(tmp_path: Path) -> None:
    """The same random operations on both backends; every read must agree."""
    rng = random.Random(7)
    level = open_leveldb(str(tmp_path / "db"), create_if_missing=True)
    mem = MemoryKV()
    try:
        for _ in range(1500):
            roll = rng.random()
            key = _key(rng)
            if roll < 0.3:
                value = rng.randbytes(3)
                level.put(key, value)
                mem.put(key, value)
            elif roll < 0.4:
                level.delete(key)
                mem.delete(key)
            elif roll < 0.55:
                ops = [(_key(rng), rng.randbytes(2) if rng.random() < 0.7 else None)]
                ops += [(_key(rng), rng.randbytes(2)) for _ in range(rng.randint(0, 3))]
                for db in (level, mem):
                    with db.write_batch(sync=rng.random() < 0.5) as wb:
                        for k, v in ops:
                            wb.put(k, v) if v is not None else wb.delete(k)
            elif roll < 0.7:
                assert mem.get(key) == level.get(key)
            else:
                opts: dict[str, object] = {
                    "reverse": rng.random() < 0.5,
                    "include_value": rng.random() < 0.7,
                    "include_key": True,
                }
                if rng.random() < 0.5:
                    opts["prefix"] = key[:1]
                else:
                    a, b = sorted([_key(rng), _key(rng)])
                    opts["start"], opts["stop"] = a, b
                    if rng.random() < 0.3:
                        opts["include_value"], opts["include_key"] = True, False
                with level.iterator(**opts) as a_it, mem.iterator(**opts) as b_it:
                    assert list(b_it) == list(a_it), opts
    finally:
        level.close()


def test_power_cut_keeps_synced_writes_and_what_came_before() -> None:
    kv = MemoryKV()
    kv.put(b"a", b"1")  # unsynced
    with kv.write_batch(sync=True) as wb:  # flushes itself and everything before it
        wb.put(b"b", b"2")
    kv.put(b"c", b"3")  # unsynced: lost at the cut
    kv.delete(b"a")  # unsynced: the delete is lost, "a" comes back
    assert kv.get(b"c") == b"3" and kv.get(b"a") is None
    after = kv.crash()
    assert dict(after.iterator()) == {b"a": b"1", b"b": b"2"}
    with pytest.raises(KVError):
        kv.get(b"a")


def test_power_cut_with_rng_keeps_a_prefix_of_whole_batches() -> None:
    seen = set()
    for seed in range(40):
        kv = MemoryKV()
        with kv.write_batch() as wb:
            wb.put(b"x1", b"1")
            wb.put(b"x2", b"1")
        with kv.write_batch() as wb:
            wb.put(b"y1", b"1")
            wb.put(b"y2", b"1")
        image = dict(kv.crash(random.Random(seed)).iterator())
        assert set(image) in ({*()}, {b"x1", b"x2"}, {b"x1", b"x2", b"y1", b"y2"})
        seen.add(len(image))
    assert seen == {0, 2, 4}


def test_ignore_sync_makes_synced_writes_losable() -> None:
    kv = MemoryKV()
    kv.ignore_sync = True
    kv.put(b"r", b"record", sync=True)
    assert kv.crash().get(b"r") is None


def test_ledger_and_consensus_db_over_memory_survive_a_power_cut() -> None:
    c = Consortium.make()
    kv = MemoryKV()
    ledger = Ledger.open_kv(kv, c.genesis, create=True)
    ex = ledger.build(
        [c.attest(b"\x01" * 32)], time_ms=ledger.head.time_ms + 1, proposer=c.proposer
    )
    ledger.commit(ex.block, c.certify(ex.block))
    assert ledger.height == 1
    reopened = Ledger.open_kv(kv.crash(), c.genesis, create=False)
    assert reopened.height == 1 and reopened.head.block_id == ex.block.block_id
    assert reopened.store.tx_location(ex.block.tx_ids[0]) == (1, 0)

    ckv = MemoryKV()
    cdb = ConsensusDB(ckv)
    cdb.save(None, [(3, b"\x07" * 32, b"payload")])
    cdb.save_evidence(b"ev")
    cdb.prune_payloads(2)
    again = ConsensusDB(ckv.crash())
    assert again.payloads() == [b"payload"] and again.evidence() == [b"ev"]
