"""Tests of ledger/store.py: round trips, refusals at open and commit, pruning, integrity.

Chains are built by ``scripts.store_crash_writer.ChainBuilder``: real signed ATTEST
transactions, real state-tree updates whose root is the header's state root, real
certificates.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import plyvel
import pytest

from ledger.errors import StoreError
from ledger.records import AttestationRecord, attestation_key
from ledger.smt import MissingNodeError, SparseMerkleTree
from ledger.store import Store
from ledger.store_format import (
    FORMAT_VERSION,
    K_FORMAT,
    K_HEIGHT,
    P_BLOCK,
    P_CERT,
    P_HEADER,
    P_NODE,
    P_STALE,
    P_TX,
    h8,
)
from ledger.types import Attest, Block, CommitCertificate
from scripts.store_crash_writer import (
    CHAIN_ID,
    GENESIS_HASH,
    ChainBuilder,
    open_store,
    sign_certificate,
)


def build_chain(path: Path, blocks: int, txs: int = 5, seed: int = 0) -> list[Block]:
    """Genesis plus ``blocks`` blocks of ``txs`` transactions; the store is closed after."""
    with open_store(path) as store:
        builder = ChainBuilder(store, seed)
        chain = [builder.commit_next(0)]
        chain += [builder.commit_next(txs) for _ in range(blocks)]
    return chain


def count_prefix(path: Path, prefix: bytes) -> int:
    db = plyvel.DB(str(path))
    try:
        return sum(1 for _ in db.iterator(prefix=prefix, include_value=False))
    finally:
        db.close()


def raw_db(path: Path) -> plyvel.DB:
    return plyvel.DB(str(path))


# --------------------------------------------------------------------------- round trips


def test_round_trip_of_every_stored_kind(tmp_path: Path) -> None:
    db = tmp_path / "db"
    chain = build_chain(db, blocks=6, txs=7)
    with open_store(db, create=False) as store:
        assert store.height == 6
        assert store.chain_id == CHAIN_ID and store.genesis_hash == GENESIS_HASH
        tree = SparseMerkleTree(store)
        for block in chain:
            h = block.height
            assert store.get_block(h) == block
            assert store.get_block_bytes(h) == block.encode()
            assert store.get_header(h) == block.header
            assert store.get_header_bytes(h) == block.header.encode()
            assert store.get_block_id(h) == block.block_id
            assert store.height_of_block(block.block_id) == h
            meta = store.app_meta(h)
            assert meta is not None and len(meta) > 0
            # The store is the tree's NodeReader: every version's root is the header's.
            assert tree.root(h) == block.header.state_root
            if h == 0:
                assert store.get_certificate(0) is None
                assert store.get_certificate_bytes(0) is None
            else:
                cert = store.get_certificate(h)
                assert cert == sign_certificate(block)
                assert store.get_certificate_bytes(h) == cert.encode()
        assert [b.height for b in store.iter_blocks()] == list(range(7))
        assert list(store.iter_blocks(2, 4)) == chain[2:5]  # inclusive bounds
        assert list(store.iter_blocks(5, 99)) == chain[5:]
        # State written by block 3 reads back through the store, at version 3 and later.
        for pos, tx in enumerate(chain[3].txs):
            assert isinstance(tx.payload, Attest)
            for version in (3, 6):
                raw = tree.get(attestation_key(tx.payload.commitment), version)
                assert raw is not None
                record = AttestationRecord.decode(raw)
                assert (record.height, record.position) == (3, pos)
        assert tree.get(hashlib.sha256(b"counter").digest(), 3) == (3).to_bytes(8, "big")


def test_outside_the_committed_range_reads_none(tmp_path: Path) -> None:
    db = tmp_path / "db"
    build_chain(db, blocks=2)
    with open_store(db, create=False) as store:
        for h in (-1, 3, 10**6):
            assert store.get_block(h) is None
            assert store.get_header(h) is None
            assert store.get_block_bytes(h) is None
            assert store.get_certificate(h) is None
            assert store.get_block_id(h) is None
            assert store.app_meta(h) is None
        assert store.height_of_block(b"\x01" * 32) is None
        assert store.get_node(b"\xff" * 9) is None


def test_empty_store(tmp_path: Path) -> None:
    db = tmp_path / "db"
    with open_store(db) as store:
        assert store.height == -1
        assert store.get_block(0) is None
        assert list(store.iter_blocks()) == []
        assert store.disk_bytes() > 0
    with open_store(db, create=False) as store:  # an initialised empty store reopens
        assert store.height == -1


def test_tx_index_and_get_tx(tmp_path: Path) -> None:
    db = tmp_path / "db"
    chain = build_chain(db, blocks=12, txs=9)
    with Store.open(db, chain_id=CHAIN_ID, genesis_hash=GENESIS_HASH, block_cache=2) as store:
        for block in chain:
            for pos, tx in enumerate(block.txs):
                assert store.tx_location(tx.tx_id) == (block.height, pos)
                got = store.get_tx(tx.tx_id)
                assert got == tx and got.encode() == tx.encode()
        assert len(store._blocks) <= 2  # the decoded-block cache stays bounded
        assert store.tx_location(b"\x00" * 32) is None
        assert store.get_tx(b"\x00" * 32) is None
    # Each transaction is stored once (inside its block) plus one small index entry.
    assert count_prefix(db, P_TX) == 12 * 9


def test_store_persists_across_reopen_and_continues(tmp_path: Path) -> None:
    db = tmp_path / "db"
    chain = build_chain(db, blocks=3)
    with open_store(db, create=True) as store:  # create=True on our own store just opens it
        assert store.height == 3
        assert store.get_block_id(3) == chain[-1].block_id
        nxt = ChainBuilder(store, seed=9).commit_next(4)
        assert nxt.header.prev_block_id == chain[-1].block_id
    with open_store(db, create=False) as store:
        assert store.height == 4
        assert store.get_block(4) == nxt


def test_closed_store_refuses_use(tmp_path: Path) -> None:
    store = open_store(tmp_path / "db")
    with store:
        pass
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.get_node(b"\x00" * 9)
    with pytest.raises(StoreError, match="closed"):
        store.get_block(0)


# --------------------------------------------------------------------------- commit rules


def test_commit_refuses_gaps_repeats_and_broken_links(tmp_path: Path) -> None:
    with open_store(tmp_path / "db") as store:
        builder = ChainBuilder(store)
        genesis, _, gupd, gmeta = builder.build(0)
        with pytest.raises(StoreError, match="genesis block .height 0. takes no certificate"):
            store.commit(genesis, sign_certificate(genesis), gupd.new_nodes, gupd.stale, gmeta)
        store.commit(genesis, None, gupd.new_nodes, gupd.stale, gmeta)
        with pytest.raises(
            StoreError, match="store is at height 0, so the next block must be at height 1"
        ):
            store.commit(genesis, None, gupd.new_nodes, gupd.stale, gmeta)

        block, cert, upd, meta = builder.build(3)
        assert cert is not None
        with pytest.raises(StoreError, match="block 1 needs a commit certificate"):
            store.commit(block, None, upd.new_nodes, upd.stale, meta)
        wrong = CommitCertificate(1, 0, b"\x07" * 32, cert.signatures)
        with pytest.raises(StoreError, match="does not commit block 1"):
            store.commit(block, wrong, upd.new_nodes, upd.stale, meta)
        bad_nodes = {h8(7) + k[8:]: v for k, v in upd.new_nodes.items()}
        with pytest.raises(StoreError, match="is not at version 1"):
            store.commit(block, cert, bad_nodes, upd.stale, meta)
        store.commit(block, cert, upd.new_nodes, upd.stale, meta)

        # A block whose prev_block_id is not the tip's id: build it on top of genesis.
        replay = Block(replace(block.header, height=2), block.txs)
        with pytest.raises(StoreError, match="does not extend the stored chain"):
            store.commit(replay, sign_certificate(replay), {}, [], meta)
        # Height 3 while at 1: a gap.
        gap = Block(replace(block.header, height=3, tx_count=0), ())
        with pytest.raises(StoreError, match="the next block must be at height 2"):
            store.commit(gap, sign_certificate(gap), {}, [], meta)
        next_header = replace(block.header, height=2, prev_block_id=block.block_id)
        twice = Block(replace(next_header, tx_count=2), (block.txs[0], block.txs[0]))
        with pytest.raises(StoreError, match="same transaction twice"):
            store.commit(twice, sign_certificate(twice), {}, [], meta)
        other = Block(replace(next_header, chain_id="other-chain", tx_count=0), ())
        with pytest.raises(StoreError, match="is for chain 'other-chain'"):
            store.commit(other, sign_certificate(other), {}, [], meta)
        assert store.height == 1  # refused commits wrote nothing
    with open_store(tmp_path / "db", create=False) as store:
        assert store.height == 1
        assert store.get_block(2) is None


# --------------------------------------------------------------------------- refusals at open


def _open(
    path: Path, create: bool = False, chain_id: str = CHAIN_ID, genesis_hash: bytes = GENESIS_HASH
) -> Store:
    return Store.open(path, chain_id=chain_id, genesis_hash=genesis_hash, create=create)


def test_open_refuses_missing_directory(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here"
    with pytest.raises(
        StoreError, match="no ledger store at .*nothing-here.*does not exist; initialise it first"
    ):
        _open(path)
    assert not path.exists()  # create=False never creates


def test_open_refuses_a_file(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("hello")
    for create in (False, True):
        with pytest.raises(StoreError, match="a-file is a file, not a ledger store directory"):
            _open(path, create=create)


def test_open_refuses_a_directory_that_is_not_leveldb(tmp_path: Path) -> None:
    path = tmp_path / "docs"
    path.mkdir()
    (path / "notes.txt").write_text("not a database")
    with pytest.raises(StoreError, match="docs: the directory is not a LevelDB database"):
        _open(path)
    with pytest.raises(
        StoreError, match="refusing to create a ledger store in .*docs: the directory is not empty"
    ):
        _open(path, create=True)
    assert sorted(p.name for p in path.iterdir()) == ["notes.txt"]


def test_open_refuses_a_corrupt_leveldb(tmp_path: Path) -> None:
    path = tmp_path / "db"
    build_chain(path, blocks=1)
    manifest = next(path.glob("MANIFEST-*"))
    manifest.write_bytes(b"\x00garbage" * 8)
    with pytest.raises(
        StoreError,
        match=r"db: LevelDB reports corruption \(Corruption: .*\); "
        "restore the data directory from a backup",
    ):
        _open(path)


def test_open_refuses_a_foreign_leveldb(tmp_path: Path) -> None:
    path = tmp_path / "foreign"
    db = plyvel.DB(str(path), create_if_missing=True)
    db.put(b"user:1", b"alice")
    db.close()
    for create in (False, True):
        with pytest.raises(
            StoreError,
            match="foreign is a LevelDB database of another program "
            r"\(it holds data but no dvp ledger-store magic\)",
        ):
            _open(path, create=create)
    db = plyvel.DB(str(path))
    assert db.get(b"user:1") == b"alice" and db.get(b"Mmagic") is None  # left untouched
    db.close()


def test_open_refuses_an_empty_leveldb_without_create(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    plyvel.DB(str(path), create_if_missing=True).close()
    with pytest.raises(
        StoreError, match="empty is an empty LevelDB database, not an initialised ledger store"
    ):
        _open(path)
    with _open(path, create=True) as store:
        assert store.height == -1


def test_open_refuses_another_chain(tmp_path: Path) -> None:
    path = tmp_path / "db"
    build_chain(path, blocks=1)
    for create in (False, True):
        with pytest.raises(
            StoreError,
            match="holds chain 'dvp-store-test', not 'other': wrong "
            "data directory or wrong genesis file",
        ):
            _open(path, create=create, chain_id="other")
        with pytest.raises(StoreError, match=f"genesis hash {GENESIS_HASH.hex()}, not {'ab' * 32}"):
            _open(path, create=create, genesis_hash=b"\xab" * 32)
    with _open(path) as store:  # and the store was not changed by the refusals
        assert store.height == 1


def test_open_refuses_a_newer_format(tmp_path: Path) -> None:
    path = tmp_path / "db"
    build_chain(path, blocks=1)
    db = raw_db(path)
    db.put(K_FORMAT, (FORMAT_VERSION + 1).to_bytes(4, "big"))
    db.close()
    with pytest.raises(
        StoreError,
        match=f"store format version {FORMAT_VERSION + 1}, newer "
        f"than the version {FORMAT_VERSION} this software "
        "reads; upgrade dvp",
    ):
        _open(path)


def test_open_refuses_a_height_whose_block_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "db"
    build_chain(path, blocks=3)
    db = raw_db(path)
    db.put(K_HEIGHT, h8(4))  # claims a block that was never written
    db.close()
    with pytest.raises(
        StoreError,
        match="says height 4 is committed but that block is "
        "unusable .header at height 4 is missing",
    ):
        _open(path)
    db = raw_db(path)
    db.put(K_HEIGHT, h8(3))
    db.delete(P_CERT + h8(3))
    db.close()
    with pytest.raises(
        StoreError,
        match="height 3 is committed but that block is unusable "
        ".certificate at height 3 is missing",
    ):
        _open(path)


def test_open_refuses_a_store_already_open(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with open_store(path):
        with pytest.raises(
            StoreError,
            match="cannot open ledger store at .*db: .*lock.*; is it open in another process",
        ):
            _open(path)


# --------------------------------------------------------------------------- integrity


@pytest.mark.parametrize(
    "prefix, what", [(P_BLOCK, "block"), (P_HEADER, "header"), (P_CERT, "certificate")]
)
def test_a_flipped_byte_is_reported_with_its_height(
    tmp_path: Path, prefix: bytes, what: str
) -> None:
    path = tmp_path / "db"
    chain = build_chain(path, blocks=5, txs=4)
    db = raw_db(path)
    key = prefix + h8(3)
    value = bytearray(db.get(key))
    value[len(value) // 2] ^= 0x01  # one bit in the middle: inside a transaction/signature
    db.put(key, bytes(value))
    db.close()
    with open_store(path, create=False) as store:
        with pytest.raises(StoreError, match=f"{what} at height 3 is corrupt: checksum mismatch"):
            store.get_block(3) if what != "certificate" else store.get_certificate(3)
        with pytest.raises(StoreError, match="at height 3"):
            list(store.iter_blocks()) if what != "certificate" else store.get_certificate_bytes(3)
        if what == "block":
            with pytest.raises(StoreError, match="block at height 3"):
                store.get_tx(chain[3].txs[0].tx_id)
        assert store.get_block(4) == chain[4]  # the damage stays local


def test_a_value_under_the_wrong_key_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "db"
    build_chain(path, blocks=3)
    db = raw_db(path)
    db.put(P_HEADER + h8(2), db.get(P_HEADER + h8(1)))  # a valid value, but block 1's
    db.close()
    with open_store(path, create=False) as store:
        with pytest.raises(StoreError, match="header at height 2 is corrupt"):
            store.get_header(2)


# --------------------------------------------------------------------------- pruning


def test_prune_keeps_retained_versions_whole_and_frees_nodes(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with open_store(path) as store:
        builder = ChainBuilder(store, seed=3)
        builder.commit_next(0)
        expected: dict[int, dict[bytes, bytes]] = {}
        for _ in range(30):
            block = builder.commit_next(6)
            expected[block.height] = dict(SparseMerkleTree(store).items(block.height))
        roots = {h: store.get_header(h).state_root for h in range(31)}  # type: ignore[union-attr]
    nodes_before = count_prefix(path, P_NODE)
    journals_before = count_prefix(path, P_STALE)
    assert journals_before == 30  # every non-genesis version made something stale

    with open_store(path, create=False) as store:
        deleted = store.prune_state(20)
        assert deleted > 0
        assert store.state_pruned_below == 20
        tree = SparseMerkleTree(store)
        for v in range(20, 31):
            assert tree.root(v) == roots[v]
            assert dict(tree.items(v)) == expected[v]
        # Pruning is real: old versions lost nodes (their walk fails).
        with pytest.raises(MissingNodeError):
            dict(tree.items(5))
        assert store.prune_state(20) == 0  # idempotent
        with pytest.raises(
            StoreError, match="cannot prune state before version 31: the latest version is 30"
        ):
            store.prune_state(31)
    assert count_prefix(path, P_NODE) == nodes_before - deleted
    assert count_prefix(path, P_STALE) == journals_before - 20  # versions 1..20 consumed

    with open_store(path, create=False) as store:  # survives reopen, and continues
        assert store.state_pruned_below == 20
        builder = ChainBuilder(store, seed=4)
        for _ in range(5):
            block = builder.commit_next(3)
            expected[block.height] = dict(SparseMerkleTree(store).items(block.height))
        store.prune_state(store.height)  # keep only the tip
        tree = SparseMerkleTree(store)
        assert dict(tree.items(35)) == expected[35]
        assert tree.root(35) == store.get_header(35).state_root  # type: ignore[union-attr]
        before = store.disk_bytes()
        store.compact()
        assert store.disk_bytes() <= before + 64 * 1024


def test_prune_in_small_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ledger.store as store_mod

    monkeypatch.setattr(store_mod, "PRUNE_JOURNALS_PER_BATCH", 3)
    path = tmp_path / "db"
    with open_store(path) as store:
        builder = ChainBuilder(store, seed=5)
        builder.commit_next(0)
        for _ in range(12):
            builder.commit_next(4)
        want = dict(SparseMerkleTree(store).items(10))
        store.prune_state(10)
        assert store.state_pruned_below == 10
        assert dict(SparseMerkleTree(store).items(10)) == want
        assert SparseMerkleTree(store).root(12) == store.get_header(12).state_root  # type: ignore[union-attr]
