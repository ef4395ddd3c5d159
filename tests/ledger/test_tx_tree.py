"""Blocks stored in chunks with their tx tree above them (ledger/tx_tree.py): proofs read
from the stored records equal proofs recomputed from the whole block, and the store's
check, pruning and state sync keep the records consistent.

One chain with blocks of 0 .. 70 transactions (one chunk, exactly one full chunk, one
more than a chunk, several) is built once; tests that change a store use a copy.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import plyvel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import merkle, tx_tree
from ledger.chain import Ledger
from ledger.errors import BodyPruned, StoreDamage, StoreError
from ledger.prove import Prover
from ledger.state_snapshot import export_snapshot, import_snapshot
from ledger.store import Store
from ledger.store_check import check_ledger
from ledger.store_format import P_CHUNK, P_TX_TREE, chunk_key, h8, seal
from ledger.testchain import GENESIS_TIME_MS, Consortium
from ledger.types import Attest, Block, ChainParams

SIZES = [0, 1, 15, 16, 17, 32, 33, 70, 3, 40, 5, 48]
TTL = 6


@dataclass
class Chain:
    cons: Consortium
    path: Path
    blocks: dict[int, Block]  # height -> block, as committed


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    cons = Consortium.make(ChainParams(tx_ttl_heights=TTL))
    path = tmp_path_factory.mktemp("txtree") / "ledger"
    blocks: dict[int, Block] = {}
    with Ledger.open(path, cons.genesis) as lg:
        for i, n in enumerate(SIZES):
            h = lg.height + 1
            txs = [
                cons.tx(
                    "szcredit",
                    Attest("credit-report", bytes([i + 1, j]) * 16, GENESIS_TIME_MS, 0),
                    h + TTL - 1,
                )
                for j in range(n)
            ]
            cons.commit(lg, txs)
            block = lg.store.get_block(h)
            assert block is not None
            blocks[h] = block
    return Chain(cons, path, blocks)


@pytest.fixture
def copy(chain: Chain, tmp_path: Path) -> Path:
    dst = tmp_path / "ledger"
    shutil.copytree(chain.path, dst)
    return dst


def _open(chain: Chain, path: Path) -> Ledger:
    return Ledger.open(path, chain.cons.genesis, create=False, verify_tables=True)


# ------------------------------------------------------------------ the tree alone


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 8, 9, 16, 17, 31, 33, 70])
def test_level_proofs_are_rfc9162_proofs(size: int) -> None:
    leaves = [bytes([i]) * (i % 5 + 1) for i in range(size)]
    levels = tx_tree.levels([merkle.leaf_hash(d) for d in leaves])
    assert levels[-1] == [merkle.root(leaves)]
    for i in range(size):
        assert tx_tree.level_proof(levels, i) == merkle.inclusion_proof(leaves, i)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 700), st.data())
def test_a_proof_from_the_stored_records_is_the_recomputed_one(n: int, data: st.DataObject) -> None:
    """Chunk tree + node record == the whole block's tree, for any size and position."""
    ids = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]  # stand-in tx ids
    full = tx_tree.levels([merkle.leaf_hash(t) for t in ids])
    upper = tx_tree.upper_nodes(ids)
    assert tx_tree.upper_size_ok(upper, n)
    assert not tx_tree.upper_size_ok(upper + bytes(32), n)
    pos = data.draw(st.integers(0, n - 1), label="position")
    c, index = divmod(pos, tx_tree.CHUNK_TXS)
    part = ids[c * tx_tree.CHUNK_TXS : (c + 1) * tx_tree.CHUNK_TXS]
    own = tx_tree.levels([merkle.leaf_hash(t) for t in part])
    proof = tx_tree.level_proof(own, index)
    if n > tx_tree.CHUNK_TXS:
        recorded, above = tx_tree.upper_proof(upper, n, c)
        assert recorded == own[-1][0]
        proof += above
    else:
        assert upper == b""
    assert proof == tx_tree.level_proof(full, pos) == merkle.inclusion_proof(ids, pos)
    leaf = merkle.leaf_hash(ids[pos])
    assert tx_tree.root_from_path(leaf, pos, n, proof) == merkle.root(ids)


@given(st.lists(st.binary(min_size=1, max_size=40), max_size=60))
def test_chunks_split_back_into_the_transactions(txs: list[bytes]) -> None:
    encoded = [b"\xc4" + bytes([len(t)]) + t for t in txs]  # msgpack bin 8 items
    payloads = tx_tree.chunk_payloads(encoded)
    assert len(payloads) == tx_tree.chunk_count(len(encoded))
    assert [t for p in payloads for t in tx_tree.split_chunk(p)] == encoded
    for p in payloads:
        with pytest.raises(ValueError):
            tx_tree.split_chunk(p + b"\x00")


def test_a_chunk_of_more_than_16_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 16"):
        tx_tree.chunk_items(b"\xdc\x00\x11" + b"\xc0" * 17)


# ------------------------------------------------------------------ the store


def test_the_store_keeps_chunks_and_nodes_and_reads_whole_blocks(chain: Chain) -> None:
    with _open(chain, chain.path) as lg:
        db = lg.store._db
        for h, block in chain.blocks.items():
            n = len(block.txs)
            assert lg.store.get_block_bytes(h) == block.encode()
            chunks = [k for k in db.iterator(prefix=P_CHUNK + h8(h), include_value=False)]
            assert chunks == [chunk_key(h, c) for c in range(1, tx_tree.chunk_count(n))]
            assert (db.get(P_TX_TREE + h8(h)) is not None) == (n > tx_tree.CHUNK_TXS)
        txs = sum(len(b.txs) for b in chain.blocks.values())
        assert check_ledger(lg, recent=None).transactions == txs


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_prover_proofs_equal_recomputed_ones(chain: Chain, data: st.DataObject) -> None:
    with _open(chain, chain.path) as lg:
        cached, tiny = Prover(lg), Prover(lg, block_cache_bytes=1)
        head = cached.refresh()
        tiny.refresh()
        heights = [h for h, b in chain.blocks.items() if b.txs]
        for _ in range(5):
            h = data.draw(st.sampled_from(heights), label="height")
            block = chain.blocks[h]
            pos = data.draw(st.integers(0, len(block.txs) - 1), label="position")
            for prover in (cached, tiny):
                inc = prover.included(h, pos, head)
                assert inc.tx == block.txs[pos].encode()
                assert inc.header == block.header.encoded
                assert list(inc.tx_proof) == merkle.inclusion_proof(block.tx_ids, pos)


def test_bundles_after_dropping_the_caches_are_the_same(chain: Chain) -> None:
    """``Prover.drop_caches`` (what bench_scale's uncached proofs use) changes costs,
    never answers: every bundle built again from the store alone is byte-identical."""
    with _open(chain, chain.path) as lg:
        prover = Prover(lg)
        attests = [b.txs[0].payload for b in chain.blocks.values() if b.txs]
        commitments = [p.commitment for p in attests if isinstance(p, Attest)]
        assert len(commitments) == len(attests)
        absent = bytes(32)
        before = [json.dumps(prover.bundle(c).to_json()) for c in [*commitments, absent]]
        after = []
        for c in [*commitments, absent]:
            prover.drop_caches()
            after.append(json.dumps(prover.bundle(c).to_json()))
        assert after == before
        assert len(set(before)) == len(before)


def _big(chain: Chain) -> int:
    return next(h for h, b in chain.blocks.items() if len(b.txs) == 70)


def test_a_missing_chunk_is_damage(chain: Chain, copy: Path) -> None:
    h = _big(chain)
    db = plyvel.DB(str(copy))
    db.delete(chunk_key(h, 2), sync=True)
    db.close()
    with _open(chain, copy) as lg:
        with pytest.raises(StoreDamage, match=rf"height {h} are damaged: chunk 2 is missing"):
            lg.store.get_block_bytes(h)
        with pytest.raises(StoreDamage, match="chunk 2 of block at height"):
            Prover(lg).included(h, 40, lg.height)
        with pytest.raises(StoreDamage):
            check_ledger(lg, recent=None)


def test_a_changed_node_record_is_refused(chain: Chain, copy: Path) -> None:
    h = _big(chain)
    key = P_TX_TREE + h8(h)
    db = plyvel.DB(str(copy))
    nodes = bytearray(db.get(key)[4:])
    nodes[-40] ^= 1  # a node above the chunks, resealed: no checksum catches it
    db.put(key, seal(key, bytes(nodes)), sync=True)
    db.close()
    with _open(chain, copy) as lg:
        prover = Prover(lg)
        with pytest.raises(StoreError, match="do not match tx_root|does not match its tx-tree"):
            for pos in range(70):
                prover.included(h, pos, lg.height)
        with pytest.raises(StoreDamage, match="tx-tree node record is not"):
            check_ledger(lg, recent=None)


def test_a_stray_chunk_is_damage(chain: Chain, copy: Path) -> None:
    h = next(h for h, b in chain.blocks.items() if len(b.txs) == 16)
    db = plyvel.DB(str(copy))
    key = chunk_key(h, 1)
    db.put(key, seal(key, b"\x90"), sync=True)
    db.close()
    with _open(chain, copy) as lg, pytest.raises(StoreDamage):
        check_ledger(lg, recent=None)


def test_pruning_deletes_chunks_and_nodes_and_proofs_say_pruned(chain: Chain, copy: Path) -> None:
    with _open(chain, copy) as lg:
        lg.retain_blocks = 3
        lg.prune_bodies()
        floor = lg.store.bodies_from
        assert floor == lg.height - 2
        db = lg.store._db
        for prefix in (P_CHUNK, P_TX_TREE):
            left = [k for k in db.iterator(prefix=prefix, include_value=False)]
            assert all(int.from_bytes(k[1:9], "big") >= floor for k in left)
        h = _big(chain)
        assert h < floor
        with pytest.raises(BodyPruned, match="ask an archive node"):
            Prover(lg).included(h, 20, lg.height)
        check_ledger(lg, recent=None)


def test_state_sync_writes_chunks_and_nodes(chain: Chain, tmp_path: Path) -> None:
    g = chain.cons.genesis
    with _open(chain, chain.path) as src:
        chunks = list(export_snapshot(src.store))
        head = src.height
    store = Store.open(tmp_path / "joined", chain_id=g.chain_id, genesis_hash=g.hash, create=True)
    import_snapshot(store, g, chunks)
    with Ledger(store, g) as lg:
        floor = lg.store.bodies_from
        kept = {h: b for h, b in chain.blocks.items() if h >= floor}
        assert any(len(b.txs) > tx_tree.CHUNK_TXS for b in kept.values())
        prover = Prover(lg)
        prover.refresh()
        for h, block in kept.items():
            assert lg.store.get_block_bytes(h) == block.encode()
            for pos in range(len(block.txs)):
                inc = prover.included(h, pos, head)
                assert list(inc.tx_proof) == merkle.inclusion_proof(block.tx_ids, pos)
        check_ledger(lg, recent=None)
