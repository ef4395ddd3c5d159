"""Pruned block bodies (issue 19 item 3): the store, its readers, its check, the prover,
block sync and the auditor's replay from a certified snapshot.

One chain of 30 attesting blocks is built once; each test prunes a copy of its store.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import plyvel
import pytest

from ledger.audit import replay_datadir, snapshot_height
from ledger.chain import PRUNE_BODIES_PER_COMMIT, Ledger
from ledger.errors import BodyPruned, DecodeError, StoreDamage
from ledger.genesis import write_genesis
from ledger.prove import Prover
from ledger.store_check import check_ledger
from ledger.store_format import P_BLOCK, P_NODE, h8, seal
from ledger.testchain import Consortium
from ledger.verify import TrustAnchor, verify_bundle
from node import sync

C = [bytes([i]) * 32 for i in range(1, 100)]
BLOCKS = 30


@dataclass
class Chain:
    cons: Consortium
    path: Path
    attested_at: dict[bytes, int]
    tx_at: dict[int, bytes]  # height -> one tx id committed there


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    cons = Consortium.make()
    path = tmp_path_factory.mktemp("prune") / "ledger"
    attested: dict[bytes, int] = {}
    tx_at: dict[int, bytes] = {}
    with Ledger.open(path, cons.genesis) as lg:
        for i in range(BLOCKS):
            txs = [cons.attest(c) for c in C[3 * i : 3 * i + 3]]
            h = cons.commit(lg, txs)
            attested.update({c: h for c in C[3 * i : 3 * i + 3]})
            tx_at[h] = txs[0].tx_id
    return Chain(cons, path, attested, tx_at)


@pytest.fixture
def copy(chain: Chain, tmp_path: Path) -> Path:
    dst = tmp_path / "ledger"
    shutil.copytree(chain.path, dst)
    return dst


def _open(chain: Chain, path: Path, retain_blocks: int = 0) -> Ledger:
    lg = Ledger.open(path, chain.cons.genesis, create=False, verify_tables=True)
    lg.retain_blocks = retain_blocks
    return lg


def test_prune_keeps_headers_certificates_indexes_and_state(chain: Chain, copy: Path) -> None:
    with _open(chain, copy, retain_blocks=10) as lg:
        store = lg.store
        assert store.bodies_from == 0
        assert lg.prune_bodies() == BLOCKS + 1 - 10
        assert store.bodies_from == BLOCKS + 1 - 10 == store.height - 9
        for h in range(store.bodies_from):
            with pytest.raises(BodyPruned, match=r"ask an archive node") as info:
                store.get_block(h)
            assert info.value.height == h and info.value.bodies_from == store.bodies_from
            assert "newest 10 block bodies" in str(info.value)
            assert store.get_header(h) is not None and store.app_meta(h) is not None
            assert h == 0 or store.get_certificate(h) is not None
        assert [b.height for b in store.iter_blocks(store.bodies_from)] == list(
            range(store.bodies_from, store.height + 1)
        )
        old = chain.tx_at[5]
        assert store.tx_committed(old) and store.tx_location(old) == (5, 0)  # replay check
        with pytest.raises(BodyPruned):
            store.get_tx(old)
        assert store.get_tx(chain.tx_at[store.height]) is not None
        # A replayed old transaction is still refused: the tx index stayed.
        assert lg.head.tx_seen(old)
        check_ledger(lg, recent=3)
        check_ledger(lg, recent=None)
    with _open(chain, copy) as lg:  # the floor is in the store's metadata
        assert lg.store.bodies_from == BLOCKS + 1 - 10
        check_ledger(lg, recent=None)


def test_commit_prunes_in_bounded_batches(chain: Chain, tmp_path: Path) -> None:
    cons = Consortium.make()
    with Ledger.open(tmp_path / "l", cons.genesis) as lg:
        for i in range(20):
            cons.commit(lg, [cons.attest(C[i])])
        assert lg.store.bodies_from == 0  # an archive by default
        lg.retain_blocks = 2
        cons.commit(lg, [cons.attest(C[50])])
        # 22 bodies to drop, at most PRUNE_BODIES_PER_COMMIT per commit
        assert lg.store.bodies_from == PRUNE_BODIES_PER_COMMIT < lg.height - 1
        cons.commit(lg, [cons.attest(C[51])])
        assert lg.store.bodies_from == lg.height - 1
        check_ledger(lg, recent=None)


def test_store_check_still_finds_damage_in_a_pruned_store(chain: Chain, copy: Path) -> None:
    with _open(chain, copy, retain_blocks=10) as lg:
        lg.prune_bodies()
        floor, head = lg.store.bodies_from, lg.store.height
    db = plyvel.DB(str(copy))
    kept = db.get(P_BLOCK + h8(floor + 2))
    db.delete(P_BLOCK + h8(floor + 2))  # a kept body lost: damage
    db.close()
    with _open(chain, copy) as lg, pytest.raises(StoreDamage, match="block records"):
        check_ledger(lg, recent=3)
    db = plyvel.DB(str(copy))
    db.put(P_BLOCK + h8(floor + 2), kept)
    key = P_BLOCK + h8(floor - 3)
    db.put(key, seal(key, b"\x90"))  # a stray body below the floor
    db.close()
    with _open(chain, copy) as lg, pytest.raises(StoreDamage, match="stray"):
        check_ledger(lg, recent=3)
    assert head > floor


def test_prover_refuses_pruned_attestations_and_serves_recent_ones(
    chain: Chain, copy: Path
) -> None:
    with _open(chain, copy, retain_blocks=10) as lg:
        lg.prune_bodies()
        prover = Prover(lg)
        old = next(c for c, h in chain.attested_at.items() if h < lg.store.bodies_from)
        new = next(c for c, h in chain.attested_at.items() if h >= lg.store.bodies_from)
        with pytest.raises(BodyPruned, match="ask an archive node"):
            prover.bundle(old)
        bundle = prover.bundle(new)
        anchor = TrustAnchor(chain.cons.genesis.chain_id, chain.cons.genesis.validators)
        verdict = verify_bundle(bundle, anchor, now_ms=int(time.time() * 1000), max_age_ms=None)
        assert verdict.status.name == "VALID"
        assert verdict.attested_height == chain.attested_at[new]


def test_sync_refuses_pruned_ranges_and_serves_kept_ones(chain: Chain, copy: Path) -> None:
    with _open(chain, copy, retain_blocks=10) as lg:
        lg.prune_bodies()
        floor = lg.store.bodies_from
        answer = sync.serve(lg.store, sync.blocks_request(floor - 1, floor + 3))
        with pytest.raises(DecodeError, match=r"refused.*pruned.*archive peer"):
            sync.parse_blocks(answer)
        got = sync.parse_blocks(sync.serve(lg.store, sync.blocks_request(floor, floor + 3)))
        assert [b for b, _c in got] == [
            lg.store.get_block_bytes(h) for h in range(floor, floor + 4)
        ]


def test_audit_replays_an_archive_from_genesis_and_a_pruned_store_from_a_snapshot(
    chain: Chain, copy: Path, tmp_path: Path
) -> None:
    archive = replay_datadir(copy, chain.cons.genesis, workdir=tmp_path)
    assert archive.ok and archive.transactions == 3 * BLOCKS
    with _open(chain, copy, retain_blocks=10) as lg:
        lg.prune_bodies()
        start = snapshot_height(lg.store)
        head = lg.store.height
    assert start == lg.store.state_pruned_below >= lg.store.bodies_from - 1
    report = replay_datadir(copy, chain.cons.genesis, workdir=tmp_path)
    assert report.ok, report.failure
    assert report.height == head and report.state_root == archive.state_root
    assert report.transactions == 3 * (head - start)
    assert any("pruned" in n and f"height {start}" in n for n in report.notes)


def test_audit_of_a_pruned_store_finds_a_forged_snapshot(
    chain: Chain, copy: Path, tmp_path: Path
) -> None:
    with _open(chain, copy, retain_blocks=10) as lg:
        lg.prune_bodies()
        start = snapshot_height(lg.store)
    db = plyvel.DB(str(copy))
    key, node = next(iter(db.iterator(prefix=P_NODE + h8(start))))
    db.put(key, node[:-1] + bytes([node[-1] ^ 1]))  # one state node of the snapshot
    db.close()
    report = replay_datadir(copy, chain.cons.genesis, workdir=tmp_path)
    assert report.failure is not None and report.failure.check in ("state_tree", "store_integrity")


def test_dvp_store_prune_then_store_check(
    chain: Chain, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cli.main import main

    copy = tmp_path / "node"  # a node's data directory: ledger/ inside
    shutil.copytree(chain.path, copy / "ledger")

    genesis = tmp_path / "genesis.json"
    write_genesis(genesis, chain.cons.genesis)
    assert (
        main(
            [
                "store",
                "prune",
                "--datadir",
                str(copy),
                "--keep",
                "5",
                "--genesis",
                str(genesis),
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["bodies_from"] == doc["height"] - 4 and doc["pruned_bodies"] == doc["bodies_from"]
    assert main(["store", "check", "--datadir", str(copy), "--genesis", str(genesis)]) == 0
    assert "store intact" in capsys.readouterr().out
    assert (
        main(["store", "prune", "--datadir", str(copy), "--keep", "0", "--genesis", str(genesis)])
        == 2
    )
    assert "--keep must be at least 1" in capsys.readouterr().err


def test_audit_of_a_pruned_store_checks_kept_bodies_below_the_snapshot(
    chain: Chain, copy: Path, tmp_path: Path
) -> None:
    with _open(chain, copy, retain_blocks=20) as lg:  # more bodies than state versions
        lg.prune_bodies()
        floor, start = lg.store.bodies_from, snapshot_height(lg.store)
    assert floor < 15 < start  # kept, but below the state the replay starts from
    db = plyvel.DB(str(copy))
    k15, k16 = P_BLOCK + h8(15), P_BLOCK + h8(16)
    db.put(k15, seal(k15, db.get(k16)[4:]))  # block 16's transactions, sealed as 15's
    db.close()
    report = replay_datadir(copy, chain.cons.genesis, workdir=tmp_path)
    assert report.failure is not None
    assert (report.failure.height, report.failure.check) == (15, "tx_root"), report.failure
