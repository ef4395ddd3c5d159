"""Receipts (ledger/receipt.py, docs/PROOFS.md §12): what a verifier saves re-verifies
offline to the same answer, and an altered receipt, another genesis or another document
is refused."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest

from ledger.receipt import (
    Receipt,
    ReceiptError,
    ReceiptMismatch,
    build,
    decode,
    encode,
    reverify,
)
from ledger.testchain import Consortium
from ledger.verify import TrustAnchor, VerificationError, verify_bundle_json
from tests.support.bundles import NOW_MS, C, leaf_paths, make_chain, mutate

COMMITMENTS = {"valid": C[0], "revoked": C[1], "expired": C[2], "absent": C[9]}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Consortium, dict[str, Any]]]:
    cons, lg, bundles = make_chain(tmp_path_factory.mktemp("r") / "db")
    yield cons, bundles
    lg.close()


def receipt_of(chain: Any, name: str, now_ms: int = NOW_MS, max_age_ms: int = 30_000) -> Receipt:
    cons, bundles = chain
    bundle = copy.deepcopy(bundles[name])
    anchor = TrustAnchor.from_genesis(cons.genesis)
    try:
        result: Any = verify_bundle_json(bundle, anchor, now_ms=now_ms, max_age_ms=max_age_ms)
    except VerificationError as exc:
        result = exc
    return build(
        bundle,
        result,
        cons.genesis,
        COMMITMENTS[name],
        checked_at_ms=now_ms,
        max_age_ms=max_age_ms,
    )


@pytest.mark.parametrize("name", sorted(COMMITMENTS))
def test_a_receipt_round_trips_and_reverifies_to_its_verdict(chain: Any, name: str) -> None:
    r = receipt_of(chain, name)
    data = encode(r)
    again = decode(data)
    assert again == r and encode(again) == data
    doc = json.loads(data)
    assert doc["format"] == "dvp-receipt" and doc["version"] == 1
    assert doc["genesis_hash"] == chain[0].genesis.hash.hex()
    result = reverify(again, chain[0].genesis, COMMITMENTS[name])
    assert result.to_json() == doc["verdict"]
    assert doc["verdict"]["status"] == {"absent": "NOT_FOUND"}.get(name, name.upper())


def test_a_stale_answer_is_kept_and_reverified_as_unverifiable(chain: Any) -> None:
    """A receipt keeps whatever was reached, including no verdict (state too old),
    judged again as of its own time, not the re-checker's."""
    r = receipt_of(chain, "valid", now_ms=NOW_MS + 3_600_000)
    assert r.verdict["status"] == "UNVERIFIABLE"
    assert isinstance(reverify(r, chain[0].genesis, C[0]), VerificationError)


def test_every_altered_field_is_refused(chain: Any) -> None:
    """Every leaf of the receipt (the bundle's included) changed by one digit or one:
    it either no longer decodes or no longer re-verifies to its recorded answer."""
    cons, _ = chain
    doc = json.loads(encode(receipt_of(chain, "revoked")))
    paths = leaf_paths(doc)
    assert len(paths) > 30
    for path in paths:
        bad = mutate(doc, path)
        with pytest.raises(ReceiptError):
            reverify(decode(json.dumps(bad).encode()), cons.genesis, C[1])


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"extra": 1}, "extra"),
        ({"version": 2}, "version 2"),
        ({"version": "1"}, "version"),
        ({"version": True}, "version"),
        ({"version": 1.0}, "version"),
        ({"checked_at_ms": 1.5}, "checked_at_ms"),
        ({"checked_at_ms": True}, "checked_at_ms"),
        ({"max_age_ms": "30000"}, "max_age_ms"),
        ({"genesis_hash": "AB" * 32}, "genesis_hash"),
        ({"format": "dvp-receipts"}, "format"),
        ({"verdict": {"status": 1.0}}, "verdict"),
        ({"bundle": []}, "bundle"),
    ],
)
def test_unknown_fields_and_wrong_types_do_not_decode(
    chain: Any, change: dict[str, Any], where: str
) -> None:
    doc = {**json.loads(encode(receipt_of(chain, "valid"))), **change}
    with pytest.raises(ReceiptError, match=where):
        decode(json.dumps(doc).encode())
    for junk in (b"", b"\xff", b"[1]", b"null"):
        with pytest.raises(ReceiptError):
            decode(junk)


def test_another_genesis_or_another_document_is_refused(chain: Any) -> None:
    r = receipt_of(chain, "valid")
    other = Consortium.make(n_validators=5).genesis
    with pytest.raises(ReceiptError, match="genesis") as exc:
        reverify(r, other, C[0])
    assert not isinstance(exc.value, ReceiptMismatch)
    with pytest.raises(ReceiptError, match="another document"):
        reverify(r, chain[0].genesis, C[1])


def test_a_recorded_verdict_that_does_not_hold_is_a_mismatch(chain: Any) -> None:
    doc = json.loads(encode(receipt_of(chain, "revoked")))
    doc["verdict"]["status"] = "VALID"
    with pytest.raises(ReceiptMismatch, match="says VALID, its bundle re-verifies to REVOKED"):
        reverify(decode(json.dumps(doc).encode()), chain[0].genesis, C[1])
