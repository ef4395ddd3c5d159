"""State snapshots (issue 19 item 2): export from a store, import into an empty one with
every part verified against the genesis file, and what the imported store serves.

One chain of 30 attesting blocks (transaction lifetime 10 heights) is built once; each
test imports its snapshot (possibly tampered with) into a fresh store.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import trio

from ledger.chain import Ledger
from ledger.codec import decode, encode
from ledger.errors import BodyPruned, StoreError
from ledger.prove import Prover
from ledger.smt import SparseMerkleTree
from ledger.state import decode_app_meta
from ledger.state_snapshot import (
    SnapshotError,
    body_floor,
    export_snapshot,
    import_snapshot,
    parse_chunk,
)
from ledger.store import Store
from ledger.store_check import check_ledger
from ledger.testchain import GENESIS_TIME_MS, Consortium
from ledger.types import Attest, Block, BlockHeader, ChainParams
from ledger.verify import TrustAnchor, verify_bundle
from node import state_sync, sync

BLOCKS = 30
TTL = 10
C = [bytes([i]) * 32 for i in range(1, 120)]


@dataclass
class Chain:
    cons: Consortium
    path: Path
    attested_at: dict[bytes, int]
    last_txs: list[Any]  # the transactions of the last block (for the replay check)
    chunks: list[bytes]
    head: int
    state_root: bytes


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    cons = Consortium.make(ChainParams(tx_ttl_heights=TTL))
    path = tmp_path_factory.mktemp("snap") / "ledger"
    attested: dict[bytes, int] = {}
    txs: list[Any] = []
    with Ledger.open(path, cons.genesis) as lg:
        for i in range(BLOCKS):
            h = lg.height + 1
            txs = [
                cons.tx("szcredit", Attest("credit-report", c, GENESIS_TIME_MS, 0), h + TTL - 1)
                for c in C[3 * i : 3 * i + 3]
            ]
            cons.commit(lg, txs)
            attested.update({c: h for c in C[3 * i : 3 * i + 3]})
        chunks = list(export_snapshot(lg.store))
        return Chain(cons, path, attested, txs, chunks, lg.height, lg.head.state_root)


def _store(chain: Chain, path: Path) -> Store:
    g = chain.cons.genesis
    return Store.open(path, chain_id=g.chain_id, genesis_hash=g.hash, create=True)


def _import(chain: Chain, path: Path, chunks: list[bytes]) -> Ledger:
    store = _store(chain, path)
    try:
        import_snapshot(store, chain.cons.genesis, chunks)
        return Ledger(store, chain.cons.genesis)
    except BaseException:
        store.close()
        raise


def _edit(chunks: list[bytes], kind: str, change: Callable[[list[Any]], None]) -> list[bytes]:
    """The chunks with ``change`` applied to the first decoded chunk of ``kind``."""
    out = list(chunks)
    for i, raw in enumerate(out):
        obj = decode(raw, 1 << 24)
        if obj[0] == kind:
            change(obj)
            out[i] = encode(obj)
            return out
    raise AssertionError(f"no {kind} chunk")


def test_round_trip_serves_the_same_state_and_passes_the_full_check(
    chain: Chain, tmp_path: Path
) -> None:
    with _import(chain, tmp_path / "joined", chain.chunks) as lg:
        assert lg.height == chain.head
        assert lg.head.state_root == chain.state_root
        floor = body_floor(chain.head, TTL)
        assert lg.store.bodies_from == floor == chain.head + 1 - TTL
        assert lg.store.tx_indexed_from == floor
        assert lg.store.state_pruned_below == chain.head
        with Ledger.open(chain.path, chain.cons.genesis, create=False) as src:
            assert dict(lg.tree.items(chain.head)) == dict(src.tree.items(chain.head))
            assert sorted(lg.head.members) == sorted(src.head.members)
            assert lg.head.chain == src.head.chain
        report = check_ledger(lg, recent=None)
        assert report.height == chain.head and report.state_entries


def test_imported_store_proves_new_attestations_and_refuses_pruned_ones(
    chain: Chain, tmp_path: Path
) -> None:
    with _import(chain, tmp_path / "joined", chain.chunks) as lg:
        prover = Prover(lg)
        floor = lg.store.bodies_from
        old = next(c for c, h in chain.attested_at.items() if h < floor)
        new = next(c for c, h in chain.attested_at.items() if h >= floor)
        with pytest.raises(BodyPruned, match="ask an archive node"):
            prover.bundle(old)
        anchor = TrustAnchor(chain.cons.genesis.chain_id, chain.cons.genesis.validators)
        now = int(time.time() * 1000)
        verdict = verify_bundle(prover.bundle(new), anchor, now_ms=now, max_age_ms=None)
        assert verdict.status.name == "VALID"
        assert verdict.attested_height == chain.attested_at[new]


def test_imported_ledger_continues_the_chain_and_refuses_replays(
    chain: Chain, tmp_path: Path
) -> None:
    with _import(chain, tmp_path / "joined", chain.chunks) as lg:
        ex = lg.build(chain.last_txs, time_ms=lg.tip.time_ms + 1000, proposer=chain.cons.proposer)
        assert ex.block.txs == () and len(ex.rejected) == len(chain.last_txs)
        assert {err.code for _tx, err in ex.rejected} == {"replay"}
        lg.discard_pending(lg.height + 1)
        fresh = Attest("credit-report", C[-1], GENESIS_TIME_MS, 0)
        h = chain.cons.commit(lg, [chain.cons.tx("szcredit", fresh, lg.height + 2)])
        assert h == chain.head + 1
        check_ledger(lg, recent=None)


def test_items_after_pages_through_every_leaf(chain: Chain) -> None:
    with Ledger.open(chain.path, chain.cons.genesis, create=False) as lg:
        tree = SparseMerkleTree(lg.store)
        every = list(tree.items(chain.head))
        for i in (0, 1, len(every) // 2, len(every) - 1):
            assert list(tree.items_after(chain.head, every[i][0])) == every[i + 1 :]
        assert list(tree.items_after(chain.head, b"\x00" * 32)) == every
        assert list(tree.items_after(chain.head, b"\xff" * 32)) == []


# --------------------------------------------------------------------------- tampering


def _refused(chain: Chain, tmp_path: Path, chunks: list[bytes], match: str) -> None:
    store = _store(chain, tmp_path / "joined")
    try:
        with pytest.raises(SnapshotError, match=match):
            import_snapshot(store, chain.cons.genesis, chunks)
        assert store.height == -1 and store.importing
        with pytest.raises(StoreError, match="unfinished state-sync import"):
            Ledger(store, chain.cons.genesis)
    finally:
        store.close()


def test_a_changed_leaf_is_refused(chain: Chain, tmp_path: Path) -> None:
    def change(obj: list[Any]) -> None:
        key, value = obj[1][5]
        obj[1][5] = [key, value[:-1] + bytes([value[-1] ^ 1])]

    _refused(chain, tmp_path, _edit(chain.chunks, "leaves", change), "certified state root")


def test_a_missing_leaf_is_refused(chain: Chain, tmp_path: Path) -> None:
    _refused(
        chain,
        tmp_path,
        _edit(chain.chunks, "leaves", lambda obj: obj[1].pop(7)),
        "certified state root",
    )


def test_leaves_out_of_order_are_refused(chain: Chain, tmp_path: Path) -> None:
    def swap(obj: list[Any]) -> None:
        obj[1][2], obj[1][3] = obj[1][3], obj[1][2]

    _refused(chain, tmp_path, _edit(chain.chunks, "leaves", swap), "ascending key order")


def test_a_wrong_header_is_refused(chain: Chain, tmp_path: Path) -> None:
    def change(obj: list[Any]) -> None:
        header = BlockHeader.decode(obj[2][5][0])
        obj[2][5][0] = replace(header, time_ms=header.time_ms + 1).encoded

    _refused(chain, tmp_path, _edit(chain.chunks, "headers", change), "certificate")


def test_a_forged_certificate_is_refused(chain: Chain, tmp_path: Path) -> None:
    def change(obj: list[Any]) -> None:
        header = BlockHeader.decode(obj[2][5][0])
        below_quorum = chain.cons.certify(Block(header, ()), signers=["cnix"])
        obj[2][5][1] = below_quorum.encode()

    _refused(chain, tmp_path, _edit(chain.chunks, "headers", change), "certificate does not")


def test_another_genesis_is_refused(chain: Chain, tmp_path: Path) -> None:
    def change(obj: list[Any]) -> None:
        header = BlockHeader.decode(obj[2][0][0])
        obj[2][0][0] = replace(header, time_ms=header.time_ms + 1).encoded

    _refused(chain, tmp_path, _edit(chain.chunks, "headers", change), "genesis")


def test_app_metadata_that_is_not_the_states_is_refused(chain: Chain, tmp_path: Path) -> None:
    def change(obj: list[Any]) -> None:
        meta = decode(obj[2][-1][2])
        meta[3] = meta[3][1:]  # a member left out of the list
        obj[2][-1][2] = encode(meta)

    chunks = list(chain.chunks)
    last_headers = max(i for i, c in enumerate(chunks) if decode(c, 1 << 24)[0] == "headers")
    obj = decode(chunks[last_headers], 1 << 24)
    change(obj)
    chunks[last_headers] = encode(obj)
    assert decode_app_meta(obj[2][-1][2]).member_ids  # still decodes
    _refused(chain, tmp_path, chunks, "members are not the state's")


def test_a_tampered_body_is_refused(chain: Chain, tmp_path: Path) -> None:
    def change(obj: list[Any]) -> None:
        block = Block.decode(obj[2][0])
        other = chain.cons.tx("szcredit", Attest("credit-report", C[-2], GENESIS_TIME_MS, 0))
        obj[2][0] = Block(block.header, (other, *block.txs[1:])).encode()

    _refused(
        chain,
        tmp_path,
        _edit(chain.chunks, "bodies", change),
        r"block \d+('s transactions are not its certified header's|: .*tx_root)",
    )


def test_a_truncated_snapshot_is_refused(chain: Chain, tmp_path: Path) -> None:
    _refused(chain, tmp_path, chain.chunks[:-1], "lacks block bodies")


def test_an_interrupted_import_starts_again_or_is_dropped(chain: Chain, tmp_path: Path) -> None:
    path = tmp_path / "joined"
    for _ in range(2):
        store = _store(chain, path)
        with pytest.raises(SnapshotError):
            import_snapshot(store, chain.cons.genesis, chain.chunks[:-1])
        store.close()
    with _import(chain, path, chain.chunks) as lg:
        assert lg.height == chain.head
        check_ledger(lg, recent=None)
    store = _store(chain, tmp_path / "dropped")
    with pytest.raises(SnapshotError):
        import_snapshot(store, chain.cons.genesis, chain.chunks[:-1])
    store.abort_import()
    with Ledger(store, chain.cons.genesis) as lg:  # an empty store again: genesis
        assert lg.height == 0 and lg.store.attestation_indexed
        check_ledger(lg, recent=None)


def test_a_genesis_only_store_takes_a_snapshot(chain: Chain, tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "fresh", chain.cons.genesis) as lg:
        import_snapshot(lg.store, chain.cons.genesis, chain.chunks)
    with Ledger.open(tmp_path / "fresh", chain.cons.genesis, create=False) as lg:
        assert lg.height == chain.head and lg.head.state_root == chain.state_root


def test_only_an_empty_store_takes_a_snapshot(chain: Chain, tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "other", chain.cons.genesis) as lg:
        fresh = Attest("credit-report", C[-1], GENESIS_TIME_MS, 0)
        chain.cons.commit(lg, [chain.cons.tx("szcredit", fresh, 2)])
        with pytest.raises(StoreError, match="only imported into an empty store"):
            import_snapshot(lg.store, chain.cons.genesis, chain.chunks)


def test_served_and_fetched_over_the_sync_protocol(chain: Chain, tmp_path: Path) -> None:
    with Ledger.open(chain.path, chain.cons.genesis, create=False) as src:
        asked: list[bytes] = []

        async def ask(request: bytes) -> bytes:
            asked.append(request)
            return sync.serve(src.store, request)

        store = _store(chain, tmp_path / "joined")
        with store:
            info = trio.run(state_sync.fetch, ask, store, chain.cons.genesis)
            assert info.height == chain.head and store.height == chain.head
        assert sync.pin_version(src.store, sync.snapshot_request()) == chain.head
        assert sync.pin_version(src.store, asked[-3]) in (None, chain.head)
        gone = src.store.state_pruned_below - 1
        answer = sync.serve(src.store, sync.snap_leaves_request(gone, None, 10))
        with pytest.raises(SnapshotError, match="refused.*not kept here"):
            parse_chunk(answer)
