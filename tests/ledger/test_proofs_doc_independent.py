"""docs/PROOFS.md is a complete spec: a checker written only from it
(tests/ledger/independent_checker.py, which imports nothing from ledger/, node/ or cli/)
passes the documents' test vectors and agrees with the reference verifier (ledger.verify)
on real bundles.

Real bundles come from two places: a chain built through the ledger with a validator-set
change (VALID, REVOKED, EXPIRED, NOT_FOUND; tests/ledger/test_bundle.py's ``make_chain``), and a
four-node in-process devnet whose bundles are fetched over plain HTTP from a node's RPC,
with the trust anchor read from the devnet's genesis.json. Every single-field alteration
of a bundle is refused by both verifiers.
"""

from __future__ import annotations

import ast
import hashlib
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
import trio

from tests.ledger import independent_checker as ic
from tests.support.bundles import NOW_MS

VECTORS = Path(__file__).parent.parent / "vectors"


def _vectors(name: str) -> Any:
    return json.loads((VECTORS / f"{name}.json").read_text())


def test_the_checker_imports_nothing_from_the_project() -> None:
    tree = ast.parse(Path(ic.__file__).read_text())
    imported = {
        a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    imported |= {
        (n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
    }
    assert imported <= {
        "__future__",
        "hashlib",
        "re",
        "dataclasses",
        "typing",
        "msgpack",
        "nacl",
    }, imported


# ----------------------------------------------------------------------------- vectors


def test_ledger_vectors() -> None:
    v = _vectors("ledger")
    c = v["commitment"]
    salt = bytes.fromhex(c["salt"])
    assert ic.commitment(salt, bytes.fromhex(c["file_hex"])).hex() == c["commitment"]
    assert ic.verification_code(salt) == c["verification_code"]
    for k in v["keys"]:
        seed = bytes.fromhex(k["seed"])
        assert bytes(nacl.signing.SigningKey(seed).verify_key).hex() == k["public_key"]
    tx_ids = []
    for t in v["transactions"]:
        tx = ic.decode_tx(bytes.fromhex(t["encoded"]))
        assert tx.signature_ok(), t["kind"]
        assert ic.tagged("dvp/tx/v1", bytes.fromhex(t["body"])).hex() == t["signing_message"]
        assert tx.signature.hex() == t["signature"] and tx.tx_id.hex() == t["tx_id"]
        assert tx.kind == {"ATTEST": 1, "REVOKE": 2, "GOV_PROPOSE": 3, "GOV_VOTE": 4}[t["kind"]]
        tx_ids.append(tx.tx_id)
        # one flipped signature bit and the signature no longer verifies
        bad = bytearray(tx.raw)
        bad[-1] ^= 1
        assert not ic.decode_tx(bytes(bad)).signature_ok()
    vs = ic.decode_validator_set(bytes.fromhex(v["validator_set"]["encoded"]))
    assert vs.hash.hex() == v["validator_set"]["hash"]
    header = ic.decode_header(bytes.fromhex(v["header"]["encoded"]))
    assert header.block_id.hex() == v["header"]["block_id"]
    assert header.tx_root.hex() == v["header"]["tx_root"]
    assert header.tx_count == len(tx_ids)
    for i, tx_id in enumerate(tx_ids):  # the tx root is the RFC 6962 root of the ids
        assert ic.verify_inclusion(tx_id, i, len(tx_ids), _path(tx_ids, i), header.tx_root)
    cert = v["certificate"]
    decoded = ic.decode_certificate(bytes.fromhex(cert["encoded"]))
    body = ic.enc([header.chain_id, decoded.height, decoded.view, decoded.block_id])
    assert body.hex() == cert["commit_vote_body"]
    assert ic.tagged("dvp/commit/v1", body).hex() == cert["signing_message"]
    ic.check_certificate(header, bytes.fromhex(cert["encoded"]), vs, header.chain_id)
    with pytest.raises(ic.CheckError, match="bad signature|not for this block"):
        ic.check_certificate(header, bytes.fromhex(cert["encoded"]), vs, "another-chain")
    s = v["state"]
    assert ic.state_key("attestation", bytes.fromhex(c["commitment"])).hex() == s["attestation_key"]
    assert ic.state_key("member", "cnix").hex() == s["member_key_cnix"]
    assert ic.state_key("chain", b"").hex() == s["chain_key"]
    rec = ic.decode_record(bytes.fromhex(s["attestation_record"]))
    assert (rec.issuer, rec.doc_type, rec.height, rec.revoked_height) == (
        "szcredit",
        "credit-report",
        header.height,
        0,
    )


def _path(ids: list[bytes], index: int) -> list[bytes]:
    """RFC 6962 PATH (proofs-merkle.md §3), for the vector's tx root."""

    def mth(d: list[bytes]) -> bytes:
        if len(d) == 1:
            return ic.H(b"\x00" + d[0])
        k = 1 << ((len(d) - 1).bit_length() - 1)
        return ic.H(b"\x01" + mth(d[:k]) + mth(d[k:]))

    if len(ids) == 1:
        return []
    k = 1 << ((len(ids) - 1).bit_length() - 1)
    if index < k:
        return [*_path(ids[:k], index), mth(ids[k:])]
    return [*_path(ids[k:], index - k), mth(ids[:k])]


def test_canonical_decoding_refuses_what_the_spec_refuses() -> None:
    for bad in (
        b"\xcd\x00\x05",
        b"\x91\x05\x00",
        b"\x80",
        b"\xc0",
        b"\xca\x00\x00\x00\x00",
        b"\xd4\x01\x00",
        b"\xd0\xff",
    ):
        with pytest.raises(ic.CheckError):
            ic.decode_canonical(bad)
    assert ic.decode_canonical(b"\x93\x05\xc3\xc4\x01\x00") == [5, True, b"\x00"]


def test_merkle_vectors() -> None:
    checked = 0
    for tree in _vectors("merkle")["trees"]:
        for e in tree["inclusion"]:
            try:
                ok = ic.verify_inclusion(
                    bytes.fromhex(e["leaf"]),
                    e["leaf_index"],
                    e["tree_size"],
                    [bytes.fromhex(h) for h in e["proof"]],
                    bytes.fromhex(e["root"]),
                )
            except (ValueError, TypeError):
                ok = False
            assert ok == e["valid"], e
            checked += 1
    assert checked > 100


def test_state_tree_vectors() -> None:
    v = _vectors("smt")
    assert {p["valid"] for p in v["proofs"]} == {True, False}
    for p in v["proofs"]:
        value = None if p["value"] is None else bytes.fromhex(p["value"])
        ok = ic.verify_state_proof(
            bytes.fromhex(p["root"]), bytes.fromhex(p["key"]), value, p["proof"]
        )
        assert ok == p["valid"], p["name"]


# ----------------------------------------------------------------------------- real bundles


def _reference(doc: Any, anchor: Any, now_ms: int) -> dict[str, Any] | None:
    from ledger.verify import VerificationError, verify_bundle_json

    try:
        v = verify_bundle_json(doc, anchor, now_ms=now_ms)
    except VerificationError:
        return None
    return {k: (str(x) if k == "status" else x) for k, x in v.__dict__.items() if x is not None}


def _independent(doc: Any, anchor: ic.Anchor, now_ms: int) -> dict[str, Any] | None:
    try:
        verdict = ic.check_bundle(doc, anchor, now_ms=now_ms)
    except ic.CheckError:
        return None
    return {k: x for k, x in verdict.items() if x is not None}


@pytest.fixture(scope="module")
def ledger_chain(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tests.support.bundles import make_chain

    cons, lg, bundles = make_chain(tmp_path_factory.mktemp("indep") / "db")
    yield cons, bundles
    lg.close()


def _anchors(genesis: Any) -> tuple[Any, ic.Anchor]:
    """The reference anchor, and the checker's from the genesis file's JSON form."""
    from ledger.genesis import genesis_to_json
    from ledger.verify import TrustAnchor

    anchor, genesis_hash = ic.anchor_from_genesis_json(
        json.loads(json.dumps(genesis_to_json(genesis)))
    )
    assert genesis_hash == genesis.hash
    return TrustAnchor.from_genesis(genesis), anchor


def test_agrees_with_the_reference_on_a_chain_with_a_validator_change(ledger_chain: Any) -> None:
    from tests.support.bundles import leaf_paths, mutate

    cons, bundles = ledger_chain
    ref_anchor, anchor = _anchors(cons.genesis)
    assert len(bundles["valid"]["valset_changes"]) == 1
    statuses = set()
    for name, doc in bundles.items():
        mine, ref = _independent(doc, anchor, NOW_MS), _reference(doc, ref_anchor, NOW_MS)
        assert mine is not None and mine == ref, name
        statuses.add(mine["status"])
        for path in leaf_paths(doc):  # every altered field: both refuse
            bad = mutate(doc, path)
            assert _independent(bad, anchor, NOW_MS) is None, (name, path)
            assert _reference(bad, ref_anchor, NOW_MS) is None, (name, path)
    assert statuses == {"VALID", "REVOKED", "EXPIRED", "NOT_FOUND"}


def test_freshness_and_anchor(ledger_chain: Any) -> None:
    from ledger.testchain import Consortium

    cons, bundles = ledger_chain
    _, anchor = _anchors(cons.genesis)
    head_ms = ic.decode_header(bytes.fromhex(bundles["valid"]["head"]["header"])).time_ms
    ic.check_bundle(bundles["valid"], anchor, now_ms=head_ms + 1000, max_age_ms=5000)
    with pytest.raises(ic.CheckError, match="state too old"):
        ic.check_bundle(bundles["valid"], anchor, now_ms=head_ms + 60_000, max_age_ms=5000)
    _, other = _anchors(Consortium.make(n_validators=5).genesis)
    with pytest.raises(ic.CheckError, match="validator chain"):
        ic.check_bundle(bundles["valid"], other, now_ms=head_ms)


async def _devnet_bundles(root: Path) -> dict[str, Any]:
    """Four in-process nodes; attest, revoke, then fetch bundles over HTTP from one."""
    from cli.devnet_files import create_devnet
    from ledger.crypto import read_key_file
    from ledger.types import Attest, Revoke, RevokeReason, Transaction
    from node.config import load_config
    from node.mempool import AddStatus
    from node.node import Node
    from node.transport import MemoryHub
    from tests.support.cluster import transport_factory

    entries = create_devnet(root, nodes=4, params={"heartbeat_ms": 200})
    hub = MemoryHub()
    nodes = [Node(load_config(e.config), transport_factory(hub)) for e in entries]
    key = read_key_file(root / "keys" / "szcredit.member.json")
    now = int(time.time() * 1000)
    docs = {
        name: hashlib.sha256(b"independent checker %s" % name.encode()).digest()
        for name in ("valid", "revoked", "expired", "absent")
    }

    def tx(nonce: int, payload: Any) -> Transaction:
        return Transaction("dvp-demo", key.public_key, nonce, 150, payload).signed(key)

    def fetch(port: int, commitment: bytes) -> Any:  # a bank's client: urllib, no project code
        body = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "getAttestationProof",
                "params": {"commitment": commitment.hex()},
            }
        ).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())["result"]

    async with trio.open_nursery() as nursery:
        for n in nodes:
            await nursery.start(n.run)
        with trio.fail_after(90):
            txs = [
                tx(1, Attest("credit-report", docs["valid"], now, 0, b"")),
                tx(2, Attest("bank-statement", docs["revoked"], now, 0, b"\x07" * 32)),
                tx(
                    3,
                    Attest(
                        "credit-report", docs["expired"], now - 86_400_000, now - 3_600_000, b""
                    ),
                ),
            ]
            for t in txs:
                assert nodes[0].submit(t).status == AddStatus.ADDED
            for t in txs:
                assert await nodes[0].wait_committed(t.tx_id, 60) is not None
            revoke = tx(4, Revoke(docs["revoked"], RevokeReason.OWNER_REQUEST))
            assert nodes[0].submit(revoke).status == AddStatus.ADDED
            assert await nodes[0].wait_committed(revoke.tx_id, 60) is not None
            port = nodes[1].rpc_ports["rpc"]
            with trio.move_on_after(60):
                while nodes[1].ledger.height < nodes[0].ledger.height:
                    await trio.sleep(0.05)
            assert nodes[1].ledger.height >= nodes[0].ledger.height, (
                f"node 1 at height {nodes[1].ledger.height} did not reach node 0's "
                f"{nodes[0].ledger.height} within 60 s"
            )
            out = {name: await trio.to_thread.run_sync(fetch, port, c) for name, c in docs.items()}
        nursery.cancel_scope.cancel()
    return out


@pytest.mark.timeout(180)
def test_agrees_with_the_reference_on_bundles_fetched_from_a_node(tmp_path: Path) -> None:
    from ledger.genesis import read_genesis
    from ledger.verify import TrustAnchor

    root = tmp_path / "net"
    bundles = trio.run(_devnet_bundles, root)
    genesis_doc = json.loads((root / "genesis.json").read_text())
    anchor, genesis_hash = ic.anchor_from_genesis_json(genesis_doc)
    genesis = read_genesis(root / "genesis.json")
    assert genesis_hash == genesis.hash
    ref_anchor = TrustAnchor.from_genesis(genesis)
    expected = {"valid": "VALID", "revoked": "REVOKED", "expired": "EXPIRED", "absent": "NOT_FOUND"}
    now_ms = int(time.time() * 1000)  # the test's clock, as a bank's verifier would use
    for name, doc in bundles.items():
        mine, ref = _independent(doc, anchor, now_ms), _reference(doc, ref_anchor, now_ms)
        assert mine is not None and mine == ref, (name, mine, ref)
        assert mine["status"] == expected[name]
        # one flipped bit in the head header: its certificate no longer matches
        bad = json.loads(json.dumps(doc))
        header = bytearray.fromhex(bad["head"]["header"])
        header[-40] ^= 1
        bad["head"]["header"] = header.hex()
        assert _independent(bad, anchor, now_ms) is None
        assert _reference(bad, ref_anchor, now_ms) is None
    assert bundles["revoked"]["revoke"] is not None
    assert ic.check_bundle(bundles["revoked"], anchor, now_ms=now_ms)["revoke_reason"] == 4
