"""The mempool and the consent rules (docs/CONSENT.md §4): refused at the door with the
rule's code, pending transactions judged through each other, and a committed block
re-checking what it touched (node/mempool.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ledger.chain import Ledger
from ledger.crypto import KeyPair
from ledger.testchain import CHAIN_ID, GENESIS_TIME_MS, Consortium
from ledger.types import ChainParams, Transaction
from node.mempool import AddStatus, Mempool

G = GENESIS_TIME_MS
DAY_MS = 86_400_000
C1, C2, C3 = (bytes([0xD0 + i]) * 32 for i in range(1, 4))
S, T = Consortium.subject("s"), Consortium.subject("t")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Ledger, Consortium]:
    cons = Consortium.make(ChainParams(subject_tx_limit=3))
    lg = Ledger.open(tmp_path / "db", cons.genesis)
    yield lg, cons  # type: ignore[misc]
    lg.close()


def commit(lg: Ledger, cons: Consortium, txs: list[Transaction]) -> None:
    ex = lg.build(txs, time_ms=lg.tip.time_ms + 1000, proposer=cons.proposer)
    assert not ex.rejected, [e.code for _, e in ex.rejected]
    lg.commit(ex.block, cons.certify(ex.block))


def builder_code(lg: Ledger, cons: Consortium, tx: Transaction) -> str:
    ex = lg.build([tx], time_ms=lg.tip.time_ms + 1000, proposer=cons.proposer)
    lg.discard_pending(ex.height)
    assert len(ex.rejected) == 1
    return ex.rejected[0][1].code


def test_each_consent_rule_refuses_at_admission_with_its_code(
    setup: tuple[Ledger, Consortium],
) -> None:
    lg, cons = setup
    commit(lg, cons, [cons.bound_attest(C1, S), cons.bound_attest(C2, S), cons.attest(C3)])
    live = cons.grant(S, (C1,), max_uses=1)
    late = cons.grant(S, (C1,), not_before_ms=G + 10 * DAY_MS, not_after_ms=G + 20 * DAY_MS)
    short = cons.grant(S, (C1,), not_after_ms=G + 2500)
    commit(lg, cons, [live, late, short])  # G + 2000; S has signed 3 of its 3
    revoked = cons.grant(T, (C2,))  # not T's: used below for not_bound
    commit(lg, cons, [cons.access(live.tx_id, C1), cons.bound_attest(b"\x09" * 32, T)])
    t_grant = cons.grant(T, (b"\x09" * 32,))
    commit(lg, cons, [t_grant])
    commit(lg, cons, [cons.revoke_grant(T, t_grant.tx_id)])
    mp = Mempool(CHAIN_ID)
    stranger = KeyPair.from_seed(b"\x42" * 32)
    cases = [
        (cons.access(short.tx_id, C1), "grant_expired"),
        (cons.access(late.tx_id, C1), "grant_not_yet_valid"),
        (cons.access(live.tx_id, C1), "grant_used_up"),
        (cons.access(t_grant.tx_id, b"\x09" * 32), "grant_revoked"),
        (cons.access(late.tx_id, C1, member="webank"), "wrong_grantee"),
        (cons.access(late.tx_id, C2), "not_in_grant"),
        (cons.access(late.tx_id, C1, purpose="account-opening"), "wrong_purpose"),
        (cons.access(b"\x77" * 32, C1), "no_grant"),
        (revoked, "not_bound"),
        (cons.grant(Consortium.subject("nobody"), (C1,)), "unknown_sender"),
        (cons.tx("", cons.access(late.tx_id, C1).payload, key=stranger), "unknown_sender"),
        (cons.grant(cons.member_keys["hkbank"], (C1,)), "not_subject"),
        (replace(cons.grant(T, (b"\x09" * 32,)), signature=bytes(64)), "bad_signature"),
        (cons.grant(S, (C2,)), "rate_limited"),
        (cons.grant(T, (b"\x09" * 32,), purpose="loan"), "unknown_purpose"),
        (cons.grant(T, (b"\x09" * 32,), not_before_ms=G, not_after_ms=G + 10), "bad_window"),
        (cons.revoke_grant(T, late.tx_id), "not_grant_subject"),
        (cons.revoke_grant(T, t_grant.tx_id), "already_revoked"),
        (cons.bound_attest(b"\x0a" * 32, cons.member_keys["webank"]), "subject_is_member_key"),
    ]
    for tx, want in cases:
        r = mp.add(tx, lg.head)
        assert (r.status, r.code) == (AddStatus.REJECTED, want), want
        assert builder_code(lg, cons, tx) == want
    assert len(mp) == 0


def test_a_committed_revocation_drops_the_pending_accesses_it_dooms(
    setup: tuple[Ledger, Consortium],
) -> None:
    lg, cons = setup
    commit(lg, cons, [cons.bound_attest(C1, S), cons.bound_attest(C2, T)])
    g, other = cons.grant(S, (C1,)), cons.grant(T, (C2,))
    commit(lg, cons, [g, other])
    mp = Mempool(CHAIN_ID)
    doomed, keep = cons.access(g.tx_id, C1), cons.access(other.tx_id, C2)
    assert mp.add(doomed, lg.head).status == AddStatus.ADDED
    assert mp.add(keep, lg.head).status == AddStatus.ADDED
    ex = lg.build(
        [cons.revoke_grant(S, g.tx_id)], time_ms=lg.tip.time_ms + 1, proposer=cons.proposer
    )
    lg.commit(ex.block, cons.certify(ex.block))
    assert mp.committed(ex.block, lg.head) == [doomed.tx_id]
    assert mp.tx_ids() == [keep.tx_id]
    assert mp.add(doomed, lg.head).code == "grant_revoked"


def test_pending_transactions_are_judged_through_each_other(
    setup: tuple[Ledger, Consortium],
) -> None:
    lg, cons = setup
    mp = Mempool(CHAIN_ID)
    # A bound ATTEST, a grant for it and an access under that grant, all pending.
    attest = cons.bound_attest(C1, S)
    g = cons.grant(S, (C1,), max_uses=2)
    first, second, third = (cons.access(g.tx_id, C1) for _ in range(3))
    for tx in (attest, g, first, second):
        r = mp.add(tx, lg.head)
        assert r.status == AddStatus.ADDED, r
    r = mp.add(third, lg.head)
    # The head alone has no such grant: the pending ones' own code, not a conflict.
    assert (r.status, r.code) == (AddStatus.REJECTED, "grant_used_up")
    ex = lg.build(mp.take(10, 10**6), time_ms=lg.tip.time_ms + 1, proposer=cons.proposer)
    assert not ex.rejected and len(ex.block.txs) == 4
    lg.commit(ex.block, cons.certify(ex.block))
    assert mp.committed(ex.block, lg.head) == [] and len(mp) == 0
    # One use left, two accesses offered: the second conflicts with the pending first.
    g2 = cons.grant(S, (C1,), max_uses=1)
    commit(lg, cons, [g2])
    a, b = cons.access(g2.tx_id, C1), cons.access(g2.tx_id, C1)
    assert mp.add(a, lg.head).status == AddStatus.ADDED
    r = mp.add(b, lg.head)
    assert (r.status, r.code) == (AddStatus.REJECTED, "conflicts_with_pending")
    assert "grant_used_up" in r.message
    # A pending revocation refuses the accesses offered after it.
    commit(lg, cons, [cons.bound_attest(C2, T)])
    g3 = cons.grant(T, (C2,))
    commit(lg, cons, [g3])
    assert mp.add(cons.revoke_grant(T, g3.tx_id), lg.head).status == AddStatus.ADDED
    r = mp.add(cons.access(g3.tx_id, C2), lg.head)
    assert (r.status, r.code) == (AddStatus.REJECTED, "conflicts_with_pending")


def test_time_passing_dooms_pending_accesses_and_grants(setup: tuple[Ledger, Consortium]) -> None:
    """Block time is the consent rules' "now": a block that touches none of a pending
    transaction's records can still end its grant's window."""
    lg, cons = setup
    commit(lg, cons, [cons.bound_attest(C1, S), cons.bound_attest(C2, T)])  # G + 1000
    short = cons.grant(S, (C1,), not_after_ms=G + 3500)
    commit(lg, cons, [short])  # G + 2000
    mp = Mempool(CHAIN_ID)
    access = cons.access(short.tx_id, C1)
    grant = cons.grant(T, (C2,), not_after_ms=G + 3500)
    assert mp.add(access, lg.head).status == AddStatus.ADDED
    assert mp.add(grant, lg.head).status == AddStatus.ADDED
    for now, left in ((G + 3000, []), (G + 4000, [access.tx_id, grant.tx_id])):
        ex = lg.build([], time_ms=now, proposer=cons.proposer)
        lg.commit(ex.block, cons.certify(ex.block))
        assert sorted(mp.committed(ex.block, lg.head)) == sorted(left)
    assert len(mp) == 0
    r = mp.add(cons.access(short.tx_id, C1), lg.head)
    assert (r.status, r.code) == (AddStatus.REJECTED, "grant_expired")


def test_accesses_committed_from_the_pool_leave_the_rest_judged_right(
    setup: tuple[Ledger, Consortium],
) -> None:
    """A block of the pool's own accesses under a grant needs no re-check of the others
    (``Mempool._settled``); one from elsewhere re-checks them."""
    lg, cons = setup
    commit(lg, cons, [cons.bound_attest(C1, S), cons.bound_attest(C2, T)])
    g, h = cons.grant(S, (C1,), max_uses=3), cons.grant(T, (C2,), max_uses=2)
    commit(lg, cons, [g, h])
    mp = Mempool(CHAIN_ID)
    mine = [cons.access(g.tx_id, C1) for _ in range(3)]
    for tx in mine:
        assert mp.add(tx, lg.head).status == AddStatus.ADDED
    # Another node's pool ordered them otherwise: still all ours.
    ex = lg.build([mine[1], mine[0]], time_ms=lg.tip.time_ms + 1, proposer=cons.proposer)
    lg.commit(ex.block, cons.certify(ex.block))
    assert mp.committed(ex.block, lg.head) == [] and mp.tx_ids() == [mine[2].tx_id]
    r = mp.add(cons.access(g.tx_id, C1), lg.head)
    assert (r.status, r.code) == (AddStatus.REJECTED, "conflicts_with_pending")
    # Two pending under h; a block elsewhere uses one: only one of ours still fits.
    ours = [cons.access(h.tx_id, C2) for _ in range(2)]
    for tx in ours:
        assert mp.add(tx, lg.head).status == AddStatus.ADDED
    ex = lg.build([cons.access(h.tx_id, C2)], time_ms=lg.tip.time_ms + 1, proposer=cons.proposer)
    lg.commit(ex.block, cons.certify(ex.block))
    assert mp.committed(ex.block, lg.head) == [ours[1].tx_id]
    assert mp.tx_ids() == [mine[2].tx_id, ours[0].tx_id]


def test_a_block_of_our_accesses_and_a_revocation_from_elsewhere_dooms_the_rest(
    setup: tuple[Ledger, Consortium],
) -> None:
    """The block holds one of our pending accesses and the grant's revocation (from
    another node's pool): the key is not settled, so our other access is re-checked."""
    lg, cons = setup
    commit(lg, cons, [cons.bound_attest(C1, S)])
    g = cons.grant(S, (C1,), max_uses=3)
    commit(lg, cons, [g])
    mp = Mempool(CHAIN_ID)
    first, second = cons.access(g.tx_id, C1), cons.access(g.tx_id, C1)
    for tx in (first, second):
        assert mp.add(tx, lg.head).status == AddStatus.ADDED
    ex = lg.build(
        [first, cons.revoke_grant(S, g.tx_id)], time_ms=lg.tip.time_ms + 1, proposer=cons.proposer
    )
    assert not ex.rejected
    lg.commit(ex.block, cons.certify(ex.block))
    assert mp.committed(ex.block, lg.head) == [second.tx_id]
    assert mp.tx_ids() == []
