"""The data subject's proven log (ledger/subject_log.py, docs/CONSENT.md §6).

A property: for any sequence of grants, revocations and accesses (each in its own block,
whatever the rule book says of it), the log the subject verifies against the genesis
lists exactly the accesses the chain allowed, under the grants it allowed, and each
allowed access had a live grant. And a log a node altered -- an access hidden, a grant
hidden, a record changed, a transaction swapped -- does not verify.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.chain import Ledger
from ledger.consent_records import GrantRecord, grant_live_at
from ledger.crypto import KeyPair
from ledger.prove import Prover
from ledger.subject_log import (
    build_subject_log,
    query_signature_ok,
    sign_query,
    verify_subject_log,
)
from ledger.testchain import CHAIN_ID, Consortium
from ledger.transaction import Access, Attest, ConsentGrant, ConsentRevoke, Transaction
from ledger.verify import TrustAnchor, VerificationError

DAY_MS = 86_400_000
SUBJECT = KeyPair.from_seed(hashlib.sha256(b"subject").digest())
DOCS = tuple(sorted(hashlib.sha256(d).digest() for d in (b"doc a", b"doc b")))

# One step: ("grant", grantee, uses), ("access", member, grant index, doc index),
# ("revoke", grant index), ("wait", days).
Step = tuple[Any, ...]
steps = st.lists(
    st.one_of(
        st.tuples(st.just("grant"), st.sampled_from(["hkbank", "webank"]), st.integers(1, 3)),
        st.tuples(
            st.just("access"),
            st.sampled_from(["hkbank", "webank"]),
            st.integers(0, 4),
            st.integers(0, 1),
        ),
        st.tuples(st.just("revoke"), st.integers(0, 4)),
        st.tuples(st.just("wait"), st.integers(1, 3)),
    ),
    min_size=1,
    max_size=14,
)


class Chain:
    """A ledger with both documents bound to ``SUBJECT``, one block per step."""

    def __init__(self, path: Path) -> None:
        self.cons = Consortium.make()
        self.lg = Ledger.open(path, self.cons.genesis)
        self.time_ms = self.lg.head.time_ms
        self.nonce = 0
        binds = [
            self.cons.tx("szcredit", Attest("credit-report", d, 1, 0, b"", SUBJECT.public_key))
            for d in DOCS
        ]
        assert self.block(binds)

    def tx(self, key: KeyPair, payload: Any) -> Transaction:
        self.nonce += 1
        return Transaction(CHAIN_ID, key.public_key, self.nonce, 900, payload).signed(key)

    def block(self, txs: list[Transaction], advance_ms: int = 1000) -> list[Transaction]:
        """Commit a block of ``txs``; the ones the rule book included."""
        self.time_ms += advance_ms
        ex = self.lg.build(txs, time_ms=self.time_ms, proposer=self.cons.proposer)
        self.lg.commit(ex.block, self.cons.certify(ex.block))
        return list(ex.block.txs)

    def close(self) -> None:
        self.lg.close()


def _log(chain: Chain) -> dict[str, Any]:
    return build_subject_log(Prover(chain.lg), [SUBJECT.public_key])


def _anchor(chain: Chain) -> TrustAnchor:
    return TrustAnchor.from_genesis(chain.cons.genesis)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps)
def test_the_log_is_exactly_what_the_chain_allowed(
    tmp_path_factory: pytest.TempPathFactory, plan: list[Step]
) -> None:
    chain = Chain(tmp_path_factory.mktemp("log") / "db")
    try:
        grants: list[bytes] = []
        allowed: list[tuple[bytes, str, bytes]] = []  # (grant id, member, access tx id)
        for step in plan:
            if step[0] == "grant":
                start = chain.time_ms
                p = ConsentGrant(step[1], DOCS, "loan-application", start, start + DAY_MS, step[2])
                included = chain.block([chain.tx(SUBJECT, p)])
                grants += [t.tx_id for t in included]
            elif step[0] == "access" and grants:
                gid = grants[step[2] % len(grants)]
                key = chain.cons.member_keys[step[1]]
                t = chain.tx(key, Access(gid, DOCS[step[3]], "loan-application"))
                if chain.block([t]):
                    allowed.append((gid, step[1], t.tx_id))
            elif step[0] == "revoke" and grants:
                chain.block([chain.tx(SUBJECT, ConsentRevoke(grants[step[1] % len(grants)]))])
            elif step[0] == "wait":
                chain.block([], advance_ms=step[1] * DAY_MS // 2)
        log = verify_subject_log(_log(chain), _anchor(chain), keys=[SUBJECT.public_key])
        seen = [(e.grant_id, e.member, e.tx_id) for e in log.entries if e.event == "access"]
        assert sorted(seen) == sorted(allowed)
        assert [e.grant_id for e in log.entries if e.event == "grant"] == grants
        assert log.documents[SUBJECT.public_key] == DOCS
        for e in log.entries:
            if e.event == "access":
                # Every allowed access had a live grant at its place (the auditor's check).
                rec = e.grant
                i = next(i for i, a in enumerate(rec.accesses) if a.height == e.height)
                assert grant_live_at(rec, e.height, rec.accesses[i].position, e.time_ms,
                                     recorded=i) is None  # fmt: skip
                assert e.member == rec.grantee
    finally:
        chain.close()


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One grant to hkbank, two accesses under it, then its revocation."""
    chain = Chain(tmp_path_factory.mktemp("story") / "db")
    start = chain.time_ms
    grant = chain.tx(
        SUBJECT, ConsentGrant("hkbank", DOCS, "loan-application", start, start + DAY_MS, 3)
    )
    chain.block([grant])
    bank = chain.cons.member_keys["hkbank"]
    for d in DOCS:
        assert chain.block([chain.tx(bank, Access(grant.tx_id, d, "loan-application"))])
    chain.block([chain.tx(SUBJECT, ConsentRevoke(grant.tx_id))])
    yield chain, _log(chain), grant.tx_id
    chain.close()


def test_a_whole_log_verifies(story: Any) -> None:
    chain, doc, gid = story
    log = verify_subject_log(doc, _anchor(chain), keys=[SUBJECT.public_key])
    assert [(e.event, e.grant_id) for e in log.entries] == [
        ("grant", gid), ("access", gid), ("access", gid), ("revoke", gid)
    ]  # fmt: skip
    assert [e.commitment for e in log.entries if e.event == "access"] == list(DOCS)
    assert log.head.height == chain.lg.height
    # A key with nothing bound: an empty, proven answer.
    other = KeyPair.from_seed(bytes(32)).public_key
    empty = build_subject_log(Prover(chain.lg), [other])
    assert verify_subject_log(empty, _anchor(chain)).entries == ()


def _grant(doc: dict[str, Any]) -> dict[str, Any]:
    g: dict[str, Any] = doc["subjects"][0]["grants"][0]
    return g


def _rewritten_record(doc: dict[str, Any]) -> None:
    """The node serves a grant record with one access removed (and a proof of nothing)."""
    g = _grant(doc)
    rec = GrantRecord.decode(bytes.fromhex(g["record"]))
    g["record"] = rec._replace(accesses=rec.accesses[:1]).encode().hex()
    g["accesses"] = g["accesses"][:1]


TAMPERINGS: dict[str, Callable[[dict[str, Any]], None]] = {
    "an access hidden": lambda d: _grant(d)["accesses"].pop(),
    "the grant hidden": lambda d: d["subjects"][0]["grants"].clear(),
    "the record rewritten": _rewritten_record,
    "accesses swapped": lambda d: _grant(d)["accesses"].reverse(),
    "the grant tx swapped for an access": lambda d: _grant(d).update(
        grant_tx=_grant(d)["accesses"][0]
    ),
    "the revocation hidden": lambda d: _grant(d).update(revoke_tx=None),
    "another chain": lambda d: d.update(chain_id="elsewhere"),
    "the head's certificate dropped": lambda d: d["head"].update(certificate=""),
    "the subject record's proof altered": lambda d: d["subjects"][0].update(
        state_proof=_altered_proof(d)
    ),
}


def _altered_proof(doc: dict[str, Any]) -> Any:
    """The subject record's state proof with one sibling hash changed."""
    proof = copy.deepcopy(doc["subjects"][0]["state_proof"])
    level = next(lv for lv in proof["levels"] if lv["siblings"])
    level["siblings"][0] = "00" * 32
    return proof


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_a_tampered_log_does_not_verify(story: Any, name: str) -> None:
    chain, doc, _ = story
    bad = copy.deepcopy(doc)
    TAMPERINGS[name](bad)
    with pytest.raises(VerificationError):
        verify_subject_log(bad, _anchor(chain), keys=[SUBJECT.public_key])


def test_query_signatures() -> None:
    sig = sign_query(SUBJECT, CHAIN_ID, 1_000)
    assert query_signature_ok(CHAIN_ID, SUBJECT.public_key, 1_000, sig)
    assert not query_signature_ok(CHAIN_ID, SUBJECT.public_key, 1_001, sig)
    assert not query_signature_ok("elsewhere", SUBJECT.public_key, 1_000, sig)
    other = KeyPair.from_seed(bytes(32))
    assert not query_signature_ok(CHAIN_ID, other.public_key, 1_000, sig)
