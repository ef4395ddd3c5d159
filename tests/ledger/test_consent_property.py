"""A property of the consent rules (issue 18): for any sequence of grants, revocations,
accesses and block-time advances run through the real ledger, the accesses the subject's
log shows (every grant of its key, their recorded ``accesses``) are exactly the ACCESS
transactions the ledger included, and an independent model of liveness written here
(not ``grant_live_at``) allows every included access and refuses every refused one.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.chain import Ledger
from ledger.consent_records import GrantRecord, SubjectRecord, grant_key, subject_key
from ledger.testchain import Consortium
from ledger.transaction import Access, ConsentGrant, ConsentRevoke
from ledger.types import ChainParams, Transaction

SUBJECTS = [Consortium.subject(f"p{i}") for i in range(3)]
DOCS = [bytes([0xE0 + i]) * 32 for i in range(3)]  # DOCS[i] is bound to SUBJECTS[i]
MEMBERS = ["cnix", "hkbank", "szcredit", "webank"]
PURPOSES = ["account-opening", "loan-application"]

grant_op = st.tuples(
    st.just("grant"),
    st.integers(0, 2),  # subject
    st.sampled_from(MEMBERS),  # grantee
    st.sampled_from(PURPOSES),
    # Whole seconds, like the block-time advances, so accesses land on the window's ends.
    st.integers(-3, 1).map(lambda s: s * 1000),  # not_before, from the block's time
    st.integers(1, 6).map(lambda s: s * 1000),  # window length
    st.integers(1, 2),  # max_uses
)
# Which grant: the k-th most recently offered (recent ones, so that uses run out).
revoke_op = st.tuples(st.just("revoke"), st.integers(0, 3))
# None: the grant's own grantee / purpose (mostly, so that accesses get through).
access_op = st.tuples(
    st.just("access"),
    st.integers(0, 3),  # which grant
    st.one_of(st.none(), st.none(), st.sampled_from(MEMBERS)),
    st.one_of(st.none(), st.none(), st.sampled_from(PURPOSES)),
)
block = st.tuples(
    st.integers(1, 3).map(lambda s: s * 1000),  # block time advance, ms
    st.lists(st.one_of(grant_op, revoke_op, access_op, access_op), max_size=6),
)


@dataclass
class ModelGrant:
    """What the model knows of one offered grant."""

    subject: int
    tx: Transaction
    included: bool = False
    revoked: bool = False
    uses: int = 0
    recorded: list[tuple[int, int, bytes]] = field(default_factory=list)


def model_allows(g: ModelGrant | None, tx: Transaction, member_key: bytes, now: int) -> bool:
    """Liveness, as docs/CONSENT.md §4 states it, from scratch."""
    if g is None or not g.included or g.revoked:
        return False
    p = g.tx.payload
    a = tx.payload
    assert isinstance(p, ConsentGrant) and isinstance(a, Access)
    return (
        member_key == _keys[p.grantee]
        and a.commitment in p.commitments
        and a.purpose == p.purpose
        and p.not_before_ms <= now <= p.not_after_ms
        and g.uses < p.max_uses
    )


_cons = Consortium.make(ChainParams(subject_tx_limit=1000))
_keys = {m: k.public_key for m, k in _cons.member_keys.items()}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(block, min_size=1, max_size=6))
def test_the_subject_log_is_exactly_the_allowed_accesses(
    blocks: list[tuple[int, list[tuple[Any, ...]]]],
) -> None:
    cons = _cons
    with tempfile.TemporaryDirectory() as d, Ledger.open(Path(d) / "db", cons.genesis) as lg:
        setup = [cons.bound_attest(c, s) for c, s in zip(DOCS, SUBJECTS, strict=True)]
        ex = lg.build(setup, time_ms=lg.tip.time_ms + 1000, proposer=cons.proposer)
        lg.commit(ex.block, cons.certify(ex.block))
        offered: list[ModelGrant] = []
        by_id: dict[bytes, ModelGrant] = {}
        included_accesses: set[tuple[int, int]] = set()
        for advance, ops in blocks:
            now = lg.tip.time_ms + advance
            txs: list[Transaction] = []
            for op in ops:
                if op[0] == "grant":
                    _, s, grantee, purpose, start, length, uses = op
                    tx = cons.grant(
                        SUBJECTS[s],
                        (DOCS[s],),
                        grantee=grantee,
                        purpose=purpose,
                        not_before_ms=now + start,
                        not_after_ms=now + start + length,
                        max_uses=uses,
                    )
                    offered.append(ModelGrant(s, tx))
                    by_id[tx.tx_id] = offered[-1]
                elif not offered:
                    continue
                elif op[0] == "revoke":
                    g = offered[-1 - op[1] % len(offered)]
                    tx = cons.revoke_grant(SUBJECTS[g.subject], g.tx.tx_id)
                else:
                    g = offered[-1 - op[1] % len(offered)]
                    gp = g.tx.payload
                    assert isinstance(gp, ConsentGrant)
                    member, purpose = op[2] or gp.grantee, op[3] or gp.purpose
                    tx = cons.access(g.tx.tx_id, DOCS[g.subject], member, purpose)
                txs.append(tx)
            ex = lg.build(txs, time_ms=now, proposer=cons.proposer)
            assert ex.state.time_ms == now
            included = {t.tx_id: i for i, t in enumerate(ex.block.txs)}
            # The model runs the offered transactions in order, as the block builder does.
            for tx in txs:
                p = tx.payload
                if isinstance(p, ConsentGrant):
                    allowed = p.not_after_ms > now
                    if allowed:
                        by_id[tx.tx_id].included = True
                elif isinstance(p, ConsentRevoke):
                    g = by_id[p.grant_id]
                    allowed = g.included and not g.revoked
                    if allowed:
                        g.revoked = True
                else:
                    assert isinstance(p, Access)
                    g = by_id[p.grant_id]
                    allowed = model_allows(g, tx, tx.sender, now)
                    if allowed:
                        g.uses += 1
                        g.recorded.append((ex.height, included[tx.tx_id], tx.sender))
                        included_accesses.add((ex.height, included[tx.tx_id]))
                assert (tx.tx_id in included) == allowed, (type(p).__name__, ex.rejected)
            lg.commit(ex.block, cons.certify(ex.block))
        # What each subject's log shows: every grant its key signed, and their accesses.
        seen: set[tuple[int, int]] = set()
        for s, key in enumerate(SUBJECTS):
            raw = lg.head.read(subject_key(key.public_key))
            assert raw is not None
            grants = SubjectRecord.decode(raw).grants
            assert set(grants) == {g.tx.tx_id for g in offered if g.subject == s and g.included}
            for gid in grants:
                raw_grant = lg.head.read(grant_key(gid))
                assert raw_grant is not None
                rec = GrantRecord.decode(raw_grant)
                assert [tuple(a) for a in rec.accesses] == by_id[gid].recorded
                for height, position, member_key in rec.accesses:
                    body = lg.store.get_block(height)
                    assert body is not None
                    tx = body.txs[position]
                    assert isinstance(tx.payload, Access) and tx.payload.grant_id == gid
                    assert tx.sender == member_key
                    seen.add((height, position))
        assert seen == included_accesses
