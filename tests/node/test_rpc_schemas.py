"""Every RPC method's real answer matches the JSON Schema its OpenRPC document
publishes (``rpc.discover``; node/rpc_schemas.py).

One devnet validator started in-process, with the admin listener; each method of both
registries is called over real HTTP with valid params, on a chain that holds an
attestation, one revoked by its issuer, one revoked by a governance vote (a bundle
with its proposal), a governance proposal and a document bound to its data subject with
a grant and an access (docs/CONSENT.md), and its result is
validated with ``jsonschema`` against the schema from ``rpc.discover`` itself. The
table of calls must name every registered method, so a method added without a schema
(or without a call here) fails this test.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from cli.subject import derive_key
from ledger.crypto import read_key_file
from ledger.subject_log import sign_query
from ledger.transaction import Access, Attest, ConsentGrant, ConsentRevoke
from ledger.types import GovAction, GovPropose, Revoke, RevokeReason, Transaction
from node.admin import build_admin_registry
from node.methods import build_registry
from node.node import Node
from tests.support.cluster import attest
from tests.support.rpc_node import call, rpc_section, run_nodes

pytestmark = pytest.mark.timeout(120)

Calls = dict[str, list[dict[str, Any]]]


def _schemas(port: int) -> dict[str, dict[str, Any]]:
    doc = call(port, "rpc.discover")["result"]
    return {m["name"]: m["result"]["schema"] for m in doc["methods"]}


def _check(port: int, calls: Calls, registry_names: set[str]) -> int:
    schemas = _schemas(port)
    assert set(calls) == registry_names == set(schemas), "a method without a call or schema"
    checked = 0
    for name, params_list in calls.items():
        schema = schemas[name]
        assert schema.get("type") or schema.get("oneOf"), f"{name}: no result schema"
        jsonschema.Draft202012Validator.check_schema(schema)
        for params in params_list:
            doc = call(port, name, params)
            assert "result" in doc, (name, params, doc)
            jsonschema.validate(doc["result"], schema, cls=jsonschema.Draft202012Validator)
            checked += 1
    return checked


def _submit(port: int, tx: Transaction) -> dict[str, Any]:
    done = call(port, "submitTransaction", {"tx": tx.encode().hex(), "wait": True})["result"]
    assert done["status"] == "committed", done
    return done


def test_every_method_answers_what_its_schema_says(tmp_path: Path) -> None:
    root = tmp_path / "net"

    def client(nodes: list[Node]) -> None:
        node = nodes[0]
        port, admin = node.rpc_ports["rpc"], node.rpc_ports["admin"]
        exp = node.ledger.height + 100
        kept, revoked = attest(root, 1, exp, tag=b"kept"), attest(root, 2, exp, tag=b"revoked")
        issuer = read_key_file(root / "keys" / "szcredit.member.json")
        gone = revoked.payload.commitment  # type: ignore[union-attr]
        revoke = Transaction(
            "dvp-demo", issuer.public_key, 3, exp, Revoke(gone, RevokeReason.SUPERSEDED)
        ).signed(issuer)
        ops = read_key_file(root / "keys" / "cnix.member.json")
        proposal = Transaction(
            "dvp-demo",
            ops.public_key,
            1,
            exp,
            GovPropose(GovAction.SET_PARAM, ("max_block_txs", 300), exp),
        ).signed(ops)
        # One validator: the proposer's own yes vote is a quorum, so the GOV_PROPOSE itself
        # decides the revocation (its bundle carries the proposal).
        by_vote = attest(root, 6, exp, tag=b"revoked by vote")
        voted_out = by_vote.payload.commitment  # type: ignore[union-attr]
        gov_revoke = Transaction(
            "dvp-demo",
            ops.public_key,
            2,
            exp,
            GovPropose(
                GovAction.REVOKE_ATTESTATION, (voted_out, int(RevokeReason.ISSUED_IN_ERROR)), exp
            ),
        ).signed(ops)
        # A document bound to its data subject, a grant to hkbank and hkbank's access
        # (docs/CONSENT.md): the consent methods and the access param.
        subject, t0 = derive_key(bytes(32), 0), int(time.time() * 1000)
        bound = hashlib.sha256(b"bound").digest()
        bank = read_key_file(root / "keys" / "hkbank.member.json")
        bind = Transaction(
            "dvp-demo", issuer.public_key, 7, exp,
            Attest("credit-report", bound, 1, 0, b"", subject.public_key),
        ).signed(issuer)  # fmt: skip
        grant = Transaction(
            "dvp-demo", subject.public_key, 1, exp,
            ConsentGrant("hkbank", (bound,), "loan-application", t0 - 60_000, t0 + 86_400_000, 5),
        ).signed(subject)  # fmt: skip
        access = Transaction(
            "dvp-demo", bank.public_key, 1, exp, Access(grant.tx_id, bound, "loan-application")
        ).signed(bank)
        revoke_grant = Transaction(
            "dvp-demo", subject.public_key, 2, exp, ConsentRevoke(grant.tx_id)
        ).signed(subject)
        tx_id = _submit(port, kept)["tx_id"]
        for tx in (revoked, revoke, proposal, by_vote, gov_revoke, bind, grant, access):
            _submit(port, tx)
        now = int(time.time() * 1000)
        signed = {
            "key": subject.public_key.hex(),
            "signature": sign_query(subject, "dvp-demo", now).hex(),
        }
        bundle = call(port, "getAttestationProof", {"commitment": voted_out.hex()})["result"]
        assert bundle["proposal"] is not None and bundle["proposal"]["id"] == gov_revoke.tx_id.hex()
        head = node.ledger.height
        commitments = [
            kept.payload.commitment.hex(),  # type: ignore[union-attr]
            gone.hex(),
            voted_out.hex(),
            hashlib.sha256(b"never attested").hexdigest(),
        ]
        calls: Calls = {
            "rpc.discover": [{}],
            "ping": [{}],
            "status": [{}],
            "submitTransaction": [{"tx": attest(root, 4, exp, tag=b"new").encode().hex()}],
            "submitTransactions": [
                {"txs": [attest(root, 5, exp, tag=b"new").encode().hex(), kept.encode().hex()]},
                {"txs": ["00"]},
            ],
            "getHeader": [{}, {"height": 0}, {"height": head}],
            "getBlock": [{"height": 1}, {"height": head, "include_txs": True}],
            "getAttestationProof": [{"commitment": c} for c in commitments]
            + [{"commitment": bound.hex(), "access": access.tx_id.hex()}],
            "verifyAttestation": [{"commitment": c} for c in commitments]
            + [
                {"commitment": commitments[0], "max_age_ms": 1},
                {"commitment": bound.hex(), "access": access.tx_id.hex()},
            ],
            "getSubjectLog": [{"keys": [signed], "issued_at_ms": now}],
            "submitConsent": [{"tx": revoke_grant.encode().hex(), "wait": True}],
            "getTransaction": [{"tx_id": tx_id}],
            "getHistoryProof": [{"height": 0}, {"height": head - 1}],
            "getConsistencyProof": [
                {"old_height": 0, "new_height": head},
                {"old_height": 1, "new_height": head},
            ],
            "getValidators": [{}, {"height": 1}],
            "getMembers": [{}],
            "getProposals": [{}, {"ids": [proposal.tx_id.hex()]}],
        }
        names = {m.name for m in build_registry(node)}
        assert _check(port, calls, names) >= 20
        admin_calls: Calls = {
            "rpc.discover": [{}],
            "admin.peers": [{}],
            "admin.mempool": [{}],
            "admin.evidence": [{}, {"limit": 1}],
            "admin.logLevel": [{}, {"level": "info"}],
        }
        _check(admin, admin_calls, {m.name for m in build_admin_registry(node)})

    run_nodes(root, client, rpc=rpc_section(open_mode=True, admin=True))
