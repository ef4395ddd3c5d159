"""The mempool's admission rules, bounds, signature cache and expiry (node/mempool.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ledger.chain import Ledger
from ledger.testchain import CHAIN_ID, Consortium
from ledger.types import Revoke, RevokeReason
from node.mempool import AddStatus, Mempool


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Ledger, Consortium]:
    cons = Consortium.make()
    lg = Ledger.open(tmp_path / "db", cons.genesis)
    yield lg, cons  # type: ignore[misc]
    lg.close()


def test_admission(setup: tuple[Ledger, Consortium]) -> None:
    lg, cons = setup
    mp = Mempool(CHAIN_ID)
    tx = cons.attest(b"\x01" * 32)
    assert mp.add(tx, lg.head).status == AddStatus.ADDED
    assert mp.verified(tx.tx_id)
    assert mp.add(tx, lg.head).status == AddStatus.DUPLICATE
    cases = [
        (cons.attest(b"\x02" * 32, member="webank"), "not_issuer"),
        (cons.attest(b"\x02" * 32, doc_type="trade-invoice"), "doc_type_not_granted"),
        (replace(cons.attest(b"\x03" * 32), signature=bytes(64)), "bad_signature"),
        (replace(cons.attest(b"\x03" * 32), chain_id="elsewhere"), "wrong_chain"),
        (cons.tx("szcredit", Revoke(b"\x09" * 32, RevokeReason.SUPERSEDED)), "not_found"),
    ]
    for bad, code in cases:
        r = mp.add(bad, lg.head)
        assert (r.status, r.code) == (AddStatus.REJECTED, code)
    assert len(mp) == 1


def test_bounded_and_fifo(setup: tuple[Ledger, Consortium]) -> None:
    lg, cons = setup
    mp = Mempool(CHAIN_ID, max_txs=3)
    txs = [cons.attest(bytes([i]) * 32) for i in range(1, 5)]
    assert [mp.add(t, lg.head).status for t in txs] == [AddStatus.ADDED] * 3 + [AddStatus.BUSY]
    assert mp.take(2, 10**6) == txs[:2]
    assert mp.take(10, len(txs[0].encoded) * 2) == txs[:2]  # byte bound
    assert mp.remove([txs[0].tx_id]) == 1
    assert mp.add(txs[3], lg.head).status == AddStatus.ADDED
    assert mp.take(10, 10**6) == [txs[1], txs[2], txs[3]]


def commit_from(lg: Ledger, cons: Consortium, mp: Mempool, n: int = 10) -> list[bytes]:
    """Build a block of the mempool's oldest ``n``, commit it, tell the mempool."""
    ex = lg.build(
        mp.take(n, 10**6), time_ms=lg.tip.time_ms + 1, proposer=cons.proposer, verified=mp.verified
    )
    lg.commit(ex.block, cons.certify(ex.block))
    return mp.committed(ex.block, lg.head)


def test_committed_and_expired_are_dropped(setup: tuple[Ledger, Consortium]) -> None:
    lg, cons = setup
    mp = Mempool(CHAIN_ID)
    short = cons.tx("szcredit", cons.attest(b"\x05" * 32).payload, expiry_height=2)
    keep = cons.attest(b"\x06" * 32)
    mp.add(short, lg.head)
    mp.add(keep, lg.head)
    assert commit_from(lg, cons, mp) == [] and len(mp) == 0
    again = cons.tx("szcredit", cons.attest(b"\x07" * 32).payload, expiry_height=2)
    mp.add(again, lg.head)
    assert commit_from(lg, cons, mp, n=0) == [again.tx_id] and len(mp) == 0
    # committed transactions are refused at the door as replays
    assert mp.add(keep, lg.head).code == "replay"


def test_expiry_scan_drops_each_when_its_height_passes(
    setup: tuple[Ledger, Consortium],
) -> None:
    lg, cons = setup
    mp = Mempool(CHAIN_ID)
    txs = {
        e: cons.tx("szcredit", cons.attest(bytes([e]) * 32).payload, expiry_height=e)
        for e in (4, 6, 9)
    }
    for tx in txs.values():
        assert mp.add(tx, lg.head).status == AddStatus.ADDED
    dropped = []
    while lg.height < 9:
        dropped += commit_from(lg, cons, mp, n=0)
        expect = [txs[e].tx_id for e in (4, 6, 9) if e < lg.height + 1]
        assert dropped == expect and len(mp) == 3 - len(expect)


def test_transactions_of_a_valid_proposal_are_not_verified_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup that validated a block before the gossip of its transactions arrived
    admits that gossip without checking the signatures a second time."""
    from ledger.types import Transaction
    from node.app import LedgerApp

    cons = Consortium.make()
    primary = Ledger.open(tmp_path / "primary", cons.genesis)
    backup = Ledger.open(tmp_path / "backup", cons.genesis)
    try:
        txs = [cons.attest(bytes([i]) * 32) for i in range(1, 4)]
        ex = primary.build(txs, time_ms=primary.tip.time_ms + 1, proposer=cons.proposer)
        mp = Mempool(CHAIN_ID)
        app = LedgerApp(backup, mp.verified, known_tx=mp.get, on_valid=mp.mark_verified)
        assert not any(mp.verified(t.tx_id) for t in txs)
        assert (
            app.validate_proposal(1, ex.block.encode(), backup.head.block_id) == ex.block.block_id
        )
        assert all(mp.verified(t.tx_id) for t in txs)
        other = cons.attest(b"\x09" * 32)
        bad = primary.build([other], time_ms=primary.tip.time_ms + 1, proposer=cons.proposer)

        def no_second_check(self: Transaction) -> bool:
            raise AssertionError("signature checked twice")

        monkeypatch.setattr(Transaction, "signature_ok", no_second_check)
        assert [mp.add(t, backup.head).status for t in txs] == [AddStatus.ADDED] * 3
        # A proposal that does not validate (here: wrong parent) marks nothing.
        assert app.validate_proposal(1, bad.block.encode(), b"\x00" * 32) is None
        assert not mp.verified(other.tx_id)
    finally:
        primary.close()
        backup.close()


def test_every_doomed_transaction_is_refused_with_its_code(
    setup: tuple[Ledger, Consortium],
) -> None:
    from ledger.types import GovAction, GovPropose, GovVote, Role

    lg, cons = setup
    mp = Mempool(CHAIN_ID)
    c1, c2, c3 = b"\x11" * 32, b"\x12" * 32, b"\x13" * 32
    revoke = lambda c, m="szcredit": cons.tx(m, Revoke(c, RevokeReason.SUPERSEDED))  # noqa: E731
    prop = cons.tx("cnix", GovPropose(GovAction.SET_PARAM, ("max_block_txs", 10), 50))
    for tx in (cons.attest(c1), cons.attest(c2), prop):
        assert mp.add(tx, lg.head).status == AddStatus.ADDED
    commit_from(lg, cons, mp)
    assert mp.add(revoke(c1), lg.head).status == AddStatus.ADDED
    commit_from(lg, cons, mp)
    pid = prop.tx_id
    cases = [
        (revoke(c1), "already_revoked"),
        (revoke(c3), "not_found"),
        (revoke(c2, "webank"), "not_original_issuer"),
        (cons.attest(c2), "already_attested"),
        (cons.tx("cnix", GovVote(pid, True)), "already_voted"),
        (cons.tx("hkbank", GovVote(b"\x99" * 32, True)), "no_open_proposal"),
        (cons.tx("cnix", GovPropose(GovAction.REMOVE_MEMBER, ("nobody",), 50)), "unknown_member"),
        (
            cons.tx("cnix", GovPropose(GovAction.WITHDRAW_DOC_TYPE, ("szcredit", "x"), 50)),
            "unknown_doc_type",
        ),
        (
            cons.tx("cnix", GovPropose(GovAction.GRANT_ROLE, ("webank", int(Role.VALIDATOR)), 50)),
            "use_validator_actions",
        ),
    ]
    for bad, code in cases:
        r = mp.add(bad, lg.head)
        assert (r.status, r.code) == (AddStatus.REJECTED, code), (code, r)
    # Conflicts with what is pending: refused at the door, the first one stays.
    pending = [revoke(c2), cons.attest(c3), cons.tx("hkbank", GovVote(pid, True))]
    for tx in pending:
        assert mp.add(tx, lg.head).status == AddStatus.ADDED
    for bad in (revoke(c2), cons.attest(c3), cons.tx("hkbank", GovVote(pid, False))):
        r = mp.add(bad, lg.head)
        assert (r.status, r.code) == (AddStatus.REJECTED, "conflicts_with_pending"), r
        assert pending[0].tx_id.hex()[:16] in r.message or "pending" in r.message
    assert mp.tx_ids() == [t.tx_id for t in pending]


def test_a_proposal_past_its_deadline_refuses_votes(setup: tuple[Ledger, Consortium]) -> None:
    from ledger.types import GovAction, GovPropose, GovVote

    lg, cons = setup
    mp = Mempool(CHAIN_ID)
    prop = cons.tx("cnix", GovPropose(GovAction.SET_PARAM, ("max_block_txs", 10), 2))
    assert mp.add(prop, lg.head).status == AddStatus.ADDED
    commit_from(lg, cons, mp)  # height 1
    late = cons.tx("hkbank", GovVote(prop.tx_id, True))
    assert mp.add(late, lg.head).status == AddStatus.ADDED  # for height 2: still open
    assert commit_from(lg, cons, mp, n=0) == [late.tx_id]  # height 2 passed: doomed, dropped
    assert mp.add(late, lg.head).code == "proposal_expired"


def test_a_commit_elsewhere_drops_the_conflicting_pending_one(
    setup: tuple[Ledger, Consortium],
) -> None:
    """Two nodes admitted two attestations of one commitment; the other's commits."""
    lg, cons = setup
    mp = Mempool(CHAIN_ID)
    ours, theirs = cons.attest(b"\x21" * 32), cons.attest(b"\x21" * 32, "bank-statement")
    keep = cons.attest(b"\x22" * 32)
    assert mp.add(ours, lg.head).status == AddStatus.ADDED
    assert mp.add(keep, lg.head).status == AddStatus.ADDED
    ex = lg.build([theirs], time_ms=lg.tip.time_ms + 1, proposer=cons.proposer)
    lg.commit(ex.block, cons.certify(ex.block))
    assert mp.committed(ex.block, lg.head) == [ours.tx_id]
    assert mp.tx_ids() == [keep.tx_id]


def test_blocks_the_mempool_was_not_told_of_drop_what_they_committed(
    setup: tuple[Ledger, Consortium],
) -> None:
    """A head that moved by blocks ``committed`` never saw (a store recovery, a jump):
    the next call re-checks everything pending on it, and what those blocks committed
    goes."""
    lg, cons = setup
    mp = Mempool(CHAIN_ID)
    done, pending = cons.attest(b"\x31" * 32), cons.attest(b"\x32" * 32)
    assert mp.add(done, lg.head).status == AddStatus.ADDED
    assert mp.add(pending, lg.head).status == AddStatus.ADDED
    for txs in ([done], []):  # two blocks, neither reported to the mempool
        ex = lg.build(txs, time_ms=lg.tip.time_ms + 1, proposer=cons.proposer)
        lg.commit(ex.block, cons.certify(ex.block))
    later = cons.attest(b"\x33" * 32)
    assert mp.add(later, lg.head).status == AddStatus.ADDED
    assert mp.tx_ids() == [pending.tx_id, later.tx_id]
    assert mp.add(done, lg.head).code == "replay"


def test_admission_judges_consent_windows_at_the_new_heads_time(
    setup: tuple[Ledger, Consortium],
) -> None:
    """After a commit the mempool rebases on the new head, and "now" for a grant's window
    is that head's time (docs/CONSENT.md §4), not the time of the head it was built on."""
    from ledger.crypto import KeyPair
    from ledger.transaction import Access, Attest, ConsentGrant

    lg, cons = setup
    mp = Mempool(CHAIN_ID)
    subject = KeyPair.from_seed(bytes(range(32)))
    doc = b"\x0b" * 32
    mp.add(
        cons.tx("szcredit", Attest("credit-report", doc, 1, 0, b"", subject.public_key)), lg.head
    )
    commit_from(lg, cons, mp)
    start = lg.head.time_ms + 10_000
    grant = cons.tx(
        "subject",
        ConsentGrant("hkbank", (doc,), "loan-application", start, start + 86_400_000, 1),
        key=subject,
    )
    assert mp.add(grant, lg.head).status == AddStatus.ADDED
    commit_from(lg, cons, mp)
    access = cons.tx("hkbank", Access(grant.tx_id, doc, "loan-application"))
    assert mp.add(access, lg.head).code == "grant_not_yet_valid"
    # A block past the window's start: the mempool's rebased state must be at its time.
    ex = lg.build([], time_ms=start + 1, proposer=cons.proposer, verified=mp.verified)
    lg.commit(ex.block, cons.certify(ex.block))
    mp.committed(ex.block, lg.head)
    assert mp.add(access, lg.head).status == AddStatus.ADDED
