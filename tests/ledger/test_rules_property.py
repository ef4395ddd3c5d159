"""Admission and execution agree: a hypothesis state machine over the rule book.

Random sequences of every transaction kind (valid, invalid, duplicate, conflicting,
expired, by non-members, non-issuers and non-validators) are offered to a mempool over a
real ledger; blocks are cut from the mempool with the real builder and committed. The
checker (here, outside the code under test) holds after every step:
- the pending set, executed in order as one block on the committed head, loses nothing
  (the mempool never holds a transaction the ledger would refuse);
- a refused transaction would fail if executed after the pending set;
- the builder refuses nothing the mempool hands it, and after a commit nothing that can
  no longer be included remains (the first invariant, checked again).
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from ledger.chain import Ledger
from ledger.crypto import KeyPair
from ledger.state import execute
from ledger.testchain import CHAIN_ID, GENESIS_TIME_MS, Consortium
from ledger.types import (
    Attest,
    ChainParams,
    GovAction,
    GovPropose,
    GovVote,
    Payload,
    Revoke,
    RevokeReason,
    Role,
    Transaction,
)
from node.mempool import AddStatus, Mempool


def _key(tag: str) -> KeyPair:
    return KeyPair.from_seed(hashlib.sha256(tag.encode()).digest())


COMMITMENTS = [hashlib.sha256(bytes([i])).digest() for i in range(6)]
SENDERS = ["cnix", "hkbank", "szcredit", "webank", "stranger"]
NEW_MEMBER, NEW_KEY, NEW_NODE = "newco", _key("member/newco"), _key("node/newco")
ROTATED = _key("member/webank/rotated")
ACTIONS: list[tuple[GovAction, tuple[Any, ...]]] = [
    (GovAction.ADD_MEMBER, (NEW_MEMBER, "NEWCO", NEW_KEY.public_key)),
    (GovAction.ADD_MEMBER, ("cnix", "again", NEW_KEY.public_key)),  # member_exists
    (GovAction.REMOVE_MEMBER, (NEW_MEMBER,)),
    (GovAction.REMOVE_MEMBER, ("nobody",)),  # unknown_member
    (GovAction.REMOVE_MEMBER, ("webank",)),  # is_validator
    (GovAction.GRANT_ROLE, ("webank", int(Role.ISSUER))),
    (GovAction.GRANT_ROLE, ("webank", int(Role.VALIDATOR))),  # use_validator_actions
    (GovAction.WITHDRAW_ROLE, ("szcredit", int(Role.ISSUER))),
    (GovAction.GRANT_DOC_TYPE, ("webank", "credit-report")),
    (GovAction.GRANT_DOC_TYPE, (NEW_MEMBER, "payslip")),
    (GovAction.WITHDRAW_DOC_TYPE, ("szcredit", "credit-report")),
    (GovAction.WITHDRAW_DOC_TYPE, ("szcredit", "no-such-type")),  # unknown_doc_type
    (GovAction.ROTATE_KEY, ("webank", ROTATED.public_key)),
    (GovAction.ADD_VALIDATOR, (NEW_MEMBER, NEW_NODE.public_key)),
    (GovAction.REMOVE_VALIDATOR, ("hkbank",)),
    (GovAction.SET_PARAM, ("tx_ttl_heights", 40)),
    (GovAction.SET_PARAM, ("no_such_param", 1)),  # bad_param
    (GovAction.REVOKE_ATTESTATION, (COMMITMENTS[0], int(RevokeReason.FRAUD_SUSPECTED))),
]


class RuleBook(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory(prefix="rules_prop_")
        self.cons = Consortium.make(ChainParams(tx_ttl_heights=30, validator_change_delay=2))
        self.cons.node_keys[NEW_MEMBER] = NEW_NODE
        self.keys = dict(self.cons.member_keys)
        self.keys.update(stranger=_key("member/stranger"), newco=NEW_KEY)
        self.lg = Ledger.open(Path(self.dir.name) / "db", self.cons.genesis)
        self.mp = Mempool(CHAIN_ID)
        self.sent: list[Transaction] = []
        self.proposals: list[bytes] = [b"\x42" * 32]  # one id no proposal has
        self.admitted = self.refused = 0

    def teardown(self) -> None:
        self.lg.close()
        self.dir.cleanup()

    # -- offering transactions -------------------------------------------------
    def _offer(self, sender: str, payload: Payload, expiry: int, rotated: bool = False) -> None:
        key = ROTATED if rotated else self.keys[sender]
        self.cons.nonce += 1
        tx = Transaction(CHAIN_ID, key.public_key, self.cons.nonce, expiry, payload).signed(key)
        self._submit(tx)

    def _submit(self, tx: Transaction) -> None:
        head = self.lg.head
        pending = self.mp.take(10**6, 1 << 40)
        r = self.mp.add(tx, head, from_peer=bool(self.cons.nonce % 2))
        if r.status == AddStatus.ADDED:
            self.admitted += 1
            self.sent.append(tx)
            if isinstance(tx.payload, GovPropose):
                self.proposals.append(tx.tx_id)
        elif r.status == AddStatus.REJECTED:
            self.refused += 1
            assert r.code and r.message and "\n" not in r.message
            # Refused at the door => the ledger would refuse it after the pending set.
            ex = self._execute([*pending, tx])
            assert [t.tx_id for t, _ in ex.rejected] == [tx.tx_id], (r, ex.rejected)
        else:
            assert r.status == AddStatus.DUPLICATE and tx.tx_id in self.mp

    def _expiry(self, which: int) -> int:
        h = self.lg.head.height
        ttl = self.lg.head.chain.params.tx_ttl_heights
        return [h + 5, h + 2, h + 1, h, h + ttl + 2][which]

    expiry = st.sampled_from([0, 0, 0, 1, 2, 3, 4])

    @rule(
        sender=st.sampled_from(SENDERS + ["szcredit"] * 3),
        c=st.integers(0, len(COMMITMENTS) - 1),
        doc=st.sampled_from(["credit-report", "bank-statement", "payslip"]),
        e=expiry,
    )
    def attest(self, sender: str, c: int, doc: str, e: int) -> None:
        self._offer(sender, Attest(doc, COMMITMENTS[c], GENESIS_TIME_MS, 0), self._expiry(e))

    @rule(
        sender=st.sampled_from(SENDERS + ["szcredit"] * 3),
        c=st.integers(0, len(COMMITMENTS) - 1),
        e=expiry,
    )
    def revoke(self, sender: str, c: int, e: int) -> None:
        self._offer(sender, Revoke(COMMITMENTS[c], RevokeReason.SUPERSEDED), self._expiry(e))

    @rule(
        sender=st.sampled_from(["cnix", "hkbank", "webank", "stranger", NEW_MEMBER]),
        action=st.sampled_from(ACTIONS),
        deadline=st.sampled_from([4, 12, 30, 1, -1]),
        e=st.sampled_from([0, 0, 0, 0, 3]),
    )
    def propose(self, sender: str, action: tuple[Any, ...], deadline: int, e: int) -> None:
        act, args = action
        h = self.lg.head.height + 1
        self._offer(sender, GovPropose(act, args, max(0, h + deadline)), self._expiry(e))

    @rule(
        sender=st.sampled_from(SENDERS + [NEW_MEMBER]),
        which=st.integers(0, 10**6),
        approve=st.booleans(),
        e=expiry,
        rotated=st.booleans(),
    )
    def vote(self, sender: str, which: int, approve: bool, e: int, rotated: bool) -> None:
        pid = self.proposals[which % len(self.proposals)]
        self._offer(sender, GovVote(pid, approve), self._expiry(e), rotated and sender == "webank")

    @rule(voter=st.sampled_from(["cnix", "hkbank", "szcredit", "webank", NEW_MEMBER]))
    def vote_yes_on_the_latest(self, voter: str) -> None:
        """Most proposals would expire unvoted otherwise: this one gets them decided."""
        self._offer(voter, GovVote(self.proposals[-1], True), self._expiry(0))

    @precondition(lambda self: bool(self.sent))
    @rule(which=st.integers(0, 10**6))
    def resubmit(self, which: int) -> None:
        self._submit(self.sent[which % len(self.sent)])

    # -- cutting blocks ----------------------------------------------------------
    def _execute(self, txs: list[Transaction]) -> Any:
        head = self.lg.head
        return execute(
            head,
            txs,
            time_ms=head.time_ms + 1,
            proposer=self.cons.proposer,
            strict=False,
            verified=self.mp.verified,
        )

    @rule(n=st.sampled_from([0, 1, 3, 50]))
    def commit(self, n: int) -> None:
        head = self.lg.head
        taken = self.mp.take(n, 1 << 40)
        proposer = self.cons.node_keys[head.validators_at(head.height + 1).validators[0].member_id]
        ex = self.lg.build(
            taken,
            time_ms=head.time_ms + 1,
            proposer=proposer.public_key,
            verified=self.mp.verified,
        )
        assert not ex.rejected, ex.rejected  # the builder refuses nothing the pool holds
        cert = self.cons.certify(ex.block, validators=head.validators_at(ex.height))
        self.lg.commit(ex.block, cert)
        gone = self.mp.committed(ex.block, self.lg.head)
        assert not set(gone) & set(ex.block.tx_ids)
        assert not any(tid in self.mp for tid in gone)

    @invariant()
    def pending_set_is_a_valid_block(self) -> None:
        pending = self.mp.take(10**6, 1 << 40)
        ex = self._execute(pending)
        assert not ex.rejected, [(t.payload, e.code) for t, e in ex.rejected]
        assert len(pending) == len(self.mp)


RuleBook.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRuleBook = RuleBook.TestCase
