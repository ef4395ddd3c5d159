"""The verifier side of consent (docs/CONSENT.md §5, docs/PROOFS.md §11 step 6): the
bundle's ``consent`` part (version 3), the prover that fills it from an ACCESS id, the
checks of ``ledger.consent_verify`` and the verdict's ``access``, in text and in a
receipt. Runs on the conformance chain (tests/support/conformance.py), whose bound
documents are granted, accessed and revoked by their subjects."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cli.documents import describe, describe_failure
from ledger import consent_verify
from ledger.block import BlockHeader
from ledger.bundle import BundleError, ProofBundle
from ledger.chain import Ledger
from ledger.consent_records import GrantRecord
from ledger.consent_verify import CONSENT_MISMATCH, ConsentError, check_consent
from ledger.prove import ConsentProofError, Prover
from ledger.receipt import build, decode, encode, reverify
from ledger.records import AttestationRecord, Status
from ledger.testchain import Consortium
from ledger.transaction import Access, Transaction
from ledger.verify import (
    Reason,
    TrustAnchor,
    Verdict,
    VerificationError,
    verify_bundle,
    verify_bundle_json,
)
from tests.support import conformance as cf

Chain = tuple[Consortium, Ledger, dict[str, bytes]]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    cons, lg, accesses = cf.build_chain(Path(tmp_path_factory.mktemp("consent")) / "db")
    yield cons, lg, accesses
    lg.close()


def _now(lg: Ledger) -> int:
    return lg.tip.time_ms + 2000


def _verify(chain: Chain, doc: Any) -> Verdict:
    cons, lg, _ = chain
    return verify_bundle_json(doc, TrustAnchor.from_genesis(cons.genesis), now_ms=_now(lg))


def _bound(chain: Chain, name: str = "bound", commitment: bytes = cf.BOUND) -> dict[str, Any]:
    _, lg, accesses = chain
    return Prover(lg).bundle(commitment, access=accesses[name]).to_json()


def _refusal(chain: Chain, doc: Any) -> VerificationError:
    with pytest.raises(VerificationError) as err:
        _verify(chain, doc)
    return err.value


# ----------------------------------------------------------------------------- bundle v3


def test_a_bound_bundle_round_trips_through_json(chain: Chain) -> None:
    doc = _bound(chain)
    assert doc["version"] == 3 and doc["consent"] is not None
    bundle = ProofBundle.from_json(json.loads(json.dumps(doc)))
    assert bundle.to_json() == doc
    assert bundle.consent is not None and bundle.consent.grant_tx.index == 0
    unbound = Prover(chain[1]).bundle(cf.VALID).to_json()
    assert unbound["consent"] is None
    assert ProofBundle.from_json(unbound).consent is None


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda c: {k: v for k, v in c.items() if k != "access"}, "missing fields"),
        (lambda c: {**c, "extra": 1}, "unknown fields"),
        (lambda c: {**c, "grant_tx": None}, "grant_tx and access are required"),
        (lambda c: {**c, "grant_id": c["grant_id"][:-2]}, "32 bytes"),
        (lambda c: {**c, "record": c["record"].upper()}, "lowercase hex"),
        (lambda c: {**c, "state_proof": []}, "expected an object"),
        (lambda c: {**c, "access": {**c["access"], "index": -1}}, "non-negative"),
        (lambda c: [c], "expected an object"),
    ],
)
def test_a_malformed_consent_part_does_not_parse(chain: Chain, change: Any, words: str) -> None:
    doc = _bound(chain)
    doc["consent"] = change(doc["consent"])
    with pytest.raises(BundleError, match=words):
        ProofBundle.from_json(doc)
    assert _refusal(chain, doc).reason == Reason.MALFORMED
    old = {k: v for k, v in _bound(chain).items() if k != "consent"}
    with pytest.raises(BundleError, match="missing fields"):  # a version 2 shape
        ProofBundle.from_json({**old, "version": 3})


# ----------------------------------------------------------------------------- the prover


def test_the_prover_fills_consent_from_an_access_id(chain: Chain) -> None:
    _, lg, accesses = chain
    bundle = Prover(lg).bundle(cf.BOUND, access=accesses["bound"])
    assert bundle.consent is not None
    access = Transaction.decode(bundle.consent.access.tx)
    assert access.tx_id == accesses["bound"] and isinstance(access.payload, Access)
    assert bundle.consent.grant_id == access.payload.grant_id
    grant = GrantRecord.decode(bundle.consent.record)
    assert Transaction.decode(bundle.consent.grant_tx.tx).tx_id == bundle.consent.grant_id
    assert grant.subject == cf.SUBJECT_KEYS[0].public_key
    # without an access the bundle has no consent part (the node decides whether to serve it)
    assert Prover(lg).bundle(cf.BOUND).consent is None


def test_the_prover_refuses_an_access_that_proves_no_use_of_the_document(chain: Chain) -> None:
    _, lg, accesses = chain
    prover = Prover(lg)
    grant_id = prover.bundle(cf.BOUND, access=accesses["bound"]).consent.grant_id  # type: ignore[union-attr]
    cases = [
        (cf.BOUND, accesses["bound_twin"], "another document"),
        (cf.BOUND, grant_id, "is not an ACCESS"),
        (cf.BOUND, b"\x77" * 32, "no committed transaction"),
        (cf.VALID, accesses["bound"], "bound to no data subject"),
        (cf.ABSENT, accesses["bound"], "no attestation"),
    ]
    for commitment, access, words in cases:
        with pytest.raises(ConsentProofError, match=words):
            prover.bundle(commitment, access=access)
    assert issubclass(ConsentProofError, ValueError)


# ----------------------------------------------------------------------------- verdicts


def test_a_bound_document_verifies_with_its_access_named(chain: Chain) -> None:
    v = _verify(chain, _bound(chain))
    assert v.status == Status.VALID and v.access is not None
    assert (v.access.purpose, v.access.grantee, v.access.height) == (
        "loan-application",
        "hkbank",
        15,
    )
    out = v.to_json()["access"]
    assert isinstance(out, dict) and out["grant_id"] == v.access.grant_id.hex()
    assert set(out) == {"grant_id", "purpose", "grantee", "height", "time_ms", "member_key"}
    assert "access recorded at block 15 under grant" in describe(v)
    assert "for loan-application" in describe(v)
    revoked = _verify(chain, _bound(chain, "bound_revoked", cf.BOUND_REVOKED))
    assert revoked.status == Status.REVOKED and revoked.access is not None
    assert revoked.access.purpose == "account-opening"
    assert _verify(chain, Prover(chain[1]).bundle(cf.VALID).to_json()).to_json()["access"] is None


def test_a_bound_document_without_consent_is_unverifiable(chain: Chain) -> None:
    doc = Prover(chain[1]).bundle(cf.BOUND).to_json()
    exc = _refusal(chain, doc)
    assert (exc.reason, exc.status) == (Reason.CONSENT_MISSING, "UNVERIFIABLE")
    assert exc.head is not None
    assert describe_failure(exc).startswith("UNVERIFIABLE (consent missing)")


def _part(chain: Chain, doc: dict[str, Any], **parts: Any) -> dict[str, Any]:
    d = copy.deepcopy(doc)
    d["consent"].update(parts)
    return d


def test_each_consent_check_refuses_with_consent_mismatch(chain: Chain) -> None:
    doc = _bound(chain)
    twin = _bound(chain, "bound_twin", cf.BOUND_TWIN)["consent"]
    other = _bound(chain, "bound_revoked", cf.BOUND_REVOKED)["consent"]
    cases = {
        "grant record's proof": _part(chain, doc, state_proof=other["state_proof"]),
        "not at the record's height/position": _part(chain, doc, grant_tx=other["grant_tx"]),
        "not among the accesses": _part(chain, doc, access=other["access"]),
        "another document": _part(chain, doc, access=twin["access"]),
        "signature does not verify": _part(
            chain,
            doc,
            access={**doc["consent"]["access"], "tx": cf.flip(doc["consent"]["access"]["tx"], -1)},
        ),
    }
    for words, bad in cases.items():
        exc = _refusal(chain, bad)
        assert (exc.reason, exc.status) == (Reason.CONSENT_MISMATCH, "INVALID"), words
        assert words in exc.message, (words, exc.message)


def _stubbed(
    chain: Chain, monkeypatch: pytest.MonkeyPatch, grant_change: Any, access_change: Any
) -> str | None:
    """check_consent on the bound bundle with the grant record, or the ACCESS and its
    block's header, changed as no honest chain has them (the rules refuse such an
    access; the conformance vectors forge a block for two): the proof and inclusion checks
    are stubbed, so the consent rules of steps 3-5 alone judge. The failure's message."""
    bundle = ProofBundle.from_json(_bound(chain))
    consent = bundle.consent
    assert consent is not None and bundle.record is not None
    grant = grant_change(GrantRecord.decode(consent.record))
    monkeypatch.setattr(consent_verify, "_proven_grant", lambda c, h: grant)
    access = access_change(
        Transaction.decode(consent.access.tx), BlockHeader.decode(consent.access.header)
    )

    def included(inc: Any, height: int, pos: int, what: str) -> tuple[Transaction, BlockHeader]:
        if what == "ACCESS":
            return access  # type: ignore[no-any-return]
        return Transaction.decode(inc.tx), BlockHeader.decode(inc.header)

    head = BlockHeader.decode(bundle.head.header)
    try:
        rec = AttestationRecord.decode(bundle.record)
        check_consent(consent, bundle.commitment, rec, head, included)
    except ConsentError as exc:
        assert exc.reason == CONSENT_MISMATCH
        return exc.message
    return None


def test_the_window_and_purpose_rules_are_checked(
    chain: Chain, monkeypatch: pytest.MonkeyPatch
) -> None:
    def same(g: GrantRecord) -> GrantRecord:
        return g

    def at(time_ms: int) -> Any:
        return lambda tx, h: (tx, replace(h, time_ms=time_ms))

    def keep(tx: Transaction, h: BlockHeader) -> tuple[Transaction, BlockHeader]:
        return tx, h

    def other_purpose(tx: Transaction, h: BlockHeader) -> tuple[Transaction, BlockHeader]:
        assert isinstance(tx.payload, Access)
        return replace(tx, payload=replace(tx.payload, purpose="account-opening")), h

    def revoked(g: GrantRecord) -> GrantRecord:
        return g._replace(revoked_height=g.height, revoke_position=0)

    assert _stubbed(chain, monkeypatch, same, keep) is None
    late = _stubbed(chain, monkeypatch, same, at(cf.GRANT_END_MS + 1))
    assert late is not None and "grant_expired" in late
    early = _stubbed(chain, monkeypatch, same, at(cf.GENESIS_TIME_MS - 1))
    assert early is not None and "grant_not_yet_valid" in early
    after = _stubbed(chain, monkeypatch, revoked, keep)
    assert after is not None and "grant_revoked" in after
    purpose = _stubbed(chain, monkeypatch, same, other_purpose)
    assert purpose is not None and "'account-opening'" in purpose


# ----------------------------------------------------------------------------- receipts


def test_a_receipt_of_a_bound_document_reverifies_offline(chain: Chain) -> None:
    cons, lg, _ = chain
    doc = json.loads(json.dumps(_bound(chain)))
    now = _now(lg)
    result = verify_bundle(
        ProofBundle.from_json(doc), TrustAnchor.from_genesis(cons.genesis), now_ms=now
    )
    r = build(doc, result, cons.genesis, cf.BOUND, checked_at_ms=now, max_age_ms=30_000)
    again = decode(encode(r))
    assert again.verdict["access"] == result.to_json()["access"]
    assert reverify(again, cons.genesis, cf.BOUND) == result
    missing = Prover(lg).bundle(cf.BOUND).to_json()
    refused = _refusal(chain, missing)
    r2 = decode(
        encode(
            build(missing, refused, cons.genesis, cf.BOUND, checked_at_ms=now, max_age_ms=30_000)
        )
    )
    assert isinstance(reverify(r2, cons.genesis, cf.BOUND), VerificationError)
