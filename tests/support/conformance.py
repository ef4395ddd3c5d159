"""The conformance vectors (tests/vectors/bundles.json, docs/CONFORMANCE.md): complete
proof bundles for every verdict, across a validator-set change, and mutated copies that
a verifier must refuse, each with the result it must give.

Everything is deterministic -- member and node keys from fixed seeds
(ledger.testchain.Consortium), block times one second apart from GENESIS_TIME_MS, and
Ed25519 signatures are deterministic (RFC 8032) -- so regenerating gives the same bytes:
``python -m tests.support.conformance`` rewrites the file, and
tests/ledger/test_conformance_vectors.py checks the file on disk equals a fresh
generation. Each expected result is written here by hand and checked against
ledger.verify while generating, so the file never records what the code happens to say.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ledger.block import BlockHeader, CommitCertificate
from ledger.chain import Ledger
from ledger.crypto import KeyPair
from ledger.genesis import genesis_to_json
from ledger.prove import Prover
from ledger.records import proposal_key
from ledger.testchain import DOC_TYPES, GENESIS_TIME_MS, Consortium
from ledger.transaction import Access, Attest, ConsentGrant, ConsentRevoke, Transaction
from ledger.types import GovAction, GovPropose, GovVote, Revoke, RevokeReason
from ledger.verify import (
    DEFAULT_MAX_AGE_MS,
    TrustAnchor,
    VerificationError,
    verify_bundle_json,
)
from tests.support.conformance_forged import forge, forge_access_block, forgeries

PATH = Path(__file__).parent.parent / "vectors" / "bundles.json"
FORMAT = 1

#: The commitments of the chain (fixed bytes: what matters is the proofs, not the files).
VALID, REVOKED_ISSUER, EXPIRES, REVOKED_GOV, LATE, IN_HEAD, ABSENT = (
    bytes([0xC0 + i]) * 32 for i in range(7)
)
#: Documents bound to data subjects (docs/CONSENT.md): two under one subject key and one
#: grant, and one under another key whose attestation the issuer revokes after its access.
BOUND, BOUND_TWIN, BOUND_REVOKED = (bytes([0xB0 + i]) * 32 for i in range(3))
SUBJECT_KEYS = tuple(KeyPair.from_seed(bytes([0x5B, i]) * 16) for i in range(2))
EXPIRY_MS = GENESIS_TIME_MS + 1500  # between block 1 and the verifier's clock
GRANT_END_MS = GENESIS_TIME_MS + 86_400_000  # a day: the verifier's clock is inside it


def _commit(lg: Ledger, cons: Consortium, txs: list[Transaction]) -> None:
    ex = lg.build(txs, time_ms=lg.tip.time_ms + 1000, proposer=cons.proposer)
    assert not ex.rejected, ex.rejected
    lg.commit(ex.block, cons.certify(ex.block, validators=lg.validators_at(ex.height)))


def build_chain(path: Path) -> tuple[Consortium, Ledger, dict[str, bytes]]:
    """Height 1 attests four commitments; a vote removes validator webank (a certified
    validator-set change); after it one more is attested, one revoked by its issuer,
    another is revoked by a governance vote; documents bound to data subjects are
    granted, accessed and revoked (``consent_blocks``, whose ACCESS ids come back); and
    the head block attests the last."""
    cons = Consortium.make()
    # Nonces above 2**53, as `dvp` picks them (63 random bits): a verifier must read
    # 64-bit integers exactly (a JavaScript number cannot).
    cons.nonce = 2**62
    lg = Ledger.open(path, cons.genesis)
    _commit(
        lg,
        cons,
        [
            cons.attest(VALID),
            cons.attest(REVOKED_ISSUER, "bank-statement"),
            cons.attest(EXPIRES, valid_until_ms=EXPIRY_MS),
            cons.attest(REVOKED_GOV),
        ],
    )
    prop = cons.tx("cnix", GovPropose(GovAction.REMOVE_VALIDATOR, ("webank",), 100))
    _commit(lg, cons, [prop])
    _commit(lg, cons, [cons.tx(v, GovVote(prop.tx_id, True)) for v in ("hkbank", "szcredit")])
    for _ in range(6):
        _commit(lg, cons, [])
    revoke = cons.tx("szcredit", Revoke(REVOKED_ISSUER, RevokeReason.DATA_CHANGED))
    _commit(lg, cons, [cons.attest(LATE), revoke])
    gov = cons.tx(
        "cnix",
        GovPropose(
            GovAction.REVOKE_ATTESTATION, (REVOKED_GOV, int(RevokeReason.ISSUED_IN_ERROR)), 100
        ),
    )
    _commit(lg, cons, [gov])
    _commit(lg, cons, [cons.tx(v, GovVote(gov.tx_id, True)) for v in ("hkbank", "szcredit")])
    accesses = consent_blocks(lg, cons)
    _commit(lg, cons, [cons.attest(IN_HEAD)])
    return cons, lg, accesses


def _bound(cons: Consortium, commitment: bytes, subject: KeyPair) -> Transaction:
    attest = Attest(DOC_TYPES[1], commitment, GENESIS_TIME_MS, 0, b"", subject.public_key)
    return cons.tx("szcredit", attest)


def consent_blocks(lg: Ledger, cons: Consortium) -> dict[str, bytes]:
    """Bound attestations, grants (the subject's signed CONSENT_GRANTs), accesses by
    hkbank, then the issuer revokes one bound document and its subject the grant: the
    access stays proven (it came before both). The ACCESS ids, by document."""
    s1, s2 = SUBJECT_KEYS
    _commit(
        lg,
        cons,
        [_bound(cons, BOUND, s1), _bound(cons, BOUND_TWIN, s1), _bound(cons, BOUND_REVOKED, s2)],
    )
    window = (GENESIS_TIME_MS, GRANT_END_MS)
    g1 = cons.tx(
        "", ConsentGrant("hkbank", (BOUND, BOUND_TWIN), "loan-application", *window, 3), key=s1
    )
    g2 = cons.tx(
        "", ConsentGrant("hkbank", (BOUND_REVOKED,), "account-opening", *window, 1), key=s2
    )
    _commit(lg, cons, [g1, g2])
    out = {
        "bound": cons.tx("hkbank", Access(g1.tx_id, BOUND, "loan-application")),
        "bound_twin": cons.tx("hkbank", Access(g1.tx_id, BOUND_TWIN, "loan-application")),
        "bound_revoked": cons.tx("hkbank", Access(g2.tx_id, BOUND_REVOKED, "account-opening")),
    }
    _commit(lg, cons, list(out.values()))
    revoke = cons.tx("szcredit", Revoke(BOUND_REVOKED, RevokeReason.DATA_CHANGED))
    _commit(lg, cons, [revoke, cons.tx("", ConsentRevoke(g2.tx_id), key=s2)])
    return {name: tx.tx_id for name, tx in out.items()}


# ----------------------------------------------------------------------------- mutations


def flip(hex_value: str, offset: int) -> str:
    """``hex_value`` with the byte at ``offset`` (negative: from the end) XOR 0x01."""
    raw = bytearray(bytes.fromhex(hex_value))
    raw[offset] ^= 0x01
    return raw.hex()


def flip_within(hex_value: str, needle: bytes) -> str:
    """Flip the middle byte of the first occurrence of ``needle`` in ``hex_value``'s bytes."""
    at = bytes.fromhex(hex_value).find(needle)
    assert at >= 0, needle.hex()
    return flip(hex_value, at + len(needle) // 2)


def _header(doc: dict[str, Any]) -> BlockHeader:
    return BlockHeader.decode(bytes.fromhex(doc["head"]["header"]))


def _set(path: tuple[Any, ...], fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def apply(doc: Any) -> Any:
        d = copy.deepcopy(doc)
        parent = d
        for k in path[:-1]:
            parent = parent[k]
        parent[path[-1]] = fn(parent[path[-1]])
        return d

    return apply


def _head_field(name: str) -> Callable[[Any], Any]:
    def apply(doc: Any) -> Any:
        value = getattr(_header(doc), name)
        return _set(("head", "header"), lambda h: flip_within(h, value))(doc)

    return apply


def _drop_signature(doc: Any) -> Any:
    """The head certificate with one signature fewer (re-encoded: well-formed)."""
    cert = CommitCertificate.decode(bytes.fromhex(doc["head"]["certificate"]))
    short = CommitCertificate(cert.height, cert.view, cert.block_id, cert.signatures[:-1])
    return _set(("head", "certificate"), lambda _: short.encode().hex())(doc)


def _tx_field(which: str, part: str) -> Callable[[Any], Any]:
    """Flip a byte of the ATTEST/REVOKE transaction's body (its commitment) or signature."""

    def apply(doc: Any) -> Any:
        tx = Transaction.decode(bytes.fromhex(doc[which]["tx"]))
        if part == "signature":
            return _set((which, "tx"), lambda h: flip_within(h, tx.signature))(doc)
        return _set((which, "tx"), lambda h: flip_within(h, tx.payload.commitment))(doc)

    return apply


def _other(field: str, source: dict[str, Any]) -> Callable[[Any], Any]:
    return _set((field,), lambda _: copy.deepcopy(source[field]))


# (name, base bundle, mutation, what it changes, expected reason)
Mutation = tuple[str, str, Callable[[Any], Any], str, str]


def _proof_flips(part: str, base: str, kind: str) -> list[Mutation]:
    """A byte of the first hash of ``part``'s tx proof, and of its history proof."""
    return [
        (
            f"{part}-{proof.replace('_', '-')}",
            base,
            _set((part, proof, 0), lambda h: flip(h, 0)),
            f"a byte of the {kind} {what} inclusion proof",
            reason,
        )
        for proof, what, reason in (
            ("tx_proof", "transaction's tx-root", "tx_root_mismatch"),
            ("history_proof", "block's history", "history_root_mismatch"),
        )
    ]


def mutations(bundles: dict[str, Any], other: dict[str, Any]) -> list[Mutation]:
    st = ("state_proof",)
    return [
        *consent_mutations(bundles, other),
        ("version", "valid", _set(("version",), lambda v: 1), "version 1", "malformed"),
        ("unknown-field", "valid", lambda d: {**d, "extra": 1}, "an unknown field", "malformed"),
        (
            "uppercase-hex",
            "valid",
            _set(("commitment",), str.upper),
            "the commitment in uppercase hex",
            "malformed",
        ),
        ("chain-id", "valid", _set(("chain_id",), lambda s: s + "x"), "chain_id", "wrong_chain"),
        (
            "commitment",
            "valid",
            _set(("commitment",), lambda h: flip(h, 0)),
            "a byte of the commitment",
            "state_root_mismatch",
        ),
        *[
            (
                f"head-header-{f}",
                "valid",
                _head_field(f),
                f"a byte of the head header's {f}",
                "bad_signature",
            )
            for f in ("state_root", "tx_root", "history_root", "proposer")
        ],
        (
            "head-certificate-signature",
            "valid",
            _set(("head", "certificate"), lambda h: flip(h, -1)),
            "a byte of a signature in the head's commit certificate",
            "bad_signature",
        ),
        (
            "head-certificate-short",
            "valid",
            _drop_signature,
            "one signature removed from the head's commit certificate",
            "insufficient_quorum",
        ),
        (
            "valset-change-certificate-signature",
            "valid",
            _set(("valset_changes", 0, "certificate"), lambda h: flip(h, -1)),
            "a byte of a signature in the validator-set change's certificate",
            "bad_signature",
        ),
        (
            "valset-change-next-validators",
            "valid",
            _set(("valset_changes", 0, "next_validators"), lambda h: flip(h, -1)),
            "a byte of a node key in the new validator set",
            "validator_chain_broken",
        ),
        (
            "valset-change-missing",
            "valid",
            _set(("valset_changes",), lambda _: []),
            "the validator-set change left out",
            "validator_chain_broken",
        ),
        (
            "state-proof-sibling",
            "valid",
            _set((*st, "levels", 0, "siblings", 0), lambda h: flip(h, 0)),
            "a byte of a sibling hash in the state proof",
            "state_root_mismatch",
        ),
        (
            "record",
            "valid",
            _set(("record",), lambda h: flip(h, -1)),
            "the last byte of the record",
            "state_root_mismatch",
        ),
        (
            "record-removed",
            "valid",
            lambda d: {**d, "record": None, "attest": None},
            "the record (and its ATTEST) removed: absence claimed with a presence proof",
            "state_root_mismatch",
        ),
        (
            "attest-tx-signature",
            "valid",
            _tx_field("attest", "signature"),
            "a byte of the ATTEST transaction's signature",
            "bad_signature",
        ),
        (
            "attest-tx-commitment",
            "valid",
            _tx_field("attest", "commitment"),
            "a byte of the commitment inside the signed ATTEST transaction",
            "bad_signature",
        ),
        *_proof_flips("attest", "valid", "ATTEST"),
        *_proof_flips("revoke", "revoked_by_issuer", "REVOKE"),
        (
            "attest-block-header",
            "valid",
            _set(("attest", "header"), lambda h: flip(h, -1)),
            "the last byte of the ATTEST block's header",
            "history_root_mismatch",
        ),
        (
            "attest-index",
            "valid",
            _set(("attest", "index"), lambda i: i + 1),
            "the ATTEST transaction's index",
            "record_mismatch",
        ),
        (
            "attest-of-another-commitment",
            "valid",
            _other("attest", bundles["revoked_by_issuer"]),
            "the ATTEST part of another commitment's bundle",
            "record_mismatch",
        ),
        (
            "attest-missing",
            "valid",
            _set(("attest",), lambda _: None),
            "the ATTEST part removed",
            "malformed",
        ),
        (
            "head-history-proof-not-empty",
            "valid_in_head",
            _set(("attest", "history_proof"), lambda _: ["00" * 32]),
            "a hash added to the history proof of a transaction in the head block",
            "history_root_mismatch",
        ),
        (
            "revoke-tx-signature",
            "revoked_by_issuer",
            _tx_field("revoke", "signature"),
            "a byte of the REVOKE transaction's signature",
            "bad_signature",
        ),
        (
            "governance-vote-signature",
            "revoked_by_governance",
            _set(("revoke", "tx"), lambda h: flip(h, -1)),
            "a byte of the deciding GOV_VOTE transaction's signature",
            "bad_signature",
        ),
        (
            "valset-change-header",
            "valid",
            _set(("valset_changes", 0, "header"), lambda h: flip(h, -1)),
            "the last byte of the validator-set change's header",
            "bad_signature",
        ),
        (
            "revoke-on-a-valid-record",
            "valid",
            _other("revoke", bundles["revoked_by_issuer"]),
            "a REVOKE part added to a record that is not revoked",
            "malformed",
        ),
        (
            "not-found-with-attest",
            "not_found",
            _other("attest", bundles["valid"]),
            "an ATTEST part added to a proof of absence",
            "malformed",
        ),
        (
            "not-found-for-an-attested-commitment",
            "valid",
            _other("state_proof", bundles["not_found"]),
            "another key's proof of absence in place of the state proof",
            "state_root_mismatch",
        ),
        (
            "revoked-without-revoke",
            "revoked_by_issuer",
            _set(("revoke",), lambda _: None),
            "the revoking transaction left out (null)",
            "malformed",
        ),
        (
            "governance-without-proposal",
            "revoked_by_governance",
            _set(("proposal",), lambda _: None),
            "the proposal left out (null)",
            "malformed",
        ),
        (
            "proposal-on-an-issuer-revocation",
            "revoked_by_issuer",
            _other("proposal", bundles["revoked_by_governance"]),
            "a governance proposal added to a revocation by the issuer",
            "malformed",
        ),
        (
            "proposal-record",
            "revoked_by_governance",
            _set(("proposal", "record"), lambda h: flip(h, -1)),
            "the last byte of the proposal's record",
            "state_root_mismatch",
        ),
        (
            "another-proposal",
            "revoked_by_governance",
            _set(("proposal",), lambda _: copy.deepcopy(other["proposal"])),
            "another proposal (the validator-set change's, proven at the same head)",
            "governance_mismatch",
        ),
        (
            "governance-vote-for-issuer-revoke",
            "revoked_by_issuer",
            _other("revoke", bundles["revoked_by_governance"]),
            "the revoking transaction (the governance vote, at another height)",
            "record_mismatch",
        ),
    ]


def consent_mutations(bundles: dict[str, Any], other: dict[str, Any]) -> list[Mutation]:
    """The consent part (docs/CONSENT.md §5) changed, left out or swapped."""
    bound, revoked = bundles["bound_with_access"], bundles["bound_revoked_with_access"]
    twin = other["twin_consent"]
    part = ("consent",)
    return [
        (
            "consent-missing",
            "bound_with_access",
            _set(part, lambda _: None),
            "the consent part left out (null)",
            "consent_missing",
        ),
        (
            "consent-on-an-unbound-document",
            "valid",
            _other("consent", bound),
            "a consent part added to a document bound to no subject",
            "malformed",
        ),
        (
            "consent-unknown-field",
            "bound_with_access",
            _set(part, lambda c: {**c, "extra": 1}),
            "an unknown field in the consent part",
            "malformed",
        ),
        (
            "consent-grant-tx-of-another-subject",
            "bound_with_access",
            _set((*part, "grant_tx"), lambda _: copy.deepcopy(revoked["consent"]["grant_tx"])),
            "the CONSENT_GRANT (another subject key's grant)",
            "consent_mismatch",
        ),
        (
            "consent-grant-tx-signature",
            "bound_with_access",
            _set((*part, "grant_tx", "tx"), lambda h: flip(h, -1)),
            "a byte of the CONSENT_GRANT's signature",
            "consent_mismatch",
        ),
        (
            "consent-access-signature",
            "bound_with_access",
            _set((*part, "access", "tx"), lambda h: flip(h, -1)),
            "a byte of the ACCESS's signature",
            "consent_mismatch",
        ),
        (
            "consent-access-tx-proof",
            "bound_with_access",
            _set((*part, "access", "tx_proof", 0), lambda h: flip(h, 0)),
            "a byte of the ACCESS's tx-root inclusion proof",
            "consent_mismatch",
        ),
        (
            "consent-access-to-another-document",
            "bound_with_access",
            _set((*part, "access"), lambda _: copy.deepcopy(twin["access"])),
            "the ACCESS (the same grant's access to the subject's other document)",
            "consent_mismatch",
        ),
        (
            "consent-access-under-another-grant",
            "bound_with_access",
            _set((*part, "access"), lambda _: copy.deepcopy(revoked["consent"]["access"])),
            "the ACCESS (one under another grant, not listed in this one)",
            "consent_mismatch",
        ),
        (
            "consent-state-proof-of-another-grant",
            "bound_with_access",
            _set(
                (*part, "state_proof"), lambda _: copy.deepcopy(revoked["consent"]["state_proof"])
            ),
            "the grant's state proof (another grant's)",
            "consent_mismatch",
        ),
        (
            "consent-another-grant",
            "bound_with_access",
            _set(part, lambda _: copy.deepcopy(revoked["consent"])),
            "the whole consent part (another subject's grant and access, all proofs sound)",
            "consent_mismatch",
        ),
        (
            "consent-grant-record",
            "bound_with_access",
            _set((*part, "record"), lambda h: flip(h, -1)),
            "the last byte of the grant record",
            "consent_mismatch",
        ),
    ]


# ----------------------------------------------------------------------------- generation


def _expect(anchor: TrustAnchor, doc: Any, now_ms: int, max_age_ms: int | None) -> dict[str, Any]:
    try:
        verdict = verify_bundle_json(doc, anchor, now_ms=now_ms, max_age_ms=max_age_ms)
    except VerificationError as exc:
        return {"status": exc.status, "reason": exc.reason.value}
    return verdict.to_json()


def generate() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cons, lg, accesses = build_chain(Path(tmp) / "db")
        prover = Prover(lg)
        head_ms = lg.tip.time_ms
        # The validator-set change's proposal (block 2), proven at the head: a genuine
        # proposal proof that decided something else.
        block2 = lg.store.get_block(2)
        assert block2 is not None
        pid = block2.txs[0].tx_id
        record, proof = lg.tree.get_with_proof(proposal_key(pid), lg.height)
        assert record is not None
        other_proposal = {"id": pid.hex(), "record": record.hex(), "state_proof": proof.to_json()}
        other_parts: dict[str, Any] = {"proposal": other_proposal}
        bundles = {
            name: json.loads(json.dumps(prover.bundle(c).to_json()))
            for name, c in [
                ("valid", VALID),
                ("valid_attested_after_valset_change", LATE),
                ("valid_in_head", IN_HEAD),
                ("revoked_by_issuer", REVOKED_ISSUER),
                ("revoked_by_governance", REVOKED_GOV),
                ("expired", EXPIRES),
                ("not_found", ABSENT),
            ]
        }
        for name, c in [("bound_with_access", BOUND), ("bound_revoked_with_access", BOUND_REVOKED)]:
            access = accesses[name.removesuffix("_with_access")]
            bundles[name] = json.loads(json.dumps(prover.bundle(c, access=access).to_json()))
        block_ids = [lg.store.get_header(h).block_id for h in range(lg.height + 1)]  # type: ignore[union-attr]
        twin = prover.bundle(BOUND_TWIN, access=accesses["bound_twin"]).to_json()
        other_parts["twin_consent"] = json.loads(json.dumps(twin["consent"]))
        lg.close()
    anchor = TrustAnchor.from_genesis(cons.genesis)
    now_ms = head_ms + 2000
    stale_ms = head_ms + DEFAULT_MAX_AGE_MS + 1
    expected_status = {
        "valid": "VALID",
        "valid_attested_after_valset_change": "VALID",
        "valid_in_head": "VALID",
        "revoked_by_issuer": "REVOKED",
        "revoked_by_governance": "REVOKED",
        "expired": "EXPIRED",
        "not_found": "NOT_FOUND",
        "bound_with_access": "VALID",
        "bound_revoked_with_access": "REVOKED",
    }
    vectors: list[dict[str, Any]] = []

    def add(name: str, about: str, doc: Any, now: int, max_age: int | None, want: str) -> None:
        expect = _expect(anchor, doc, now, max_age)
        got = expect.get("reason", expect["status"])
        assert got == want, f"vector {name}: ledger.verify says {got}, the vector says {want}"
        vectors.append(
            {
                "name": name,
                "description": about,
                "now_ms": now,
                "max_age_ms": max_age,
                "bundle": doc,
                "expect": expect,
            }
        )

    for name, doc in bundles.items():
        add(name, _ABOUT[name], doc, now_ms, DEFAULT_MAX_AGE_MS, expected_status[name])
    add(
        "expired_judged_before_expiry",
        "the expired bundle judged with no freshness limit by a clock before its expiry: "
        "the verdict is judged by the verifier's clock, not the head's time",
        bundles["expired"],
        EXPIRY_MS - 1,
        None,
        "VALID",
    )
    add(
        "state_too_old",
        "a sound bundle judged more than max_age_ms after its head's time: no verdict",
        bundles["valid"],
        stale_ms,
        DEFAULT_MAX_AGE_MS,
        "state_too_old",
    )
    for name, base, fn, what, reason in mutations(bundles, other_parts):
        add(
            f"mutated/{name}",
            f"the {base} bundle with {what} changed: must be refused",
            fn(bundles[base]),
            now_ms,
            DEFAULT_MAX_AGE_MS,
            reason,
        )
    for name, base, what, change, reason in forgeries(cons, bundles):
        add(
            f"forged/{name}",
            f"the {base} bundle under a head re-certified by the validator set in force over "
            f"a state where {what} was forged: every proof holds, the records and the signed "
            "transactions disagree",
            forge(cons, bundles[base], change),
            now_ms,
            DEFAULT_MAX_AGE_MS,
            reason,
        )
    grant_id = bytes.fromhex(bundles["bound_with_access"]["consent"]["grant_id"])
    for name, purpose, time_ms, what in [
        (
            "consent-access-outside-window",
            "loan-application",
            GENESIS_TIME_MS - 1,
            "an ACCESS in a block timed before the grant's window",
        ),
        (
            "consent-access-for-another-purpose",
            "account-opening",
            head_ms,
            "an ACCESS for another purpose than the grant's",
        ),
    ]:
        access = cons.tx("hkbank", Access(grant_id, BOUND, purpose))
        add(
            f"forged/{name}",
            "the bound_with_access bundle re-served by a dishonest quorum that certified a "
            f"block after the head holding {what} (the rules refuse it), listed in the grant "
            "record of a re-certified head: every proof and signature holds, the consent "
            "rules do not",
            forge_access_block(cons, block_ids, bundles["bound_with_access"], access, time_ms),
            now_ms,
            DEFAULT_MAX_AGE_MS,
            "consent_mismatch",
        )
    return {
        "about": "dvp conformance vectors: complete proof bundles (the JSON result of "
        "getAttestationProof) and the result a verifier must give for each. "
        "Format and checks: docs/CONFORMANCE.md. Regenerate: python -m tests.support.conformance",
        "format": FORMAT,
        "genesis": genesis_to_json(cons.genesis),
        "vectors": vectors,
    }


_ABOUT = {
    "valid": "attested at height 1 under the genesis validator set; the head is "
    "certified by the set after a validator-set change",
    "valid_attested_after_valset_change": "attested after the validator-set change",
    "valid_in_head": "attested in the head block itself: its history proof is empty",
    "revoked_by_issuer": "attested at height 1, revoked by its issuer after the "
    "validator-set change; the bundle carries the REVOKE transaction",
    "revoked_by_governance": "attested at height 1, revoked by a governance vote after the "
    "validator-set change; the bundle's revoke part is the deciding GOV_VOTE transaction and "
    "its proposal part the proposal's record, whose yes votes are a quorum of the 3 validators "
    "then in force",
    "expired": "attested with valid_until_ms before the verifier's clock",
    "not_found": "never attested: a proof of absence",
    "bound_with_access": "bound to a data subject's key; the bundle carries the access "
    "hkbank recorded under the subject's grant (docs/CONSENT.md §5): the grant record "
    "proven at the head, the subject's signed CONSENT_GRANT and hkbank's signed ACCESS",
    "bound_revoked_with_access": "bound to another subject key, accessed under its grant, "
    "then revoked by its issuer while the subject revoked the grant: the access came before "
    "both, so it is still proven",
}


def render() -> str:
    return json.dumps(generate(), indent=1, sort_keys=False) + "\n"


if __name__ == "__main__":
    PATH.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {PATH}\n")
