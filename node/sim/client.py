"""The random client: valid, invalid, duplicate and conflicting transactions.

Signed for real (Ed25519, ``ledger.testchain.Consortium`` keys) so the ledger's own rules
decide. Each submission goes to one node (chosen by the caller); ``kind`` names what
the client meant, for traces.
"""

from __future__ import annotations

import random
from dataclasses import replace

from ledger.crypto import KeyPair
from ledger.testchain import CHAIN_ID, GENESIS_TIME_MS, Consortium
from ledger.types import (
    Attest,
    GovAction,
    GovPropose,
    GovVote,
    Revoke,
    RevokeReason,
    Role,
    Transaction,
)


class RandomClient:
    def __init__(self, consortium: Consortium, rng: random.Random) -> None:
        self.c = consortium
        self.rng = rng
        self.sent: list[Transaction] = []
        self.commitments: list[bytes] = []
        self.proposals: list[bytes] = []
        self.outsider = KeyPair.from_seed(bytes(32))
        self.kinds: dict[str, int] = {}

    def _tx(
        self, member: str, payload: object, expiry: int, key: KeyPair | None = None
    ) -> Transaction:
        self.c.nonce += 1
        k = key or self.c.member_keys[member]
        return Transaction(CHAIN_ID, k.public_key, self.c.nonce, expiry, payload).signed(k)  # type: ignore[arg-type]

    def next_batch(
        self, height: int, attested: set[bytes] | None = None
    ) -> tuple[str, list[Transaction]]:
        """One submission: a kind and one or a few transactions."""
        rng = self.rng
        expiry = height + 200
        roll = rng.random()
        if roll < 0.35 or not self.sent:
            kind, txs = "attest", [self._attest(expiry)]
        elif roll < 0.45:
            kind, txs = "duplicate", [rng.choice(self.sent)]
        elif roll < 0.55 and self.commitments:
            # The same document attested twice: at most one may commit.
            doc = rng.choice(self.commitments)
            kind = "conflict"
            txs = [self._tx("szcredit", Attest("credit-report", doc, GENESIS_TIME_MS), expiry)]
        elif roll < 0.62 and attested:
            # Only documents already attested on the receiving node's committed head: a
            # REVOKE racing its own ATTEST is refused or dropped as not_found, which is
            # the mempool doing its job, not a liveness failure (checker (b)).
            doc = rng.choice(sorted(attested))
            kind = "revoke"
            txs = [self._tx("szcredit", Revoke(doc, RevokeReason.ISSUED_IN_ERROR), expiry)]
        elif roll < 0.70:
            kind = "invalid"
            txs = [self._invalid(expiry)]
        elif roll < 0.76:
            kind = "propose"
            member = rng.choice(["cnix", "hkbank", "webank", "szcredit"])
            p = GovPropose(GovAction.GRANT_ROLE, ("webank", int(Role.AUDITOR)), height + 60)
            tx = self._tx(member, p, expiry)
            self.proposals.append(tx.tx_id)
            txs = [tx]
        elif roll < 0.84 and self.proposals:
            kind = "vote"
            member = rng.choice(["cnix", "hkbank", "webank", "szcredit"])
            txs = [
                self._tx(member, GovVote(rng.choice(self.proposals), rng.random() < 0.8), expiry)
            ]
        else:
            kind = "burst"
            txs = [self._attest(expiry) for _ in range(rng.randint(2, 6))]
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        self.sent.extend(txs)
        if len(self.sent) > 400:
            del self.sent[:200]
        return kind, txs

    def remove_validator(self, member: str, voters: list[str], height: int) -> list[Transaction]:
        """Governance retires ``member``'s validator: ``voters[0]`` proposes
        REMOVE_VALIDATOR, the others vote yes (one client batch, in that order)."""
        expiry = height + 200
        p = GovPropose(GovAction.REMOVE_VALIDATOR, (member,), height + 60)
        propose = self._tx(voters[0], p, expiry)
        votes = [self._tx(v, GovVote(propose.tx_id, True), expiry) for v in voters[1:]]
        return [propose, *votes]

    def _attest(self, expiry: int) -> Transaction:
        doc = self.rng.randbytes(32)
        self.commitments.append(doc)
        return self._tx("szcredit", Attest("credit-report", doc, GENESIS_TIME_MS), expiry)

    def _invalid(self, expiry: int) -> Transaction:
        doc = self.rng.randbytes(32)
        which = self.rng.randrange(5)
        if which == 0:  # a damaged signature
            tx = self._tx("szcredit", Attest("credit-report", doc, GENESIS_TIME_MS), expiry)
            return replace(tx, signature=bytes(64))
        if which == 1:  # not a member
            return self._tx(
                "x", Attest("credit-report", doc, GENESIS_TIME_MS), expiry, self.outsider
            )
        if which == 2:  # a member without the issuer role
            return self._tx("hkbank", Attest("credit-report", doc, GENESIS_TIME_MS), expiry)
        if which == 3:  # expired
            return self._tx("szcredit", Attest("credit-report", doc, GENESIS_TIME_MS), 1)
        return self._tx("szcredit", Revoke(doc, RevokeReason.ISSUED_IN_ERROR), expiry)
