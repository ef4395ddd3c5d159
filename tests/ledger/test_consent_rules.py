"""Each consent rule of docs/CONSENT.md §4, through the Ledger facade on a real store.

Every refusal is checked twice: a block built from the transaction leaves it out with
the rule's code (``ex.rejected``), and a block that carries it anyway is refused as a
whole by strict execution (what a validator and an auditor run), so none reaches a
block.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ledger.chain import Ledger
from ledger.consent_records import GrantRecord, SubjectRecord, grant_key, subject_key
from ledger.crypto import KeyPair
from ledger.errors import RuleError
from ledger.testchain import GENESIS_TIME_MS, Consortium
from ledger.types import ChainParams, GovAction, GovPropose, GovVote, Transaction

G = GENESIS_TIME_MS
DAY_MS = 86_400_000
C1, C2, C3, C4 = (bytes([0xC0 + i]) * 32 for i in range(1, 5))


@pytest.fixture
def cons() -> Consortium:
    return Consortium.make()


@pytest.fixture
def lg(tmp_path: Path, cons: Consortium) -> Ledger:
    ledger = Ledger.open(tmp_path / "db", cons.genesis)
    yield ledger  # type: ignore[misc]
    ledger.close()


S = Consortium.subject("s")  # bound to C1 and C2
T = Consortium.subject("t")  # bound to C3; C4 is bound to nobody


def commit(lg: Ledger, cons: Consortium, txs: list[Transaction], step_ms: int = 1000) -> int:
    ex = lg.build(txs, time_ms=lg.tip.time_ms + step_ms, proposer=cons.proposer)
    assert not ex.rejected, [(t.kind, e.code) for t, e in ex.rejected]
    lg.commit(ex.block, cons.certify(ex.block))
    return ex.height


def refused(
    lg: Ledger, cons: Consortium, tx: Transaction, before: tuple[Transaction, ...] = ()
) -> RuleError:
    """Check that ``tx`` (after ``before`` in the same block) never reaches a block:
    the builder leaves it out, and strict execution refuses a block holding it, with
    the same code. Returns the builder's error."""
    ex = lg.build([*before, tx], time_ms=lg.tip.time_ms + 1000, proposer=cons.proposer)
    lg.discard_pending(ex.height)
    assert [t.tx_id for t in ex.block.txs] == [t.tx_id for t in before], "not refused"
    (err,) = [e for t, e in ex.rejected if t.tx_id == tx.tx_id]
    h = ex.block.header
    forged = replace(ex.block, txs=(*ex.block.txs, tx), header=replace(h, tx_count=h.tx_count + 1))
    with pytest.raises(RuleError) as strict:
        lg.validate(forged)
    lg.discard_pending(ex.height)
    assert strict.value.code == err.code
    return err


def code(lg: Ledger, cons: Consortium, tx: Transaction, *before: Transaction) -> str:
    return refused(lg, cons, tx, before).code


def bind(lg: Ledger, cons: Consortium) -> None:
    commit(
        lg,
        cons,
        [
            cons.bound_attest(C1, S),
            cons.bound_attest(C2, S),
            cons.bound_attest(C3, T),
            cons.attest(C4),
        ],
    )


def grant_record(lg: Ledger, grant_id: bytes) -> GrantRecord:
    raw = lg.head.read(grant_key(grant_id))
    assert raw is not None
    return GrantRecord.decode(raw)


def test_binding_records_the_commitments_and_refuses_member_keys(
    lg: Ledger, cons: Consortium
) -> None:
    bind(lg, cons)
    raw = lg.head.read(subject_key(S.public_key))
    assert raw is not None and SubjectRecord.decode(raw).commitments == (C1, C2)
    member_as_subject = cons.bound_attest(b"\x01" * 32, cons.member_keys["hkbank"])
    assert code(lg, cons, member_as_subject) == "subject_is_member_key"


def test_a_live_grant_allows_accesses_which_are_recorded(lg: Ledger, cons: Consortium) -> None:
    bind(lg, cons)
    g = cons.grant(S, (C1, C2), max_uses=2)
    commit(lg, cons, [g])
    h = commit(lg, cons, [cons.access(g.tx_id, C1), cons.access(g.tx_id, C2)])
    rec = grant_record(lg, g.tx_id)
    key = cons.member_keys["hkbank"].public_key
    assert [tuple(a) for a in rec.accesses] == [(h, 0, key), (h, 1, key)]
    assert code(lg, cons, cons.access(g.tx_id, C1)) == "grant_used_up"


def test_access_outside_the_window(lg: Ledger, cons: Consortium) -> None:
    bind(lg, cons)
    # Block 2 is at G + 2000; the grant ends at G + 2500, so block 3 (G + 3000) is late.
    expiring = cons.grant(S, (C1,), not_after_ms=G + 2500)
    later = cons.grant(S, (C1,), not_before_ms=G + 10 * DAY_MS, not_after_ms=G + 20 * DAY_MS)
    commit(lg, cons, [expiring, later])
    assert code(lg, cons, cons.access(expiring.tx_id, C1)) == "grant_expired"
    assert code(lg, cons, cons.access(later.tx_id, C1)) == "grant_not_yet_valid"


def test_revoked_grant_refuses_access_later_in_the_same_block_and_after(
    lg: Ledger, cons: Consortium
) -> None:
    bind(lg, cons)
    g = cons.grant(S, (C1,))
    commit(lg, cons, [g])
    revoke = cons.revoke_grant(S, g.tx_id)
    assert code(lg, cons, cons.access(g.tx_id, C1), revoke) == "grant_revoked"
    # An access before the revocation in the same block is recorded.
    h = commit(lg, cons, [cons.access(g.tx_id, C1), revoke])
    rec = grant_record(lg, g.tx_id)
    assert (rec.revoked_height, rec.revoke_position, len(rec.accesses)) == (h, 1, 1)
    assert code(lg, cons, cons.access(g.tx_id, C1)) == "grant_revoked"
    assert code(lg, cons, cons.revoke_grant(S, g.tx_id)) == "already_revoked"


def test_access_must_match_the_grant(lg: Ledger, cons: Consortium) -> None:
    bind(lg, cons)
    g = cons.grant(S, (C1,))
    commit(lg, cons, [g])
    assert code(lg, cons, cons.access(g.tx_id, C1, member="webank")) == "wrong_grantee"
    assert code(lg, cons, cons.access(g.tx_id, C2)) == "not_in_grant"
    assert code(lg, cons, cons.access(g.tx_id, C1, purpose="account-opening")) == "wrong_purpose"
    assert code(lg, cons, cons.access(b"\x77" * 32, C1)) == "no_grant"
    stranger = KeyPair.from_seed(b"\x42" * 32)
    assert code(lg, cons, cons.tx("", cons.access(g.tx_id, C1).payload, key=stranger)) == (
        "unknown_sender"
    )
    forged = replace(cons.access(g.tx_id, C1), signature=bytes(64))
    assert code(lg, cons, forged) == "bad_signature"


def test_who_may_sign_a_grant(lg: Ledger, cons: Consortium) -> None:
    bind(lg, cons)
    assert code(lg, cons, cons.grant(S, (C3,))) == "not_bound"  # T's document
    assert code(lg, cons, cons.grant(S, (C4,))) == "not_bound"  # bound to nobody
    assert code(lg, cons, cons.grant(S, (C1, C3))) == "not_bound"
    assert code(lg, cons, cons.grant(S, (b"\x55" * 32,))) == "not_found"
    unbound = Consortium.subject("never-bound")
    assert code(lg, cons, cons.grant(unbound, (C1,))) == "unknown_sender"
    member = cons.grant(cons.member_keys["szcredit"], (C1,))
    assert code(lg, cons, member) == "not_subject"
    assert code(lg, cons, replace(cons.grant(S, (C1,)), signature=bytes(64))) == "bad_signature"
    g = cons.grant(S, (C1,))
    commit(lg, cons, [g])
    bad_revoke = replace(cons.revoke_grant(S, g.tx_id), signature=bytes(64))
    assert code(lg, cons, bad_revoke) == "bad_signature"
    assert code(lg, cons, cons.revoke_grant(T, g.tx_id)) == "not_grant_subject"
    assert code(lg, cons, cons.revoke_grant(S, b"\x66" * 32)) == "no_grant"


def test_grant_fields(lg: Ledger, cons: Consortium) -> None:
    bind(lg, cons)
    assert code(lg, cons, cons.grant(S, (C1,), grantee="hkbnk")) == "unknown_member"
    err = refused(lg, cons, cons.grant(S, (C1,), purpose="loan-aplication"))
    assert err.code == "unknown_purpose" and "'loan-application'" in err.message
    past = cons.grant(S, (C1,), not_before_ms=G - 10, not_after_ms=G + 500)
    assert code(lg, cons, past) == "bad_window"
    long = cons.grant(S, (C1,), not_before_ms=G, not_after_ms=G + 367 * DAY_MS)
    assert code(lg, cons, long) == "bad_window"
    commit(lg, cons, [cons.grant(S, (C1,), not_before_ms=G, not_after_ms=G + 366 * DAY_MS)])


def test_rate_limit_per_subject_key_and_its_window(tmp_path: Path) -> None:
    cons = Consortium.make(ChainParams(subject_tx_limit=2, subject_window_ms=10_000))
    with Ledger.open(tmp_path / "db", cons.genesis) as lg:
        bind(lg, cons)  # block 1 at G + 1000
        first = cons.grant(S, (C1,))
        commit(lg, cons, [first, cons.revoke_grant(S, first.tx_id)])  # window opens at G + 2000
        assert code(lg, cons, cons.grant(S, (C2,))) == "rate_limited"
        commit(lg, cons, [cons.grant(T, (C3,))])  # another key has its own count
        commit(lg, cons, [], step_ms=7000)  # G + 10000
        err = refused(lg, cons, cons.grant(S, (C2,)))  # at G + 11000: inside the window
        assert err.code == "rate_limited" and "limit 2" in err.message
        commit(lg, cons, [cons.grant(S, (C2,))], step_ms=2000)  # G + 12000: a new window
        raw = lg.head.read(subject_key(S.public_key))
        assert raw is not None
        assert SubjectRecord.decode(raw)[2:] == (lg.head.time_ms, 1)


def test_limits_on_documents_per_key(lg: Ledger, cons: Consortium) -> None:
    many = [cons.bound_attest(bytes([1, i]) + b"\x00" * 30, S) for i in range(64)]
    commit(lg, cons, many)
    assert code(lg, cons, cons.bound_attest(b"\x02" * 32, S)) == "too_many_documents"


def _govern(lg: Ledger, cons: Consortium, action: GovAction, purpose: str) -> None:
    prop = cons.tx("cnix", GovPropose(action, (purpose,), lg.height + 50))
    commit(lg, cons, [prop])
    commit(lg, cons, [cons.tx(v, GovVote(prop.tx_id, True)) for v in ("webank", "hkbank")])


def test_purposes_are_governed(lg: Ledger, cons: Consortium) -> None:
    bind(lg, cons)
    assert code(lg, cons, cons.grant(S, (C1,), purpose="mortgage")) == "unknown_purpose"
    _govern(lg, cons, GovAction.ADD_PURPOSE, "mortgage")
    g = cons.grant(S, (C1,), purpose="mortgage")
    commit(lg, cons, [g])
    again = cons.tx("cnix", GovPropose(GovAction.ADD_PURPOSE, ("mortgage",), lg.height + 50))
    assert code(lg, cons, again) == "no_change"
    missing = cons.tx("cnix", GovPropose(GovAction.REMOVE_PURPOSE, ("mortgag",), lg.height + 50))
    err = refused(lg, cons, missing)
    assert err.code == "unknown_purpose" and "'mortgage'" in err.message
    _govern(lg, cons, GovAction.REMOVE_PURPOSE, "mortgage")
    assert code(lg, cons, cons.grant(S, (C2,), purpose="mortgage")) == "unknown_purpose"
    # Withdrawing a purpose does not void the grants made for it.
    commit(lg, cons, [cons.access(g.tx_id, C1, purpose="mortgage")])
    assert len(grant_record(lg, g.tx_id).accesses) == 1
