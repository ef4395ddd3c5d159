"""Who may call what on a real node: API keys and roles, open mode, the admin listener,
TLS and ``rpc.discover`` -- over real HTTP against a node started in-process.

The node is the devnet's ``cnix`` validator (one-validator devnet, in-memory transport)
with its ``[rpc]`` section rewritten as an operator would write it; clients are plain
``http.client`` (no project client code) except where a test checks the CLI.
"""

from __future__ import annotations

import http.client
import logging
import ssl
from pathlib import Path
from typing import Any

import pytest
import trio

from cli.main import main as dvp
from consensus.evidence import make_evidence
from consensus.messages import PrePrepare
from node.methods import build_registry
from node.node import Node
from node.rpc.auth import generate_api_key
from tests.support.cluster import attest
from tests.support.rpc_node import call, error_code, rpc_section, run_nodes
from tests.support.tls import write_self_signed

UNAUTHORISED, NOT_FOUND_METHOD = -32002, -32601
BANK, AUDITOR, MEMBER, OPS = (generate_api_key() for _ in range(4))
CREDENTIALS = {
    "hkbank": (["verifier"], BANK.key_sha256),
    "cnix": (["auditor"], AUDITOR.key_sha256),
    "gzfintech": (["member"], MEMBER.key_sha256),
    "webank": (["operator"], OPS.key_sha256),
}
WRONG_KEY = generate_api_key().key  # well-formed, not configured


def test_keys_and_roles_decide_who_reads_what(tmp_path: Path) -> None:
    root = tmp_path / "net"

    def client(nodes: list[Node]) -> None:
        port = nodes[0].rpc_ports["rpc"]
        # Writes: authorised by the transaction's signature, no API key.
        tx = attest(root, 1, nodes[0].ledger.height + 100, tag=b"access test")
        done = call(port, "submitTransaction", {"tx": tx.encode().hex(), "wait": True})
        assert done["result"]["status"] == "committed", done
        tx_id = done["result"]["tx_id"]
        commitment = tx.payload.commitment.hex()  # type: ignore[union-attr]

        # Public reads.
        for method, params in (
            ("status", {}),
            ("ping", {}),
            ("getHeader", {"height": 1}),
            ("getHistoryProof", {"height": 0}),
            ("rpc.discover", {}),
        ):
            assert "result" in call(port, method, params), method

        # Reads that enumerate: any member's key; none, or a wrong one, is refused.
        listing: tuple[tuple[str, dict[str, Any]], ...] = (
            ("getMembers", {}),
            ("getValidators", {}),
            ("getBlock", {"height": 1, "include_txs": True}),
            ("getProposals", {}),
        )
        for method, params in listing:
            assert error_code(call(port, method, params)) == UNAUTHORISED, method
            assert error_code(call(port, method, params, key=WRONG_KEY)) == UNAUTHORISED
            for key in (MEMBER, BANK, AUDITOR):
                assert "result" in call(port, method, params, key=key.key), method
        members = call(port, "getMembers", key=MEMBER.key)["result"]["members"]
        assert {m["member_id"] for m in members} >= {"cnix", "szcredit", "gzfintech"}

        # Proofs by commitment or tx id: verifier or auditor only.
        proofs: tuple[tuple[str, dict[str, Any]], ...] = (
            ("getAttestationProof", {"commitment": commitment}),
            ("getTransaction", {"tx_id": tx_id}),
        )
        for method, params in proofs:
            assert error_code(call(port, method, params)) == UNAUTHORISED, method
            assert error_code(call(port, method, params, key=WRONG_KEY)) == UNAUTHORISED
            refused = call(port, method, params, key=MEMBER.key)
            assert error_code(refused) == UNAUTHORISED, method
            assert "requires role auditor or verifier" in refused["error"]["message"]
            assert "gzfintech has member" in refused["error"]["message"]
            for key in (BANK, AUDITOR):
                assert "result" in call(port, method, params, key=key.key), method
        bundle = call(port, "getAttestationProof", {"commitment": commitment}, key=BANK.key)
        assert bundle["result"]["commitment"] == commitment
        # A wrong key is refused even for a public method: the client learns at once.
        assert error_code(call(port, "status", key=WRONG_KEY)) == UNAUTHORISED

        # The CLI passes a key from --api-key or $DVP_API_KEY.
        url = f"http://127.0.0.1:{port}/"
        assert dvp(["gov", "list", "--rpc", url, "--json"]) == 1
        assert dvp(["gov", "list", "--rpc", url, "--api-key", MEMBER.key, "--json"]) == 0
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DVP_API_KEY", MEMBER.key)
            assert dvp(["gov", "list", "--rpc", url, "--json"]) == 0
            mp.setenv("DVP_API_KEY", WRONG_KEY)
            assert dvp(["status", "--rpc", url, "--json"]) == 1  # refused, not unreachable
        # The auditor replays over RPC with its key (getBlock in bulk needs one).
        replay = [
            "audit",
            "replay",
            "--rpc",
            url,
            "--genesis",
            str(root / "genesis.json"),
            "--json",
        ]
        assert dvp([*replay, "--api-key", AUDITOR.key]) == 0
        assert dvp(replay) == 1  # refused (no key), not unreachable

    run_nodes(root, client, rpc=rpc_section(open_mode=False, credentials=CREDENTIALS))


def _evidence_of(node: Node) -> bytes:
    """Two conflicting PRE-PREPAREs signed with the node's own key: real equivocation."""
    first = PrePrepare(5, 1, b"\x01" * 32, b"\x02" * 32, b"a").signed_by(node.crypto, node.chain_id)
    second = PrePrepare(5, 1, b"\x03" * 32, b"\x02" * 32, b"b").signed_by(
        node.crypto, node.chain_id
    )
    evidence = make_evidence(first, second)
    assert evidence is not None
    return evidence.encode()


def test_admin_methods_only_on_the_admin_listener(tmp_path: Path) -> None:
    def client(nodes: list[Node]) -> None:
        node = nodes[0]
        public, admin = node.rpc_ports["rpc"], node.rpc_ports["admin"]
        assert public != admin
        # Each listener serves only its own methods.
        for method in ("admin.peers", "admin.mempool", "admin.evidence", "admin.logLevel"):
            assert error_code(call(public, method, key=OPS.key)) == NOT_FOUND_METHOD
            assert error_code(call(admin, method)) == UNAUTHORISED
            assert error_code(call(admin, method, key=BANK.key)) == UNAUTHORISED  # no operator
        assert error_code(call(admin, "status", key=OPS.key)) == NOT_FOUND_METHOD
        names = {m["name"] for m in call(admin, "rpc.discover")["result"]["methods"]}
        assert names == {
            "rpc.discover",
            "admin.peers",
            "admin.mempool",
            "admin.evidence",
            "admin.logLevel",
        }

        pool = call(admin, "admin.mempool", key=OPS.key)["result"]
        assert pool["max_txs"] == 100_000 and pool["txs"] == 0 and "added" in pool["counters"]
        peers = call(admin, "admin.peers", key=OPS.key)["result"]
        assert peers == {"configured": [], "other_connected": []}  # a one-validator devnet

        level = call(admin, "admin.logLevel", key=OPS.key)["result"]["level"]
        changed = call(admin, "admin.logLevel", {"level": "debug"}, key=OPS.key)["result"]
        assert changed == {"level": "debug", "previous": level}
        assert logging.getLogger("dvp").getEffectiveLevel() == logging.DEBUG
        call(admin, "admin.logLevel", {"level": level}, key=OPS.key)
        bad = call(admin, "admin.logLevel", {"level": "loud"}, key=OPS.key)
        assert error_code(bad) == -32602

        assert call(admin, "admin.evidence", key=OPS.key)["result"] == {"count": 0, "evidence": []}
        assert node.cdb is not None
        trio.from_thread.run_sync(node.cdb.save_evidence, _evidence_of(node))
        ev = call(admin, "admin.evidence", key=OPS.key)["result"]
        assert ev["count"] == 1
        entry = ev["evidence"][0]
        assert entry["member_id"] == "cnix" and entry["kind"] == "PrePrepare"
        assert entry["verified"] is True and entry["sender"] == node.key.public_key.hex()

    run_nodes(
        tmp_path / "net",
        client,
        rpc=rpc_section(open_mode=False, credentials=CREDENTIALS, admin=True),
    )


def test_open_mode_allows_everything_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def client(nodes: list[Node]) -> None:
        public, admin = nodes[0].rpc_ports["rpc"], nodes[0].rpc_ports["admin"]
        for method, params in (
            ("getMembers", {}),
            ("getBlock", {"height": 1}),
            ("getTransaction", {"tx_id": "00" * 32}),
            ("getAttestationProof", {"commitment": "11" * 32}),
        ):
            assert error_code(call(public, method, params)) != UNAUTHORISED, method
        assert "result" in call(admin, "admin.mempool")
        # A configured key still identifies its holder; a wrong one is still refused.
        assert "result" in call(public, "getMembers", key=BANK.key)
        assert error_code(call(public, "getMembers", key=WRONG_KEY)) == UNAUTHORISED

    dvp_logger = logging.getLogger("dvp")
    dvp_logger.addHandler(caplog.handler)  # node.logs may have stopped propagation
    try:
        with caplog.at_level(logging.WARNING):
            run_nodes(
                tmp_path / "net",
                client,
                rpc=rpc_section(
                    open_mode=True, admin=True, credentials={"hkbank": CREDENTIALS["hkbank"]}
                ),
            )
    finally:
        dvp_logger.removeHandler(caplog.handler)
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("RPC IS OPEN" in m for m in loud), loud


def test_tls_listener(tmp_path: Path) -> None:
    cert, key = write_self_signed(tmp_path / "tls")

    def client(nodes: list[Node]) -> None:
        port = nodes[0].rpc_ports["rpc"]
        trusted = ssl.create_default_context(cafile=str(cert))
        assert call(port, "status", tls=trusted)["result"]["node"] == "cnix"
        # Plain HTTP on the TLS port gets no JSON-RPC answer.
        with pytest.raises((http.client.HTTPException, OSError)):
            call(port, "status")
        # A client that does not trust the certificate refuses the connection.
        with pytest.raises(ssl.SSLCertVerificationError):
            call(port, "status", tls=ssl.create_default_context())
        url = f"https://127.0.0.1:{port}/"
        assert dvp(["status", "--rpc", url, "--cacert", str(cert), "--json"]) == 0
        assert dvp(["status", "--rpc", url, "--json"]) == 3  # untrusted: unreachable

    run_nodes(tmp_path / "net", client, rpc=rpc_section(open_mode=True, tls=(cert, key)))


def test_rpc_discover_describes_every_method(tmp_path: Path) -> None:
    def client(nodes: list[Node]) -> dict[str, Any]:
        port = nodes[0].rpc_ports["rpc"]
        doc = call(port, "rpc.discover")  # no key, on a node that checks keys
        registered = {m.name for m in build_registry(nodes[0])}
        return {"doc": doc, "registered": registered}

    got = run_nodes(
        tmp_path / "net", client, rpc=rpc_section(open_mode=False, credentials=CREDENTIALS)
    )
    doc, registered = got["doc"]["result"], got["registered"]
    assert doc["openrpc"].startswith("1.") and doc["info"]["title"] == "dvp node"
    methods = {m["name"]: m for m in doc["methods"]}
    assert set(methods) == registered
    assert registered >= {
        "submitTransaction",
        "submitTransactions",
        "getTransaction",
        "getAttestationProof",
        "getBlock",
        "getHeader",
        "getValidators",
        "getMembers",
        "getHistoryProof",
        "getConsistencyProof",
        "status",
        "getProposals",
        "rpc.discover",
    }
    for name, m in methods.items():
        assert m["paramStructure"] == "by-name"
        for p in m["params"]:
            assert p["name"] and "type" in p["schema"], (name, p)
        assert m["result"]["schema"], name
        if name != "rpc.discover":
            assert m["result"]["schema"]["type"] in ("object", "string"), name
        assert all(isinstance(e["code"], int) and e["message"] for e in m["errors"])
    assert methods["getAttestationProof"]["x-access"] == ["auditor", "verifier"]
    assert methods["getTransaction"]["x-access"] == ["auditor", "verifier"]
    assert methods["getMembers"]["x-access"] == "member"
    assert methods["submitTransaction"]["x-access"] == "public"
    assert -32002 in {e["code"] for e in methods["getBlock"]["errors"]}
    tx = {p["name"]: p for p in methods["submitTransaction"]["params"]}
    assert tx["tx"]["required"] and tx["tx"]["schema"]["type"] == "string"
    assert tx["wait"]["schema"]["type"] == "boolean" and not tx["wait"]["required"]
