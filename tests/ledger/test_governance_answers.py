"""Governance answers: a proposal that could never pass (or would change nothing) is
refused at submission by the one rule book, with a stable code and the nearest known name
suggested; a decided proposal says why it stands where it does (``proposal_outcome``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from ledger.chain import Ledger
from ledger.records import ProposalRecord, ProposalStatus, proposal_key
from ledger.rules import proposal_outcome
from ledger.testchain import Consortium
from ledger.types import ChainParams, GovAction, GovPropose, GovVote, Role, Transaction
from node.mempool import AddStatus, Mempool


@pytest.fixture
def cons() -> Consortium:
    return Consortium.make(ChainParams(validator_change_delay=2))


@pytest.fixture
def lg(tmp_path: Path, cons: Consortium) -> Ledger:
    ledger = Ledger.open(tmp_path / "db", cons.genesis)
    yield ledger  # type: ignore[misc]
    ledger.close()


def _commit(lg: Ledger, cons: Consortium, txs: list[Transaction]) -> None:
    ex = lg.build(txs, time_ms=lg.tip.time_ms + 1000, proposer=cons.proposer)
    assert not ex.rejected, ex.rejected
    lg.commit(ex.block, cons.certify(ex.block))


def _propose(lg: Ledger, cons: Consortium, action: GovAction, args: tuple[Any, ...]) -> bytes:
    tx = cons.tx("cnix", GovPropose(action, args, lg.height + 5))
    _commit(lg, cons, [tx])
    return tx.tx_id


def _vote(lg: Ledger, cons: Consortium, pid: bytes, voters: list[str], yes: bool) -> None:
    _commit(lg, cons, [cons.tx(v, GovVote(pid, yes)) for v in voters])


def _record(lg: Ledger, pid: bytes) -> ProposalRecord:
    raw = lg.tree.get(proposal_key(pid), lg.height)
    assert raw is not None
    return ProposalRecord.decode(raw)


def _outcome(lg: Ledger, pid: bytes) -> str:
    rec = _record(lg, pid)
    return proposal_outcome(rec, lg.validators_at(rec.decided_height or lg.height + 1))


ISSUER, VERIFIER, AUDITOR = int(Role.ISSUER), int(Role.VERIFIER), int(Role.AUDITOR)


@pytest.mark.parametrize(
    ("action", "args", "code", "message"),
    [
        (GovAction.REMOVE_MEMBER, ("webnak",), "unknown_member", "(did you mean 'webank'?)"),
        (GovAction.GRANT_ROLE, ("szcredt", AUDITOR), "unknown_member", "'szcredit'?"),
        (
            GovAction.GRANT_DOC_TYPE,
            ("hkbnk", "credit-report"),
            "unknown_member",
            "no member 'hkbnk' (did you mean 'hkbank'?)",
        ),
        (
            GovAction.WITHDRAW_DOC_TYPE,
            ("szcredit", "credit-reprot"),
            "unknown_doc_type",
            "no document type 'credit-reprot' on this chain (did you mean 'credit-report'?)",
        ),
        (
            GovAction.SET_PARAM,
            ("max_block_tx", 10),
            "bad_param",
            "(did you mean 'max_block_txs'?)",
        ),
        (
            GovAction.GRANT_ROLE,
            ("szcredit", ISSUER),
            "no_change",
            "szcredit already holds the issuer role; nothing would change",
        ),
        (GovAction.WITHDRAW_ROLE, ("webank", VERIFIER), "no_change", "does not hold the verifier"),
        (
            GovAction.GRANT_DOC_TYPE,
            ("szcredit", "credit-report"),
            "no_change",
            "szcredit is already admitted for 'credit-report'",
        ),
        (
            GovAction.WITHDRAW_DOC_TYPE,
            ("webank", "credit-report"),
            "no_change",
            "webank is not admitted for 'credit-report'",
        ),
        (GovAction.SET_PARAM, ("max_block_txs", 2000), "no_change", "max_block_txs is 2000"),
    ],
)
def test_a_proposal_that_could_never_pass_is_refused_at_submission(
    lg: Ledger,
    cons: Consortium,
    action: GovAction,
    args: tuple[Any, ...],
    code: str,
    message: str,
) -> None:
    tx = cons.tx("cnix", GovPropose(action, args, lg.height + 50))
    r = Mempool(cons.genesis.chain_id).add(tx, lg.head)  # submission
    assert (r.status, r.code) == (AddStatus.REJECTED, code)
    assert r.message is not None and message in r.message and "\n" not in r.message
    ex = lg.build([tx], time_ms=lg.tip.time_ms + 1000, proposer=cons.proposer)  # execution
    assert [e.code for _, e in ex.rejected] == [code]


def test_a_misspelt_parameter_value_is_not_offered_a_name(lg: Ledger, cons: Consortium) -> None:
    tx = cons.tx("cnix", GovPropose(GovAction.SET_PARAM, ("max_block_txs", 0), lg.height + 50))
    r = Mempool(cons.genesis.chain_id).add(tx, lg.head)
    assert r.code == "bad_param" and r.message is not None and "did you mean" not in r.message


def test_rejected_and_expired_proposals_say_why(lg: Ledger, cons: Consortium) -> None:
    voted_down = _propose(lg, cons, GovAction.SET_PARAM, ("max_block_txs", 10))
    assert _outcome(lg, voted_down) == (
        f"open: 1 of 4 voted yes, 3 needed; voting closes after block {lg.height + 4}"
    )
    _vote(lg, cons, voted_down, ["hkbank"], yes=False)
    assert _record(lg, voted_down).status == ProposalStatus.OPEN  # 1 no: 3 yes still possible
    _vote(lg, cons, voted_down, ["webank"], yes=False)
    assert _record(lg, voted_down).status == ProposalStatus.REJECTED
    assert _outcome(lg, voted_down) == (
        f"rejected at block {lg.height}: 2 of 4 voted no; cannot reach 3 yes"
    )

    lapsed = _propose(lg, cons, GovAction.SET_PARAM, ("max_block_txs", 20))
    deadline = _record(lg, lapsed).deadline_height
    _vote(lg, cons, lapsed, ["webank"], yes=True)
    while _record(lg, lapsed).status == ProposalStatus.OPEN:
        _commit(lg, cons, [])
    assert _outcome(lg, lapsed) == (
        f"expired at block {deadline + 1}: 2 of 4 voted yes by the deadline (block "
        f"{deadline}), 3 needed"
    )

    # Two proposals admitting the same member: the second, approved after the first took
    # effect, no longer applies; its outcome says it was approved by votes all the same.
    newco = cons.member_keys["cnix"].from_seed(b"\x31" * 32).public_key
    first = _propose(lg, cons, GovAction.ADD_MEMBER, ("newco", "NewCo", newco))
    second = _propose(lg, cons, GovAction.ADD_MEMBER, ("newco", "NewCo", newco))
    _vote(lg, cons, first, ["webank", "hkbank"], yes=True)
    assert _outcome(lg, first) == f"approved at block {lg.height}: 3 of 4 voted yes (3 needed)"
    _vote(lg, cons, second, ["webank", "hkbank"], yes=True)
    assert _record(lg, second).status == ProposalStatus.REJECTED
    assert _outcome(lg, second) == (
        f"rejected at block {lg.height}: 3 of 4 voted yes, but by then the change no longer "
        "applied (the consortium changed after it was proposed)"
    )


def test_every_rule_code_is_in_the_rpc_docs() -> None:
    root = Path(__file__).parents[2]
    rule_book = ("rules.py", "working_set.py", "consent.py", "consent_records.py")
    codes = {
        c
        for name in rule_book
        for c in re.findall(
            r'(?:RuleError\(|return )\s*"(\w+)",', (root / "ledger" / name).read_text()
        )
    }
    assert {
        "no_change",
        "unknown_member",
        "unknown_doc_type",
        "bad_param",
        "grant_expired",
    } <= codes
    rows = [
        line for line in (root / "docs/RPC.md").read_text().splitlines() if line.startswith("| `")
    ]
    first_cells = "\n".join(line.split(" | ")[0] for line in rows)
    assert [c for c in sorted(codes) if f"`{c}`" not in first_cells] == []
