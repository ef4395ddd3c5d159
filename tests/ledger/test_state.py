"""The rules (ledger.state) through the Ledger facade (ledger.chain), on a real store."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from ledger.chain import Ledger
from ledger.errors import RuleError, StoreError
from ledger.records import ProposalStatus, Status, attestation_status
from ledger.testchain import CHAIN_ID, GENESIS_TIME_MS, Consortium
from ledger.types import (
    GovAction,
    GovPropose,
    GovVote,
    Revoke,
    RevokeReason,
    Role,
    Transaction,
)

C32 = [bytes([i]) * 32 for i in range(1, 40)]


@pytest.fixture
def cons() -> Consortium:
    return Consortium.make()


@pytest.fixture
def ledger(tmp_path: Path, cons: Consortium) -> Ledger:
    lg = Ledger.open(tmp_path / "db", cons.genesis)
    yield lg  # type: ignore[misc]
    lg.close()


def commit(
    lg: Ledger, cons: Consortium, txs: list[Transaction], strict: bool = True
) -> tuple[int, list[tuple[Transaction, RuleError]]]:
    ex = lg.build(txs, time_ms=lg.tip.time_ms + 1000, proposer=cons.proposer)
    if strict:
        assert not ex.rejected, ex.rejected
    lg.commit(ex.block, cons.certify(ex.block))
    return ex.height, ex.rejected


def rejected_code(lg: Ledger, cons: Consortium, tx: Transaction) -> str:
    ex = lg.build([tx], time_ms=lg.tip.time_ms + 1000, proposer=cons.proposer)
    lg.discard_pending(ex.height)
    assert len(ex.rejected) == 1, "transaction was accepted"
    return ex.rejected[0][1].code


def test_genesis_block(ledger: Ledger, cons: Consortium) -> None:
    assert ledger.height == 0
    header = ledger.store.get_header(0)
    assert header is not None and header.state_root == ledger.head.state_root
    assert ledger.validators_at(1) == cons.genesis.validators
    assert set(ledger.head.members) == {"cnix", "hkbank", "szcredit", "webank"}


def test_attest_then_verify_status(ledger: Ledger, cons: Consortium) -> None:
    expiring = cons.attest(C32[1], "bank-statement", valid_until_ms=GENESIS_TIME_MS + 5)
    h, _ = commit(ledger, cons, [cons.attest(C32[0]), expiring])
    rec = ledger.head.attestation(C32[0])
    assert rec is not None and rec.issuer == "szcredit" and rec.height == h
    assert attestation_status(rec, ledger.head.time_ms) == Status.VALID
    rec2 = ledger.head.attestation(C32[1])
    assert attestation_status(rec2, ledger.head.time_ms) == Status.EXPIRED
    assert attestation_status(ledger.head.attestation(C32[2]), 0) == Status.NOT_FOUND
    loc = ledger.store.tx_location(ledger.store.get_block(h).txs[0].tx_id)  # type: ignore[union-attr]
    assert loc == (h, 0)


def test_attestation_rules(ledger: Ledger, cons: Consortium) -> None:
    commit(ledger, cons, [cons.attest(C32[0])])
    assert rejected_code(ledger, cons, cons.attest(C32[0])) == "already_attested"
    assert rejected_code(ledger, cons, cons.attest(C32[3], member="webank")) == "not_issuer"
    assert (
        rejected_code(ledger, cons, cons.attest(C32[3], doc_type="trade-invoice"))
        == "doc_type_not_granted"
    )
    stranger = cons.member_keys["cnix"].from_seed(b"\x42" * 32)
    assert (
        rejected_code(ledger, cons, cons.tx("szcredit", cons.attest(C32[3]).payload, key=stranger))
        == "unknown_sender"
    )
    good = cons.attest(C32[4])
    forged = replace(good, signature=bytes(64))
    assert rejected_code(ledger, cons, forged) == "bad_signature"
    assert (
        rejected_code(ledger, cons, replace(cons.attest(C32[5]), chain_id="other")) == "wrong_chain"
    )
    old = cons.tx("szcredit", cons.attest(C32[6]).payload, expiry_height=1)
    assert rejected_code(ledger, cons, old) == "expired"
    far = cons.tx("szcredit", cons.attest(C32[6]).payload, expiry_height=10**6)
    assert rejected_code(ledger, cons, far) == "expiry_too_far"


def test_replay_is_refused_in_a_later_block_and_within_a_block(
    ledger: Ledger, cons: Consortium
) -> None:
    tx = cons.tx("szcredit", Revoke(C32[0], RevokeReason.SUPERSEDED))
    commit(ledger, cons, [cons.attest(C32[0])])
    commit(ledger, cons, [tx])
    assert rejected_code(ledger, cons, tx) == "replay"
    t2 = cons.attest(C32[7])
    ex = ledger.build([t2, t2], time_ms=ledger.tip.time_ms + 1, proposer=cons.proposer)
    assert ex.block.header.tx_count == 1 and ex.rejected[0][1].code == "replay"


def test_revocation(ledger: Ledger, cons: Consortium) -> None:
    commit(ledger, cons, [cons.attest(C32[0])])
    not_issuer = cons.tx("webank", Revoke(C32[0], RevokeReason.FRAUD_SUSPECTED))
    assert rejected_code(ledger, cons, not_issuer) == "not_original_issuer"
    assert (
        rejected_code(ledger, cons, cons.tx("szcredit", Revoke(C32[9], RevokeReason.SUPERSEDED)))
        == "not_found"
    )
    h, _ = commit(ledger, cons, [cons.tx("szcredit", Revoke(C32[0], RevokeReason.DATA_CHANGED))])
    rec = ledger.head.attestation(C32[0])
    assert rec is not None and rec.revoked_height == h
    assert rec.revoke_reason == RevokeReason.DATA_CHANGED
    assert attestation_status(rec, ledger.head.time_ms) == Status.REVOKED
    again = cons.tx("szcredit", Revoke(C32[0], RevokeReason.DATA_CHANGED))
    assert rejected_code(ledger, cons, again) == "already_revoked"


def test_strict_validation_refuses_bad_blocks(
    ledger: Ledger, cons: Consortium, tmp_path: Path
) -> None:
    ex = ledger.build(
        [cons.attest(C32[0])], time_ms=ledger.tip.time_ms + 10, proposer=cons.proposer
    )
    other = Ledger.open(tmp_path / "other", cons.genesis)
    try:
        assert other.validate(ex.block).state.state_root == ex.state.state_root
        other.discard_pending(1)
        h = ex.block.header
        for name, value in [
            ("state_root", b"\x00" * 32),
            ("tx_root", b"\x00" * 32),
            ("history_root", b"\x00" * 32),
            ("validator_set_hash", b"\x00" * 32),
            ("next_validator_set_hash", b"\x00" * 32),
        ]:
            bad = replace(ex.block, header=replace(h, **{name: value}))
            with pytest.raises(RuleError, match=f"bad_{name}"):
                other.validate(bad)
        with pytest.raises(RuleError, match="bad_time"):
            other.validate(replace(ex.block, header=replace(h, time_ms=GENESIS_TIME_MS)))
        with pytest.raises(RuleError, match="bad_proposer"):
            other.validate(
                replace(ex.block, header=replace(h, proposer=cons.member_keys["cnix"].public_key))
            )
        with pytest.raises(RuleError, match="bad_parent"):
            other.validate(replace(ex.block, header=replace(h, prev_block_id=b"\x01" * 32)))
        # A block carrying an invalid transaction is refused as a whole.
        bad_tx = cons.attest(C32[1], member="webank")
        bad = replace(ex.block, txs=(*ex.block.txs, bad_tx), header=replace(h, tx_count=2))
        with pytest.raises(RuleError, match="not_issuer"):
            other.validate(bad)
    finally:
        other.close()


def test_commit_needs_a_quorum_certificate(ledger: Ledger, cons: Consortium) -> None:
    ex = ledger.build(
        [cons.attest(C32[0])], time_ms=ledger.tip.time_ms + 10, proposer=cons.proposer
    )
    with pytest.raises(RuleError, match="bad_certificate"):
        ledger.commit(ex.block, cons.certify(ex.block, signers=["cnix", "webank"]))
    assert ledger.height == 0
    ledger.commit(ex.block, cons.certify(ex.block, signers=["cnix", "webank", "hkbank"]))
    assert ledger.height == 1


def test_pipelined_execution_on_pending_blocks(ledger: Ledger, cons: Consortium) -> None:
    e1 = ledger.build(
        [cons.attest(C32[0])], time_ms=ledger.tip.time_ms + 10, proposer=cons.proposer
    )
    e2 = ledger.build(
        [cons.attest(C32[1]), cons.attest(C32[0])],
        time_ms=e1.state.time_ms + 10,
        proposer=cons.proposer,
    )
    assert e2.height == 2 and e2.block.header.tx_count == 1
    assert e2.rejected[0][1].code == "already_attested"  # seen through the pending block
    e3 = ledger.build([], time_ms=e2.state.time_ms + 10, proposer=cons.proposer)
    for ex in (e1, e2, e3):
        ledger.commit(ex.block, cons.certify(ex.block))
    assert ledger.height == 3 and not ledger.pending
    assert ledger.head.attestation(C32[1]) is not None


def test_replay_check_stays_short_under_continuous_pipelining(
    ledger: Ledger, cons: Consortium
) -> None:
    """Each block executed while its parent is still pending (what a pipelining replica
    does all day): the replay check must see every committed and pending id, and carry
    only the uncommitted blocks' ids — not a chain back to the first block."""
    import hashlib

    from ledger.state import SeenTxs

    sent: list[bytes] = []
    window: list = []
    first = None
    for i in range(40):
        tx = cons.attest(hashlib.sha256(b"pipelined %d" % i).digest())
        first = first or tx
        ex = ledger.build([tx], time_ms=ledger.tip.time_ms + 10, proposer=cons.proposer)
        assert ex.block.header.tx_count == 1
        sent.append(tx.tx_id)
        window.append(ex)
        if len(window) == 3:  # three blocks in flight, the oldest commits
            done = window.pop(0)
            ledger.commit(done.block, cons.certify(done.block))
        seen = ledger.tip.tx_seen
        assert isinstance(seen, SeenTxs)
        assert all(seen(t) for t in sent)
        assert not seen(hashlib.sha256(b"never").digest())
        assert len(seen.recent) <= 2, [h for h, _ in seen.recent]
    again = ledger.build([first], time_ms=ledger.tip.time_ms + 10, proposer=cons.proposer)
    assert again.block.header.tx_count == 0 and again.rejected[0][1].code == "replay"


def test_reopen_restores_the_head(tmp_path: Path, cons: Consortium) -> None:
    lg = Ledger.open(tmp_path / "db", cons.genesis)
    commit(lg, cons, [cons.attest(C32[0])])
    commit(
        lg,
        cons,
        [cons.tx("cnix", GovPropose(GovAction.ADD_MEMBER, ("bochk", "BOCHK", b"\x09" * 32), 100))],
    )
    head = lg.head
    lg.close()
    lg2 = Ledger.open(tmp_path / "db", cons.genesis, create=False)
    try:
        assert lg2.height == head.height and lg2.head.state_root == head.state_root
        assert lg2.head.history.root() == head.history.root()
        assert dict(lg2.head.open_proposals) == dict(head.open_proposals)
        commit(lg2, cons, [cons.attest(C32[1])])
    finally:
        lg2.close()
    other = Consortium.make(n_validators=4)
    other.genesis = replace(other.genesis, chain_id="another-chain")
    with pytest.raises(StoreError):
        Ledger.open(tmp_path / "db", other.genesis, create=False)


def test_two_ledgers_agree(tmp_path: Path, cons: Consortium) -> None:
    a = Ledger.open(tmp_path / "a", cons.genesis)
    b = Ledger.open(tmp_path / "b", cons.genesis)
    try:
        for i in range(5):
            ex = a.build([cons.attest(C32[i])], time_ms=a.tip.time_ms + 5, proposer=cons.proposer)
            cert = cons.certify(ex.block)
            a.commit(ex.block, cert)
            b.commit(ex.block, cert)  # b re-executes from scratch
            assert a.head.state_root == b.head.state_root
    finally:
        a.close()
        b.close()


def _propose(
    lg: Ledger, cons: Consortium, proposer: str, action: GovAction, args: tuple[object, ...]
) -> bytes:
    tx = cons.tx(proposer, GovPropose(action, args, lg.height + 50))
    commit(lg, cons, [tx])
    return tx.tx_id


def _vote(
    lg: Ledger, cons: Consortium, pid: bytes, voters: list[str], approve: bool = True
) -> None:
    commit(lg, cons, [cons.tx(v, GovVote(pid, approve)) for v in voters])


def test_governance_admits_a_new_issuer(ledger: Ledger, cons: Consortium) -> None:
    newkey = cons.member_keys["cnix"].from_seed(b"\x77" * 32)
    pid = _propose(
        ledger, cons, "cnix", GovAction.ADD_MEMBER, ("bochk", "BOC HK", newkey.public_key)
    )
    assert ledger.head.open_proposals[pid].yes == ("cnix",)
    _vote(ledger, cons, pid, ["webank"])
    assert "bochk" not in ledger.head.members  # 2 of 4: below the quorum of 3
    assert rejected_code(ledger, cons, cons.tx("webank", GovVote(pid, True))) == "already_voted"
    _vote(ledger, cons, pid, ["hkbank"])
    assert "bochk" in ledger.head.members and pid not in ledger.head.open_proposals
    for action, arg in [
        (GovAction.GRANT_ROLE, int(Role.ISSUER)),
        (GovAction.GRANT_DOC_TYPE, "trade-invoice"),
    ]:
        p = _propose(ledger, cons, "webank", action, ("bochk", arg))
        _vote(ledger, cons, p, ["cnix", "szcredit"])
    m = ledger.head.members["bochk"]
    assert m.has_role(Role.ISSUER) and m.doc_types == ("trade-invoice",)
    assert "trade-invoice" in ledger.head.chain.doc_types
    payload = cons.attest(C32[0], "trade-invoice").payload
    commit(ledger, cons, [cons.tx("bochk", payload, key=newkey)])
    assert ledger.head.attestation(C32[0]).issuer == "bochk"  # type: ignore[union-attr]


def test_governance_rules(ledger: Ledger, cons: Consortium) -> None:
    # szcredit is a validator here; make a non-validator propose by using a new member key.
    bad = cons.tx("szcredit", GovPropose(GovAction.SET_PARAM, ("max_block_txs", 10), 0))
    assert rejected_code(ledger, cons, bad) == "bad_deadline"
    pid = _propose(ledger, cons, "cnix", GovAction.SET_PARAM, ("max_block_txs", 10))
    _vote(ledger, cons, pid, ["webank", "hkbank"], approve=False)
    assert ledger.state_at(ledger.height).open_proposals.get(pid) is None
    raw = ledger.tree.get(__import__("ledger.records").records.proposal_key(pid), ledger.height)
    from ledger.records import ProposalRecord

    assert ProposalRecord.decode(raw).status == ProposalStatus.REJECTED  # type: ignore[arg-type]
    assert (
        rejected_code(ledger, cons, cons.tx("szcredit", GovVote(pid, True))) == "no_open_proposal"
    )
    pid2 = _propose(ledger, cons, "cnix", GovAction.SET_PARAM, ("max_block_txs", 10))
    _vote(ledger, cons, pid2, ["webank", "hkbank"])
    assert ledger.head.chain.params.max_block_txs == 10


def test_validator_change_takes_effect_at_a_later_height(ledger: Ledger, cons: Consortium) -> None:
    newkey = cons.node_keys["cnix"].from_seed(b"\x55" * 32)
    pid = _propose(ledger, cons, "cnix", GovAction.REMOVE_VALIDATOR, ("webank",))
    _vote(ledger, cons, pid, ["hkbank", "szcredit"])
    decided = ledger.height
    params = cons.genesis.params
    eff = decided + max(params.validator_change_delay, params.pipeline_window + 1)
    assert len(ledger.validators_at(eff - 1)) == 4
    assert len(ledger.validators_at(eff)) == 3
    header = ledger.store.get_header(decided)
    assert header is not None and header.next_validator_set_hash == header.validator_set_hash
    # Commit empty blocks up to the change; certificates must follow the set in force.
    while ledger.height < eff:
        ex = ledger.build([], time_ms=ledger.tip.time_ms + 1, proposer=cons.proposer)
        vs = ledger.validators_at(ex.height)
        ledger.commit(ex.block, cons.certify(ex.block, validators=vs))
    h = ledger.store.get_header(eff - 1)
    assert h is not None and h.next_validator_set_hash != h.validator_set_hash
    assert ledger.store.get_header(eff).validator_set_hash == ledger.validators_at(eff).hash  # type: ignore[union-attr]
    assert ledger.validators_at(eff - 1) == cons.genesis.validators  # history stays answerable
    _ = newkey


def test_chain_id_guard(ledger: Ledger) -> None:
    assert ledger.chain_id == CHAIN_ID


def test_strict_execution_refuses_a_second_attestation(ledger: Ledger, cons: Consortium) -> None:
    """Validators check 'never attested' inside the state-tree batch (must_be_new)."""
    from ledger.state import execute

    commit(ledger, cons, [cons.attest(C32[0])])
    again = cons.attest(C32[0])
    with pytest.raises(RuleError, match="already_attested"):
        execute(
            ledger.head,
            [cons.attest(C32[1]), again],
            time_ms=ledger.head.time_ms + 1,
            proposer=cons.proposer,
            strict=True,
        )
    # twice within one block is caught too, in both modes
    dup = [cons.attest(C32[2]), cons.attest(C32[2])]
    with pytest.raises(RuleError, match="already_attested"):
        execute(
            ledger.head, dup, time_ms=ledger.head.time_ms + 1, proposer=cons.proposer, strict=True
        )
    ok = execute(
        ledger.head,
        [cons.attest(C32[3])],
        time_ms=ledger.head.time_ms + 1,
        proposer=cons.proposer,
        strict=True,
    )
    assert ok.block.header.tx_count == 1


def test_builder_drops_reattest_found_by_the_batch_and_keeps_the_rest(
    ledger: Ledger, cons: Consortium
) -> None:
    # The builder defers "not attested yet" to the state-tree batch; a re-ATTEST found
    # there is dropped and the block re-executed: what remains must be exactly the block
    # built without it, and a REVOKE in the same block must hit the original record.
    h0, _ = commit(ledger, cons, [cons.attest(C32[0])])
    again, fresh = cons.attest(C32[0]), cons.attest(C32[5])
    revoke = cons.tx("szcredit", Revoke(C32[0], RevokeReason.SUPERSEDED))
    ex = ledger.build(
        [again, revoke, fresh], time_ms=ledger.tip.time_ms + 10, proposer=cons.proposer
    )
    assert [tx.tx_id for tx in ex.block.txs] == [revoke.tx_id, fresh.tx_id]
    assert [(tx.tx_id, err.code) for tx, err in ex.rejected] == [(again.tx_id, "already_attested")]
    ledger.discard_pending(ex.height)
    clean = ledger.build([revoke, fresh], time_ms=ex.state.time_ms, proposer=cons.proposer)
    assert clean.block.header.state_root == ex.block.header.state_root
    ledger.commit(clean.block, cons.certify(clean.block))
    rec = ledger.head.attestation(C32[0])
    assert rec is not None and rec.height == h0 and rec.revoked_height == ledger.height
