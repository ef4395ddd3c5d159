"""The consent RPC on a real node (docs/CONSENT.md §4, §6): the -32007 gate of
``getAttestationProof`` / ``verifyAttestation``, ``submitConsent`` and ``getSubjectLog``
with its signature and freshness refusals, and a tampered log failing
``verify_subject_log``.

One devnet validator in-process (``tests.support.rpc_node``), API keys configured: hkbank
and webank are verifiers, so the node knows which organisation calls.
"""

from __future__ import annotations

import copy
import hashlib
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cli.subject import derive_key
from ledger.crypto import KeyPair, read_key_file
from ledger.genesis import read_genesis
from ledger.subject_log import sign_query, verify_subject_log
from ledger.transaction import Access, Attest, ConsentGrant, ConsentRevoke, Payload, Transaction
from ledger.verify import TrustAnchor, VerificationError
from node.node import Node
from node.rpc.auth import generate_api_key
from node.rpc_schemas import CONSENT_REQUIRED as CONSENT_REQUIRED_DATA
from tests.support.rpc_node import call, error_code, rpc_section, run_nodes

CONSENT_REQUIRED, INVALID_PARAMS, REJECTED = -32007, -32602, -32004
BANK, OTHER = generate_api_key(), generate_api_key()
CREDENTIALS = {
    "hkbank": (["verifier"], BANK.key_sha256),
    "webank": (["verifier"], OTHER.key_sha256),
}
CHAIN = "dvp-demo"


def _tx(key: KeyPair, nonce: int, payload: Payload, expiry: int = 900) -> Transaction:
    return Transaction(CHAIN, key.public_key, nonce, expiry, payload).signed(key)


def _log_request(keys: list[KeyPair], issued_at_ms: int) -> dict[str, Any]:
    return {
        "keys": [
            {"key": k.public_key.hex(), "signature": sign_query(k, CHAIN, issued_at_ms).hex()}
            for k in keys
        ],
        "issued_at_ms": issued_at_ms,
    }


def _reason(doc: dict[str, Any]) -> str:
    """The -32007 reason, its ``data`` checked against the published schema."""
    assert error_code(doc) == CONSENT_REQUIRED, doc
    jsonschema.validate(doc["error"]["data"], CONSENT_REQUIRED_DATA)
    return str(doc["error"]["data"]["reason"])


def test_consent_gate_submit_consent_and_subject_log(tmp_path: Path) -> None:
    root = tmp_path / "net"
    subject = derive_key(hashlib.sha256(b"applicant").digest(), 0)

    def client(nodes: list[Node]) -> None:
        port = nodes[0].rpc_ports["rpc"]
        issuer = read_key_file(root / "keys" / "szcredit.member.json")
        bank = read_key_file(root / "keys" / "hkbank.member.json")
        webank = read_key_file(root / "keys" / "webank.member.json")
        anchor = TrustAnchor.from_genesis(read_genesis(root / "genesis.json"))
        bound, plain = hashlib.sha256(b"bound").digest(), hashlib.sha256(b"plain").digest()
        now = int(time.time() * 1000)

        def submit(tx: Transaction, method: str = "submitTransaction") -> dict[str, Any]:
            return call(port, method, {"tx": tx.encode().hex(), "wait": True})

        for i, (c, subj) in enumerate(((bound, subject.public_key), (plain, b""))):
            done = submit(_tx(issuer, 100 + i, Attest("credit-report", c, now, 0, b"", subj)))
            assert done.get("result", {}).get("status") == "committed", done

        def proof(key: str, **params: Any) -> dict[str, Any]:
            return call(port, "getAttestationProof", {"commitment": bound.hex(), **params}, key=key)

        # Not bound: served as before. Bound, nobody granted: -32007 no_grant.
        assert "result" in call(
            port, "getAttestationProof", {"commitment": plain.hex()}, key=BANK.key
        )
        assert _reason(proof(BANK.key)) == "no_grant"
        verify = call(port, "verifyAttestation", {"commitment": bound.hex()}, key=BANK.key)
        assert _reason(verify) == "no_grant"

        # submitConsent takes the subject's kinds only; the ledger's codes come back.
        attest_tx = _tx(issuer, 102, Attest("credit-report", bound, now, 0, b""))
        refused = submit(attest_tx, "submitConsent")
        assert error_code(refused) == INVALID_PARAMS and "CONSENT_GRANT" in str(refused)
        stranger = derive_key(hashlib.sha256(b"stranger").digest(), 0)
        grant = ConsentGrant(
            "hkbank", (bound,), "loan-application", now - 1000, now + 86_400_000, 1
        )
        refused = submit(_tx(stranger, 1, grant), "submitConsent")
        assert error_code(refused) == REJECTED
        assert refused["error"]["data"]["code"] == "unknown_sender"

        # The subject grants hkbank one use (no API key: submitConsent is public).
        granted = submit(_tx(subject, 1, grant), "submitConsent")
        assert granted["result"]["status"] == "committed", granted
        gid = granted["result"]["tx_id"]
        doc = proof(BANK.key)
        assert _reason(doc) == "no_access"
        live = doc["error"]["data"]["grants"]
        assert [(g["grant_id"], g["grantee"], g["purpose"], g["uses_left"]) for g in live] == [
            (gid, "hkbank", "loan-application", 1)
        ]
        assert _reason(proof(OTHER.key)) == "no_grant"  # webank holds no grant
        assert doc["error"]["data"]["grants"] != proof(OTHER.key)["error"]["data"]["grants"]

        # webank's ACCESS is refused by the ledger; hkbank's is recorded.
        access = Access(bytes.fromhex(gid), bound, "loan-application")
        refused = submit(_tx(webank, 1, access))
        assert refused["error"]["data"]["code"] == "wrong_grantee"
        recorded = submit(_tx(bank, 1, access))
        assert recorded["result"]["status"] == "committed", recorded
        aid = recorded["result"]["tx_id"]

        assert "result" in proof(BANK.key, access=aid)
        verdict = call(
            port, "verifyAttestation", {"commitment": bound.hex(), "access": aid}, key=BANK.key
        )
        assert verdict["result"]["status"] in ("VALID", "UNVERIFIABLE"), verdict
        assert _reason(proof(OTHER.key, access=aid)) == "wrong_grantee"
        assert _reason(proof(BANK.key, access=hashlib.sha256(b"x").hexdigest())) == (
            "access_not_found"
        )
        assert _reason(proof(BANK.key, access=gid)) == "access_mismatch"
        # Its one use is spent: without access, the reason says so.
        assert _reason(proof(BANK.key)) == "grant_used_up"

        # The subject's log: signed, fresh, proven.
        ok = call(port, "getSubjectLog", _log_request([subject], int(time.time() * 1000)))
        log = verify_subject_log(ok["result"], anchor, keys=[subject.public_key])
        assert [(e.event, e.member, e.tx_id.hex()) for e in log.entries] == [
            ("grant", "hkbank", gid),
            ("access", "hkbank", aid),
        ]
        assert log.documents[subject.public_key] == (bound,)
        stale = call(port, "getSubjectLog", _log_request([subject], now - 6 * 60_000))
        assert error_code(stale) == INVALID_PARAMS and "issued_at_ms" in str(stale)
        forged = _log_request([subject], int(time.time() * 1000))
        forged["keys"][0]["signature"] = sign_query(stranger, CHAIN, forged["issued_at_ms"]).hex()
        bad = call(port, "getSubjectLog", forged)
        assert error_code(bad) == INVALID_PARAMS and "signature" in str(bad)

        # A node that hides the access, or alters the grant, is caught.
        hidden = copy.deepcopy(ok["result"])
        hidden["subjects"][0]["grants"][0]["accesses"] = []
        dropped = copy.deepcopy(ok["result"])
        dropped["subjects"][0]["grants"] = []
        altered = copy.deepcopy(ok["result"])
        rec = bytearray.fromhex(altered["subjects"][0]["grants"][0]["record"])
        rec[-40] ^= 1
        altered["subjects"][0]["grants"][0]["record"] = rec.hex()
        for tampered in (hidden, dropped, altered):
            with pytest.raises(VerificationError):
                verify_subject_log(tampered, anchor, keys=[subject.public_key])
        with pytest.raises(VerificationError):  # an answer for other keys than asked
            verify_subject_log(ok["result"], anchor, keys=[stranger.public_key])

        # Revoked: refused at once, with the reason.
        revoked = submit(_tx(subject, 2, ConsentRevoke(bytes.fromhex(gid))), "submitConsent")
        assert revoked["result"]["status"] == "committed", revoked
        assert _reason(proof(BANK.key)) == "grant_revoked"

    run_nodes(root, client, rpc=rpc_section(open_mode=False, credentials=CREDENTIALS))
