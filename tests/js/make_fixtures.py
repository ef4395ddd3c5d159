"""Writes tests/js/fixtures/bundles.json: real proof bundles (VALID, REVOKED by the issuer
and by a governance vote, EXPIRED, NOT_FOUND, a document bound to a data subject with its
recorded access, across a validator-set change), the genesis
they trust, the verifier's clock,
and the reference verifier's answer (ledger/verify.py) for each bundle, for a stale clock,
for every one-field mutation (tests/support/bundles.py) and for every swapped part (each
of ``record``/``attest``/``revoke``/``proposal`` left out, or taken from another bundle
where this one has none: ``swaps``). node/web/verify.test.mjs
asserts the JavaScript verifier gives the same answers; tests/ledger/test_js_verifier.py
re-checks the recorded answers against the reference and runs ``node --test``.

Run from the repository root: ``python tests/js/make_fixtures.py``.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "js" / "fixtures" / "bundles.json"


def answer(doc: Any, genesis: Any, now_ms: int, max_age_ms: int | None = 30_000) -> Any:
    """The reference verifier's answer in its JSON form (dvp verify --json)."""
    from ledger.verify import TrustAnchor, VerificationError, verify_bundle_json

    try:
        v = verify_bundle_json(
            doc, TrustAnchor.from_genesis(genesis), now_ms=now_ms, max_age_ms=max_age_ms
        )
    except VerificationError as e:
        out = e.to_json()
        del out["message"]  # wording is each implementation's own
        return out
    return v.to_json()


def governance_bundle(cons: Any, lg: Any) -> Any:
    """Extends ``make_chain``'s chain: a commitment attested, then revoked by a governance
    REVOKE_ATTESTATION (proposed by cnix, decided by the second vote), and its bundle with
    the ``proposal`` part (docs/PROOFS.md §11 step 5)."""
    from ledger.prove import Prover
    from ledger.types import GovAction, GovPropose, GovVote, RevokeReason
    from tests.support.bundles import C, commit_block

    commit_block(lg, cons, [cons.attest(C[4])])
    args = (C[4], int(RevokeReason.ISSUED_IN_ERROR))
    prop = cons.tx("cnix", GovPropose(GovAction.REVOKE_ATTESTATION, args, 100))
    commit_block(lg, cons, [prop])
    commit_block(lg, cons, [cons.tx(v, GovVote(prop.tx_id, True)) for v in ("hkbank", "szcredit")])
    return json.loads(json.dumps(Prover(lg).bundle(C[4]).to_json()))


def consent_bundle(cons: Any, lg: Any) -> Any:
    """Extends the chain: a document bound to a data subject's key, the subject's grant to
    hkbank, hkbank's recorded access, and the bundle with its ``consent`` part
    (docs/CONSENT.md §5)."""
    from ledger.crypto import KeyPair
    from ledger.prove import Prover
    from ledger.testchain import GENESIS_TIME_MS
    from ledger.transaction import Access, Attest, ConsentGrant
    from tests.support.bundles import C, commit_block

    subject = KeyPair.from_seed(b"\x5a" * 32)
    attest = Attest("credit-report", C[5], GENESIS_TIME_MS, 0, b"", subject.public_key)
    commit_block(lg, cons, [cons.tx("szcredit", attest)])
    window = (GENESIS_TIME_MS, GENESIS_TIME_MS + 86_400_000)
    grant = cons.tx(
        "", ConsentGrant("hkbank", (C[5],), "loan-application", *window, 2), key=subject
    )
    commit_block(lg, cons, [grant])
    access = cons.tx("hkbank", Access(grant.tx_id, C[5], "loan-application"))
    commit_block(lg, cons, [access])
    return json.loads(json.dumps(Prover(lg).bundle(C[5], access=access.tx_id).to_json()))


PARTS = ("record", "attest", "revoke", "proposal", "consent")


def swaps(name: str, bundles: dict[str, Any]) -> list[tuple[str, Any]]:
    """Each optional part of bundle ``name`` made null, or (when null) set to another
    bundle's: a part present when it must not be, or missing when it must (§11)."""
    doc = bundles[name]
    out: list[tuple[str, Any]] = []
    for part in PARTS:
        if doc[part] is not None:
            out.append((part, None))
        else:
            other = next((b[part] for b in bundles.values() if b[part] is not None), None)
            if other is not None:
                out.append((part, other))
    return out


def swapped(doc: Any, part: str, value: Any) -> Any:
    return {**doc, part: value}


def build() -> dict[str, Any]:
    from ledger.genesis import genesis_to_json
    from tests.support.bundles import NOW_MS, leaf_paths, make_chain, mutate

    with tempfile.TemporaryDirectory() as tmp:
        cons, lg, bundles = make_chain(Path(tmp) / "db")
        bundles["revoked_by_governance"] = governance_bundle(cons, lg)
        bundles["bound_with_access"] = consent_bundle(cons, lg)
        lg.close()
    g = cons.genesis
    cases = []
    for name, doc in bundles.items():
        mutations = [[list(p), answer(mutate(doc, p), g, NOW_MS)] for p in leaf_paths(doc)]
        swap_answers = [
            [part, value, answer(swapped(doc, part, value), g, NOW_MS)]
            for part, value in swaps(name, bundles)
        ]
        cases.append(
            {
                "name": name,
                "bundle": doc,
                "expected": answer(doc, g, NOW_MS),
                "stale": answer(doc, g, NOW_MS + 3_600_000),
                "mutations": mutations,
                "swaps": swap_answers,
            }
        )
    return {
        "about": "generated by tests/js/make_fixtures.py; answers are ledger/verify.py's",
        "genesis": json.loads(json.dumps(genesis_to_json(g))),
        "now_ms": NOW_MS,
        "stale_now_ms": NOW_MS + 3_600_000,
        "max_age_ms": 30_000,
        "cases": cases,
    }


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    FIXTURE.write_text(json.dumps(build(), indent=1, sort_keys=True) + "\n")
    print(FIXTURE)
