"""The auditor's replay (ledger/audit.py, cli/audit.py) on a real chain in LevelDB.

One chain is built once (attestations, a revocation, a validator leaving the set), then
each test damages a *copy* of its data directory byte by byte, the way a disk or an
operator might, and checks that the replay names the right height and check.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plyvel
import pytest

from cli.audit import add_audit_commands
from ledger.audit import (
    AuditProgress,
    AuditReport,
    DatadirSource,
    RpcSource,
    replay,
    replay_datadir,
    verify_state,
)
from ledger.chain import Ledger
from ledger.genesis import write_genesis
from ledger.records import attestation_key
from ledger.store import Store
from ledger.store_format import P_BLOCK, P_CERT, P_HEADER, P_NODE, P_TX, TX_KEY_BYTES, h8, seal
from ledger.testchain import Consortium
from ledger.types import GovAction, GovPropose, GovVote, Revoke, RevokeReason

C = [bytes([i]) * 32 for i in range(1, 60)]


@dataclass
class Chain:
    cons: Consortium
    datadir: Path  # a node data directory: <datadir>/ledger is the LevelDB
    height: int
    transactions: int
    attested_at: dict[bytes, int]  # commitment -> height
    after_change: int  # first height certified by the reduced validator set
    revoked_at: int


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    cons = Consortium.make()
    datadir = tmp_path_factory.mktemp("audit") / "data" / "cnix"
    attested: dict[bytes, int] = {}
    n = 0
    with Ledger.open(datadir / "ledger", cons.genesis) as lg:
        batch = [cons.attest(c) for c in C[0:3]]
        h = cons.commit(lg, batch)
        attested.update({c: h for c in C[0:3]})
        n += len(batch)
        # webank leaves the validator set: later certificates come from 3 validators
        prop = cons.tx("cnix", GovPropose(GovAction.REMOVE_VALIDATOR, ("webank",), 100))
        cons.commit(lg, [prop])
        cons.commit(lg, [cons.tx(v, GovVote(prop.tx_id, True)) for v in ("hkbank", "szcredit")])
        n += 3
        after_change = 0
        for i in range(3, 30, 3):
            batch = [cons.attest(c) for c in C[i : i + 3]]
            h = cons.commit(lg, batch)
            attested.update({c: h for c in C[i : i + 3]})
            n += len(batch)
            if not after_change and len(lg.validators_at(h)) == 3:
                after_change = h
        revoke = cons.tx("szcredit", Revoke(C[4], RevokeReason.FRAUD_SUSPECTED))
        revoked_at = cons.commit(lg, [revoke])
        n += 1
        cons.commit(lg, [])
        height = lg.height
    assert after_change > 3
    write_genesis(datadir.parent.parent / "genesis.json", cons.genesis)
    return Chain(cons, datadir, height, n, attested, after_change, revoked_at)


@pytest.fixture
def copy(chain: Chain, tmp_path: Path) -> Path:
    """A copy of the chain's data directory that a test may damage."""
    dst = tmp_path / "data" / "cnix"
    shutil.copytree(chain.datadir, dst)
    shutil.copy(chain.datadir.parent.parent / "genesis.json", tmp_path / "genesis.json")
    return dst


def _edit(datadir: Path, key: bytes, change: Callable[[bytes], bytes]) -> None:
    db = plyvel.DB(str(datadir / "ledger"))
    try:
        value = db.get(key)
        assert value is not None, key
        db.put(key, change(value), sync=True)
    finally:
        db.close()


def _flip(value: bytes, offset: int) -> bytes:
    return value[:offset] + bytes([value[offset] ^ 0x01]) + value[offset + 1 :]


def _failed(report: AuditReport, height: int, check: str) -> None:
    assert report.failure is not None, "replay passed"
    assert (report.failure.height, report.failure.check) == (height, check), report.failure
    assert report.height == height - 1 or check == "state_tree"


# --------------------------------------------------------------------------- success


def test_replay_verifies_the_whole_chain(chain: Chain, copy: Path, tmp_path: Path) -> None:
    seen: list[AuditProgress] = []
    report = replay_datadir(copy, chain.cons.genesis, workdir=tmp_path, progress=seen.append)
    assert report.ok, report.failure
    assert (report.blocks, report.transactions, report.height) == (
        chain.height + 1,
        chain.transactions,
        chain.height,
    )
    assert report.state_entries is not None and report.state_entries > 30
    assert report.state_versions == 9  # the head and the 8 retained versions below it
    blocks = [p for p in seen if p.phase == "replay"]
    assert [p.height for p in blocks] == list(range(chain.height + 1))
    assert blocks[-1].done == blocks[-1].total == chain.height + 1
    states = [p for p in seen if p.phase == "state_tree"]
    assert states[-1].done == states[-1].total == 9
    assert states[-1].transactions == report.state_entries
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("dvp-audit-")]


class _StoreRpc:
    """Serves getBlock/status from a Store the way node/methods.py does (no network);
    ``tamper(height, answer)`` may alter an answer, as a lying node would."""

    def __init__(
        self, store: Store, tamper: Callable[[int, dict[str, Any]], None] | None = None
    ) -> None:
        self.store = store
        self.tamper = tamper

    def call(self, method: str, **params: Any) -> Any:
        if method == "status":
            return {"height": self.store.height}
        h = params["height"]
        block, cert = self.store.get_block(h), self.store.get_certificate(h)
        assert block is not None
        doc = json.loads(
            json.dumps(
                {
                    "height": h,
                    "encoded": block.header.encoded.hex(),
                    "certificate": None if cert is None else cert.encode().hex(),
                    "txs": [tx.encode().hex() for tx in block.txs],
                }
            )
        )
        if self.tamper is not None:
            self.tamper(h, doc)
        return doc

    def batch(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        return [self.call(m, **p) for m, p in calls]


def test_replay_over_rpc(chain: Chain, copy: Path) -> None:
    g = chain.cons.genesis
    with Store.open(copy / "ledger", chain_id=g.chain_id, genesis_hash=g.hash) as store:
        report = replay(RpcSource(_StoreRpc(store), batch=3), g)
        assert report.ok, report.failure
        assert (report.blocks, report.transactions) == (chain.height + 1, chain.transactions)
        # a genesis with the same chain id but other validators is refused at block 0
        other = Consortium.make(n_validators=5).genesis
        report = replay(RpcSource(_StoreRpc(store)), other)
        _failed(report, 0, "genesis")


def test_lying_node_over_rpc(chain: Chain, copy: Path) -> None:
    g = chain.cons.genesis
    h = chain.attested_at[C[12]]

    def flip_signature(height: int, doc: dict[str, Any]) -> None:
        if height == h:
            tx = doc["txs"][2]
            doc["txs"][2] = tx[:-2] + ("00" if tx[-2:] != "00" else "01")

    def garbage(height: int, doc: dict[str, Any]) -> None:
        if height == h + 1:
            doc["txs"][0] = "c1"  # a msgpack byte that is never valid

    with Store.open(copy / "ledger", chain_id=g.chain_id, genesis_hash=g.hash) as store:
        _failed(replay(RpcSource(_StoreRpc(store, flip_signature), batch=4), g), h, "signature")
        # the block before the undecodable one (same RPC batch) is still checked first
        _failed(replay(RpcSource(_StoreRpc(store, garbage), batch=4), g), h + 1, "decode")


def test_locked_datadir_is_read_through_a_snapshot(chain: Chain, copy: Path) -> None:
    g = chain.cons.genesis
    with Store.open(copy / "ledger", chain_id=g.chain_id, genesis_hash=g.hash):
        # the store is open (LevelDB lock held, as by a running node)
        report = replay_datadir(copy, g)
    assert report.ok, report.failure
    assert any("read a snapshot of" in n for n in report.notes), report.notes


# --------------------------------------------------------------------------- damage


def _tx_signature_offset(chain: Chain, height: int, position: int) -> tuple[bytes, int]:
    """The store key of block ``height``'s transactions and the offset (in the sealed
    value) of a byte inside transaction ``position``'s signature."""
    g = chain.cons.genesis
    with Store.open(chain.datadir / "ledger", chain_id=g.chain_id, genesis_hash=g.hash) as s:
        block = s.get_block(height)
        raw = s._db.get(P_BLOCK + h8(height))
    assert block is not None
    enc = block.txs[position].encode()
    start = raw.index(enc)
    return P_BLOCK + h8(height), start + len(enc) - 64 + 17


def _resealed(key: bytes, change: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    """Damage the payload and recompute the store's CRC seal, so only the cryptographic
    checks can notice."""
    return lambda value: seal(key, change(value[4:]))


def test_transaction_signature_flip(chain: Chain, copy: Path) -> None:
    h = chain.attested_at[C[7]]
    key, off = _tx_signature_offset(chain, h, 1)
    _edit(copy, key, _resealed(key, lambda p: _flip(p, off - 4)))
    report = replay_datadir(copy, chain.cons.genesis)
    _failed(report, h, "signature")
    assert "bad_signature" in report.failure.message  # type: ignore[union-attr]
    assert report.transactions == sum(1 for c, at in chain.attested_at.items() if at < h) + 3


def test_transaction_flip_caught_by_the_seal(chain: Chain, copy: Path) -> None:
    h = chain.attested_at[C[7]]
    key, off = _tx_signature_offset(chain, h, 1)
    _edit(copy, key, lambda v: _flip(v, off))
    _failed(replay_datadir(copy, chain.cons.genesis), h, "store_integrity")


def test_certificate_signature_flip(chain: Chain, copy: Path) -> None:
    h = chain.after_change  # certified by the reduced set: checked against the set in force
    key = P_CERT + h8(h)
    _edit(copy, key, _resealed(key, lambda p: _flip(p, len(p) - 10)))
    report = replay_datadir(copy, chain.cons.genesis)
    _failed(report, h, "certificate")
    assert "invalid" in report.failure.message  # type: ignore[union-attr]


def test_certificate_flip_caught_by_the_seal(chain: Chain, copy: Path) -> None:
    key = P_CERT + h8(2)
    _edit(copy, key, lambda v: _flip(v, len(v) - 10))
    _failed(replay_datadir(copy, chain.cons.genesis), 2, "store_integrity")


def test_header_flip_breaks_the_certificate(chain: Chain, copy: Path) -> None:
    # A header rewritten (state root byte flipped, seal recomputed) is no longer the
    # block its certificate names.
    h = chain.attested_at[C[9]]
    key = P_HEADER + h8(h)
    # the last four fields are bin8(32) each: state_root, two set hashes, history_root
    _edit(copy, key, _resealed(key, lambda p: _flip(p, len(p) - 3 * 34 - 10)))
    report = replay_datadir(copy, chain.cons.genesis)
    _failed(report, h, "certificate")
    assert "different block" in report.failure.message  # type: ignore[union-attr]


def test_certificate_of_the_old_set_is_refused_after_the_change(chain: Chain, copy: Path) -> None:
    # A certificate signed by the genesis set (4 validators, webank included) for a
    # block the reduced set must certify: indexes refer to the wrong set.
    h = chain.after_change
    g = chain.cons.genesis
    with Store.open(chain.datadir / "ledger", chain_id=g.chain_id, genesis_hash=g.hash) as s:
        block = s.get_block(h)
    assert block is not None
    forged = chain.cons.certify(block, signers=["cnix", "hkbank", "webank"])
    key = P_CERT + h8(h)
    _edit(copy, key, lambda _v: seal(key, forged.encode()))
    _failed(replay_datadir(copy, g), h, "certificate")


def _live_leaf(copy: Path, state_key: bytes) -> tuple[bytes, int]:
    """The node key of the newest leaf holding ``state_key`` and its version."""
    db = plyvel.DB(str(copy / "ledger"))
    try:
        found = [
            k for k, v in db.iterator(prefix=P_NODE) if v[:1] == b"\x01" and v[1:33] == state_key
        ]
    finally:
        db.close()
    nk = max(found, key=lambda k: k[1:9])
    return nk, int.from_bytes(nk[1:9], "big")


def test_state_leaf_flip(chain: Chain, copy: Path) -> None:
    # The attestation record revoked late in the chain: its leaf is reachable from the
    # head version, so serving proofs from this store would serve the damaged record.
    nk, version = _live_leaf(copy, attestation_key(C[4]))
    assert version == chain.revoked_at
    _edit(copy, nk, lambda v: _flip(v, len(v) - 1))
    report = replay_datadir(copy, chain.cons.genesis)
    # The chain itself replays (the scratch ledger is rebuilt from genesis) ...
    assert (report.blocks, report.transactions) == (chain.height + 1, chain.transactions)
    # ... but the stored state tree no longer hashes to the certified roots.
    _failed(report, version, "state_tree")
    _failed(verify_state(copy, chain.cons.genesis), version, "state_tree")


def test_state_internal_node_and_root_record_flips(
    chain: Chain, copy: Path, tmp_path: Path
) -> None:
    # Keys are only added or rewritten in this chain, never deleted, so the newest
    # node at each tree position is reachable from the head version.
    db = plyvel.DB(str(copy / "ledger"))
    try:
        newest: dict[bytes, bytes] = {}
        for k in db.iterator(prefix=P_NODE, include_value=False):
            if k[9] >= 1 and db.get(k)[:1] == b"\x02":
                pos = k[9:]
                if pos not in newest or k[1:9] > newest[pos][1:9]:
                    newest[pos] = k
    finally:
        db.close()
    assert newest
    nk = max(newest.values(), key=lambda k: k[1:9])
    version = int.from_bytes(nk[1:9], "big")
    _edit(copy, nk, lambda v: _flip(v, 6))  # a child hash inside an internal node
    _failed(verify_state(copy, chain.cons.genesis), version, "state_tree")
    # the head's root record: the head version's root no longer matches its header
    other = tmp_path / "other"
    shutil.copytree(chain.datadir, other)
    _edit(other, P_NODE + h8(chain.height) + b"\x00", lambda v: _flip(v, 6))
    _failed(verify_state(other, chain.cons.genesis), chain.height, "state_tree")


def test_damaged_tx_index_is_reported(chain: Chain, copy: Path) -> None:
    h = chain.attested_at[C[10]]
    g = chain.cons.genesis
    with Store.open(chain.datadir / "ledger", chain_id=g.chain_id, genesis_hash=g.hash) as s:
        tx_id = s.get_block(h).txs[0].tx_id  # type: ignore[union-attr]
    _edit(copy, P_TX + tx_id[:TX_KEY_BYTES], lambda v: v[:-1] + b"\x07")
    report = replay_datadir(copy, g)
    _failed(report, h, "store_integrity")
    assert "tx index" in report.failure.message  # type: ignore[union-attr]


def test_datadir_source_reads_the_ledger_dir_itself(chain: Chain, copy: Path) -> None:
    source = DatadirSource(copy / "ledger", chain.cons.genesis, check_state=False)
    try:
        assert source.head_height == chain.height
        assert [h for h, _, _ in source] == list(range(chain.height + 1))
    finally:
        source.close()


# --------------------------------------------------------------------------- CLI


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Parse with the same `add` helper cli/main.py uses and run the command."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="dvp", formatter_class=fmt)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        parent: Any,
        name: str,
        help_: str,
        example: str,
        fn: Callable[..., int],
        json_flag: bool = True,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, help=help_, description=f"{help_}\n\nexample:\n  {example}", formatter_class=fmt
        )
        p.set_defaults(fn=fn)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON for scripts")
        return p

    add_audit_commands(sub, add)
    args = parser.parse_args(argv)
    code = int(args.fn(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_replay(chain: Chain, copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # the genesis is found next to data/ (the devnet layout), no --genesis needed
    code, out, err = _run(["audit", "replay", "--datadir", str(copy)], capsys)
    assert code == 0, err
    assert f"{chain.height + 1} blocks, {chain.transactions} transactions verified in" in out
    code, out, _ = _run(["audit", "replay", "--datadir", str(copy), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["transactions"] == chain.transactions


def test_cli_failure_and_errors(
    chain: Chain, copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = P_CERT + h8(3)
    _edit(copy, key, _resealed(key, lambda p: _flip(p, len(p) - 1)))
    code, out, _ = _run(["audit", "replay", "--datadir", str(copy)], capsys)
    assert code == 1
    assert out.strip().startswith("FAILED at height 3: certificate: ")
    code, _, err = _run(
        [
            "audit",
            "replay",
            "--datadir",
            str(tmp_path / "nowhere"),
            "--genesis",
            str(tmp_path / "genesis.json"),
        ],
        capsys,
    )
    assert code == 2 and "no ledger store" in err
    code, _, err = _run(
        ["audit", "replay", "--datadir", str(copy), "--genesis", str(tmp_path / "missing.json")],
        capsys,
    )
    assert code == 2 and "missing.json" in err
    code, _, err = _run(
        [
            "audit",
            "replay",
            "--rpc",
            "http://127.0.0.1:9/",
            "--genesis",
            str(tmp_path / "genesis.json"),
        ],
        capsys,
    )
    assert code == 3 and "cannot" in err
    code, _, err = _run(["audit", "replay", "--rpc", "http://127.0.0.1:9/"], capsys)
    assert code == 2 and "--genesis" in err
