"""The conformance vectors (tests/vectors/bundles.json, docs/CONFORMANCE.md) are current,
and both verifiers give each one its expected result: the reference (ledger.verify) field
for field, and the checker written from the documents alone
(tests/ledger/independent_checker.py) the same verdict or the same refusal.

Regenerate the file after an intentional change: python -m tests.support.conformance
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from ledger.genesis import genesis_from_json
from ledger.verify import TrustAnchor, VerificationError, verify_bundle_json
from tests.ledger import independent_checker as ic
from tests.support import conformance

DOC = json.loads(conformance.PATH.read_text(encoding="utf-8"))
VECTORS = DOC["vectors"]

#: The independent checker's CheckError messages begin with the words of the reason.
_CHECKER_REASONS = {
    "certificate: bad signature": "bad_signature",
    "certificate: not for this block": "bad_signature",
    "certificate: insufficient quorum": "insufficient_quorum",
    "malformed": "malformed",
    "wrong chain": "wrong_chain",
    "wrong commitment": "wrong_commitment",
    "bad signature": "bad_signature",
    "insufficient quorum": "insufficient_quorum",
    "validator chain": "validator_chain_broken",
    "state too old": "state_too_old",
    "state root mismatch": "state_root_mismatch",
    "tx root mismatch": "tx_root_mismatch",
    "history mismatch": "history_root_mismatch",
    "record mismatch": "record_mismatch",
    "signer mismatch": "signer_mismatch",
    "governance mismatch": "governance_mismatch",
    "consent missing": "consent_missing",
    "consent mismatch": "consent_mismatch",
}
_UNVERIFIABLE = {"state_too_old", "consent_missing"}


def test_the_file_equals_a_fresh_generation() -> None:
    assert conformance.PATH.read_text(encoding="utf-8") == conformance.render(), (
        "tests/vectors/bundles.json is stale; regenerate with: python -m tests.support.conformance"
    )


def test_the_vectors_cover_every_verdict_and_reason() -> None:
    statuses = {v["expect"]["status"] for v in VECTORS}
    assert statuses == {"VALID", "REVOKED", "EXPIRED", "NOT_FOUND", "INVALID", "UNVERIFIABLE"}
    reasons = {v["expect"].get("reason") for v in VECTORS} - {None}
    assert reasons == set(_CHECKER_REASONS.values()), reasons
    # every bundle crosses the validator-set change: the anchor's set is not the head's
    assert all(v["bundle"].get("valset_changes") for v in VECTORS[:7])


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_reference_verifier(vector: dict[str, Any]) -> None:
    anchor = TrustAnchor.from_genesis(genesis_from_json(DOC["genesis"]))
    try:
        got = verify_bundle_json(
            vector["bundle"], anchor, now_ms=vector["now_ms"], max_age_ms=vector["max_age_ms"]
        ).to_json()
    except VerificationError as exc:
        got = {"status": exc.status, "reason": exc.reason.value}
    assert got == vector["expect"]


def _checker(vector: dict[str, Any]) -> dict[str, Any]:
    anchor, genesis_hash = ic.anchor_from_genesis_json(DOC["genesis"])
    assert genesis_hash.hex() == DOC["genesis"]["genesis_hash"]
    try:
        verdict = ic.check_bundle(
            vector["bundle"], anchor, now_ms=vector["now_ms"], max_age_ms=vector["max_age_ms"]
        )
    except ic.CheckError as exc:
        text = str(exc)
        reason = next((r for p, r in _CHECKER_REASONS.items() if text.startswith(p)), text)
        return {
            "status": "UNVERIFIABLE" if reason in _UNVERIFIABLE else "INVALID",
            "reason": reason,
        }
    except ValueError as exc:  # a decoding failure of the canonical encoding
        return {"status": "INVALID", "reason": f"malformed ({exc})"}
    # the checker leaves out the fields that do not apply; the vectors give them as null
    out = dict.fromkeys(vector["expect"])
    out.update({k: v.hex() if isinstance(v, bytes) else v for k, v in verdict.items()})
    return out


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_independent_checker(vector: dict[str, Any]) -> None:
    assert _checker(vector) == vector["expect"]
