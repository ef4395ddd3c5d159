"""The rule book: every transaction rule, once, for block execution and mempool admission.

``apply_tx(ws, tx, verified)`` checks one transaction against a ``WorkingSet``
(``ledger.working_set``: a ledger snapshot seen through the writes of the transactions
applied before it) and, if the
transaction is valid, applies its effects to that working set; if not it raises
``RuleError`` with a stable ``code`` and writes nothing. Block execution
(``ledger.state.execute``) runs it over the block's transactions; the mempool
(``node.mempool``) runs it over the committed head plus the transactions it holds, so a
transaction the ledger would refuse never waits there (CometBFT's CheckTx + recheck).

Rules (docs/PROOFS.md §9 states them for auditors; codes are listed in docs/RPC.md):
- Stateless first (``check_basic``): the chain id; ``height <= expiry_height <= height +
  tx_ttl_heights``. Sizes and field forms are the decoder's (``Transaction.decode``).
- Then state: the id was never committed (nor applied earlier in the working set); the
  sender key is the *current* key of a member; the signature verifies.
- ATTEST: issuer role and document type granted; the commitment has no record.
  REVOKE: a record exists, is not revoked, and the sender is its issuer.
- GOV_PROPOSE: a validator member; ``height <= deadline <= height + 100000``; the action
  is applicable now and would change something (``check_action``: its member, role,
  document type, key, parameter or commitment exist and make sense; a mistyped name gets
  the nearest known one suggested). ACTIVATE_VERSION: a version above the latest
  approved, at a height past the pipeline (``change_delay``) and after any activation
  already scheduled. GOV_VOTE: an open proposal whose deadline has not
  passed, by a validator member that has not voted.
- CONSENT_GRANT, CONSENT_REVOKE (signed by a bound subject key, rate-limited) and
  ACCESS (by the grantee, under a live grant): ``ledger.consent``, docs/CONSENT.md §4.
  A bound ATTEST (``subject`` set) also binds the commitment to that key.
- A proposal executes when yes votes reach the quorum; an action no longer applicable
  by then is recorded as rejected. ``proposal_outcome`` says why a proposal stands
  where it does, by the same arithmetic.
Every check runs before any write, so a refused transaction leaves the working set as
it was. Pure: no I/O beyond the snapshot's reads, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ledger.consent import (
    apply_purpose_action,
    apply_subject_tx,
    bind_subject,
    check_purpose_action,
    record_access,
)
from ledger.consent_records import grant_key, subject_key
from ledger.errors import RuleError, did_you_mean
from ledger.protocol import MAX_VERSION
from ledger.records import (
    AttestationRecord,
    ProposalRecord,
    ProposalStatus,
    attestation_key,
)
from ledger.transaction import SUBJECT_KINDS, Access, ConsentGrant, ConsentRevoke
from ledger.types import (
    Attest,
    GovAction,
    GovPropose,
    GovVote,
    Member,
    Revoke,
    Role,
    Transaction,
    Validator,
    ValidatorSet,
)
from ledger.working_set import WorkingSet

MAX_PROPOSAL_LIFETIME = 100_000


# ---------------------------------------------------------------------------
# Transactions
# ---------------------------------------------------------------------------


def check_basic(tx: Transaction, chain_id: str, height: int, ttl: int) -> None:
    """The stateless rules of a transaction to be included at ``height``."""
    if tx.chain_id != chain_id:
        raise RuleError("wrong_chain", f"transaction is for chain {tx.chain_id!r}")
    if tx.expiry_height < height:
        raise RuleError("expired", f"transaction expired at height {tx.expiry_height}")
    if tx.expiry_height > height + ttl:
        raise RuleError("expiry_too_far", f"expiry_height may be at most {ttl} blocks ahead")


def apply_tx(
    ws: WorkingSet,
    tx: Transaction,
    verified: Callable[[bytes], bool] | None,
    *,
    check_replay: bool = True,
) -> None:
    """Check ``tx`` against ``ws`` and apply it, or raise ``RuleError`` writing nothing.

    ``verified(tx_id)`` may vouch for the signature (a cache of checks already made).
    ``check_replay=False`` skips the committed-id look-up: only for re-checking a
    transaction whose id was known uncommitted at an earlier head, when the blocks
    since removed their own ids (the mempool's recheck)."""
    check_basic(tx, ws.parent.chain_id, ws.height, ws.chain.params.tx_ttl_heights)
    tx_id = tx.tx_id
    if tx_id in ws.tx_ids or (check_replay and committed_before(ws, tx)):
        raise RuleError("replay", "transaction already committed")
    mid = ws.key_index.get(tx.sender)
    if tx.kind in SUBJECT_KINDS:
        if mid is not None:
            raise RuleError(
                "not_subject", "consent is granted and revoked with the subject key, not a member's"
            )
        apply_subject_tx(ws, tx, verified)
        ws.tx_ids.add(tx_id)
        return
    if mid is None:
        raise RuleError("unknown_sender", "the signing key is not a current member key")
    if not ((verified is not None and verified(tx_id)) or tx.signature_ok()):
        raise RuleError("bad_signature", "transaction signature does not verify")
    member = ws.members[mid]
    ws.signer = (mid, tx.sender)
    p = tx.payload
    if isinstance(p, Attest):
        _attest(ws, member, p)
    elif isinstance(p, Revoke):
        _revoke(ws, member, p.commitment, int(p.reason), by_governance=False)
    elif isinstance(p, GovPropose):
        _propose(ws, member, p, tx_id)
    elif isinstance(p, GovVote):
        _vote(ws, member, p)
    elif isinstance(p, Access):
        record_access(ws, member, tx.sender, p)
    else:  # pragma: no cover - decoding admits no other kind
        raise AssertionError(tx.kind)
    ws.tx_ids.add(tx_id)


def committed_before(ws: WorkingSet, tx: Transaction) -> bool:
    """True if ``tx``'s id was committed at or below ``ws.parent`` (the replay rule).

    An ATTEST can only have been committed if its commitment has a record, and records
    are never deleted (revocation keeps them). So for an ATTEST of a commitment with no
    record -- nearly every one -- the attestation read, which ``_attest`` needs anyway,
    answers without the tx index: one LevelDB read fewer per transaction at admission.
    At block execution (``deferred_exists``) the state-tree update's ``must_be_new``
    check answers for the whole block instead, and ``ledger.state`` tells a replay
    from another attestation with ``ws.parent.tx_seen`` only when that check fails."""
    p = tx.payload
    if isinstance(p, Attest):
        if ws.deferred_exists and p.commitment not in ws.attestations:
            return False
        if ws.attestation(p.commitment) is None:
            return False
    return bool(ws.parent.tx_seen(tx.tx_id))


def _attest(ws: WorkingSet, member: Member, p: Attest) -> None:
    if not member.has_role(Role.ISSUER):
        raise RuleError("not_issuer", f"{member.member_id} does not hold the issuer role")
    if p.doc_type not in member.doc_types:
        raise RuleError(
            "doc_type_not_granted", f"{member.member_id} is not admitted to issue {p.doc_type!r}"
        )
    key = None
    if p.subject:
        bind_subject(ws, p.subject, p.commitment)
    if ws.deferred_exists and p.commitment not in ws.attestations:
        # Existence at the parent is checked by the batch update (deferred_exists).
        key = attestation_key(p.commitment)
        ws.must_be_new[key] = p.commitment
    elif ws.attestation(p.commitment) is not None:
        raise RuleError("already_attested", "this commitment is already attested")
    ws.put_attestation(
        p.commitment,
        AttestationRecord(
            member.member_id, member.key, p.doc_type, p.valid_until_ms, ws.height, ws.position
        )
        if not p.subject
        else AttestationRecord(
            member.member_id,
            member.key,
            p.doc_type,
            p.valid_until_ms,
            ws.height,
            ws.position,
            subject=p.subject,
        ),
        key,
    )


def _check_revoke(ws: WorkingSet, member: Member | None, commitment: bytes) -> AttestationRecord:
    rec = ws.attestation(commitment)
    if rec is None:
        raise RuleError("not_found", "no attestation of this commitment")
    if rec.revoked_height:
        raise RuleError("already_revoked", f"revoked at height {rec.revoked_height}")
    if member is not None and rec.issuer != member.member_id:
        raise RuleError("not_original_issuer", "only the original issuer may revoke")
    return rec


def _revoke(
    ws: WorkingSet, member: Member | None, commitment: bytes, reason: int, *, by_governance: bool
) -> None:
    """Mark revoked; ``revoke_position`` and ``revoker`` are the REVOKE (or the GOV_VOTE or
    GOV_PROPOSE that decided a governance revocation): the transaction being applied."""
    rec = _check_revoke(ws, None if by_governance else member, commitment)
    ws.put_attestation(commitment, rec.revoked(ws.height, reason, ws.position, *ws.signer))


# ---------------------------------------------------------------------------
# Governance
# ---------------------------------------------------------------------------


def _is_voter(ws: WorkingSet, member_id: str) -> bool:
    return any(v.member_id == member_id for v in ws.voters().validators)


def _propose(ws: WorkingSet, member: Member, p: GovPropose, tx_id: bytes) -> None:
    if not _is_voter(ws, member.member_id):
        raise RuleError("not_validator", "only validator members may propose")
    if not ws.height <= p.deadline_height <= ws.height + MAX_PROPOSAL_LIFETIME:
        raise RuleError("bad_deadline", "deadline must be within the proposal lifetime")
    # A proposal that could not execute now is refused: otherwise it would only be
    # found out at tally time, after every validator had been asked to vote on it.
    check_action(ws, p.action, p.args)
    rec = ProposalRecord(
        int(p.action), p.args, member.member_id, p.deadline_height, (member.member_id,), ()
    )
    _tally(ws, tx_id, rec)


def _vote(ws: WorkingSet, member: Member, p: GovVote) -> None:
    rec = ws.proposals.get(p.proposal_id)
    if rec is None:
        raise RuleError(
            "no_open_proposal", "no open proposal with this id (unknown, decided or expired)"
        )
    if rec.deadline_height < ws.height:
        raise RuleError("proposal_expired", f"the proposal's deadline {rec.deadline_height} passed")
    if not _is_voter(ws, member.member_id):
        raise RuleError("not_validator", "only validator members may vote")
    if member.member_id in rec.yes or member.member_id in rec.no:
        raise RuleError("already_voted", f"{member.member_id} already voted on this proposal")
    if p.approve:
        rec = replace(rec, yes=tuple(sorted((*rec.yes, member.member_id))))
    else:
        rec = replace(rec, no=tuple(sorted((*rec.no, member.member_id))))
    _tally(ws, p.proposal_id, rec)


def _votes(rec: ProposalRecord, voters: ValidatorSet) -> tuple[int, int]:
    """(yes, no) counted among ``voters`` only: a member whose validator left no longer
    counts."""
    ids = {v.member_id for v in voters.validators}
    return len(ids.intersection(rec.yes)), len(ids.intersection(rec.no))


def _tally(ws: WorkingSet, pid: bytes, rec: ProposalRecord) -> None:
    voters = ws.voters()
    yes, no = _votes(rec, voters)
    if yes >= voters.quorum:
        try:
            check_action(ws, GovAction(rec.action), rec.args)
            _apply_action(ws, GovAction(rec.action), rec.args)
            status = ProposalStatus.APPROVED
        except RuleError:
            # Approved but no longer applicable (e.g. the member was added meanwhile):
            # recorded as rejected so the outcome is visible and deterministic.
            status = ProposalStatus.REJECTED
        rec = replace(rec, status=int(status), decided_height=ws.height)
    elif no > voters.n - voters.quorum:
        rec = replace(rec, status=int(ProposalStatus.REJECTED), decided_height=ws.height)
    ws.put_proposal(pid, rec)


def proposal_outcome(rec: ProposalRecord, voters: ValidatorSet) -> str:
    """Why a proposal stands where it does, in one line; ``voters``: the validator set
    in force at its ``decided_height`` (at the next height while it is open), which is
    the set ``_tally`` and ``expire_proposals`` counted with."""
    yes, no = _votes(rec, voters)
    n, quorum = voters.n, voters.quorum
    at = f" at block {rec.decided_height}"
    status = ProposalStatus(rec.status)
    if status == ProposalStatus.OPEN:
        return (
            f"open: {yes} of {n} voted yes, {quorum} needed; voting closes after "
            f"block {rec.deadline_height}"
        )
    if status == ProposalStatus.APPROVED:
        return f"approved{at}: {yes} of {n} voted yes ({quorum} needed)"
    if status == ProposalStatus.EXPIRED:
        return (
            f"expired{at}: {yes} of {n} voted yes by the deadline (block "
            f"{rec.deadline_height}), {quorum} needed"
        )
    if yes >= quorum:
        return (
            f"rejected{at}: {yes} of {n} voted yes, but by then the change no longer "
            "applied (the consortium changed after it was proposed)"
        )
    return f"rejected{at}: {no} of {n} voted no; cannot reach {quorum} yes"


def expire_proposals(ws: WorkingSet) -> None:
    """End of block: open proposals whose deadline passed are closed as expired."""
    for pid in sorted(ws.proposals):
        rec = ws.proposals[pid]
        if rec.deadline_height < ws.height:
            ws.put_proposal(
                pid, replace(rec, status=int(ProposalStatus.EXPIRED), decided_height=ws.height)
            )


def check_action(ws: WorkingSet, action: GovAction, args: tuple[Any, ...]) -> None:
    """``RuleError`` unless ``action`` could execute on ``ws`` now and change something;
    writes nothing. A name that does not exist gets the nearest known one suggested."""
    if action == GovAction.ADD_MEMBER:
        mid, _name, key = args
        if mid in ws.members:
            raise RuleError("member_exists", f"{mid} is already a member")
        if key in ws.key_index:
            raise RuleError("key_in_use", "that key belongs to another member")
    elif action == GovAction.REMOVE_MEMBER:
        (mid,) = args
        ws.member(mid)
        if any(v.member_id == mid for v in ws.chain.latest_validators().validators):
            raise RuleError("is_validator", "remove the member's validator first")
    elif action in (GovAction.GRANT_ROLE, GovAction.WITHDRAW_ROLE):
        mid, role = args
        if role == Role.VALIDATOR:
            raise RuleError("use_validator_actions", "use ADD_VALIDATOR / REMOVE_VALIDATOR")
        held = ws.member(mid).has_role(Role(role))
        if held == (action == GovAction.GRANT_ROLE):
            name = Role(role).name.lower()
            state = "already holds" if held else "does not hold"
            raise RuleError("no_change", f"{mid} {state} the {name} role; nothing would change")
    elif action in (GovAction.GRANT_DOC_TYPE, GovAction.WITHDRAW_DOC_TYPE):
        mid, doc = args
        m = ws.member(mid)
        # Granting may name a new type (it joins the chain's list); withdrawing may not.
        if action == GovAction.WITHDRAW_DOC_TYPE and doc not in ws.chain.doc_types:
            hint = did_you_mean(doc, ws.chain.doc_types)
            raise RuleError("unknown_doc_type", f"no document type {doc!r} on this chain{hint}")
        held = doc in m.doc_types
        if held == (action == GovAction.GRANT_DOC_TYPE):
            state = "is already admitted" if held else "is not admitted"
            raise RuleError("no_change", f"{mid} {state} for {doc!r}; nothing would change")
    elif action == GovAction.ROTATE_KEY:
        mid, key = args
        ws.member(mid)
        if key in ws.key_index:
            raise RuleError("key_in_use", "that key belongs to a member already")
    elif action == GovAction.ADD_VALIDATOR:
        mid, node_key = args
        ws.member(mid)
        latest = ws.chain.latest_validators()
        if any(v.member_id == mid or v.node_key == node_key for v in latest.validators):
            raise RuleError("already_validator", f"{mid} or that node key is a validator")
    elif action == GovAction.REMOVE_VALIDATOR:
        (mid,) = args
        ws.member(mid)
        latest = ws.chain.latest_validators()
        rest = [v for v in latest.validators if v.member_id != mid]
        if len(rest) == len(latest.validators):
            raise RuleError("not_validator", f"{mid} is not a validator")
        if not rest:
            raise RuleError("last_validator", "cannot remove the last validator")
    elif action == GovAction.SET_PARAM:
        name, value = args
        params = ws.chain.params
        try:
            params.with_param(name, value)
        except ValueError as exc:
            hint = "" if name in params.NAMES else did_you_mean(name, params.NAMES)
            raise RuleError("bad_param", f"{exc}{hint}") from None
        if getattr(params, name) == value:
            raise RuleError("no_change", f"{name} is {value} already; nothing would change")
    elif action == GovAction.REVOKE_ATTESTATION:
        commitment, _reason = args
        _check_revoke(ws, None, commitment)
    elif action in (GovAction.ADD_PURPOSE, GovAction.REMOVE_PURPOSE):
        check_purpose_action(ws, action, args[0])
    elif action == GovAction.ACTIVATE_VERSION:
        _check_activation(ws, *args)
    else:  # pragma: no cover
        raise AssertionError(action)


def change_delay(ws: WorkingSet) -> int:
    """Blocks between the decision and its effect for validator-set changes and version
    activations: past every block already in the pipeline."""
    params = ws.chain.params
    return max(params.validator_change_delay, params.pipeline_window + 1)


def _check_activation(ws: WorkingSet, version: int, height: int) -> None:
    # Deliberately nothing about which versions this build implements: the rule must
    # give every node the same answer; a node that cannot speak an activated version
    # stops when it arrives (ledger.protocol.check_supported).
    latest = ws.chain.latest_version()
    if not latest < version <= MAX_VERSION:
        raise RuleError(
            "bad_version",
            f"version {version} must be above {latest} (the latest approved) and at most "
            f"{MAX_VERSION}",
        )
    earliest = ws.height + change_delay(ws)
    last = ws.chain.scheduled_versions[-1][0] if ws.chain.scheduled_versions else 0
    if height < max(earliest, last + 1):
        raise RuleError(
            "activation_too_soon",
            f"activation height {height} must be at least {max(earliest, last + 1)} (decided "
            f"at {ws.height}; {change_delay(ws)} blocks for the pipeline, after any activation "
            "already scheduled)",
        )


def _schedule(ws: WorkingSet, new_set: ValidatorSet) -> None:
    eff = ws.height + change_delay(ws)
    sched = [(h, vs) for h, vs in ws.chain.scheduled if h != eff] + [(eff, new_set)]
    ws.set_chain(replace(ws.chain, scheduled=tuple(sorted(sched, key=lambda x: x[0]))))


def _apply_action(ws: WorkingSet, action: GovAction, args: tuple[Any, ...]) -> None:
    """Execute an approved action that ``check_action`` found applicable."""
    if action == GovAction.ADD_MEMBER:
        mid, name, key = args
        ws.put_member(Member(mid, name, key))
    elif action == GovAction.REMOVE_MEMBER:
        ws.drop_member(args[0])
    elif action in (GovAction.GRANT_ROLE, GovAction.WITHDRAW_ROLE):
        mid, role = args
        m = ws.member(mid)
        roles = set(m.roles)
        roles.add(role) if action == GovAction.GRANT_ROLE else roles.discard(role)
        ws.put_member(replace(m, roles=tuple(sorted(roles))))
    elif action in (GovAction.GRANT_DOC_TYPE, GovAction.WITHDRAW_DOC_TYPE):
        mid, doc = args
        m = ws.member(mid)
        docs = set(m.doc_types)
        if action == GovAction.GRANT_DOC_TYPE:
            docs.add(doc)
            if doc not in ws.chain.doc_types:
                ws.set_chain(replace(ws.chain, doc_types=tuple(sorted((*ws.chain.doc_types, doc)))))
        else:
            docs.discard(doc)
        ws.put_member(replace(m, doc_types=tuple(sorted(docs))))
    elif action == GovAction.ROTATE_KEY:
        mid, key = args
        ws.put_member(replace(ws.member(mid), key=key))
    elif action == GovAction.ADD_VALIDATOR:
        mid, node_key = args
        m = ws.member(mid)
        latest = ws.chain.latest_validators()
        _schedule(ws, ValidatorSet.of([*latest.validators, Validator(mid, node_key)]))
        ws.put_member(replace(m, roles=tuple(sorted({*m.roles, int(Role.VALIDATOR)}))))
    elif action == GovAction.REMOVE_VALIDATOR:
        (mid,) = args
        m = ws.member(mid)
        latest = ws.chain.latest_validators()
        _schedule(ws, ValidatorSet.of([v for v in latest.validators if v.member_id != mid]))
        ws.put_member(replace(m, roles=tuple(r for r in m.roles if r != Role.VALIDATOR)))
    elif action == GovAction.SET_PARAM:
        name, value = args
        ws.set_chain(replace(ws.chain, params=ws.chain.params.with_param(name, value)))
    elif action == GovAction.REVOKE_ATTESTATION:
        commitment, reason = args
        _revoke(ws, None, commitment, reason, by_governance=True)
    elif action in (GovAction.ADD_PURPOSE, GovAction.REMOVE_PURPOSE):
        apply_purpose_action(ws, action, args[0])
    elif action == GovAction.ACTIVATE_VERSION:
        version, height = args
        versions = (*ws.chain.scheduled_versions, (height, version))
        ws.set_chain(replace(ws.chain, scheduled_versions=versions))
    else:  # pragma: no cover
        raise AssertionError(action)


def touched_keys(tx: Transaction) -> tuple[bytes, ...] | None:
    """What a transaction reads and writes besides members, rights and parameters: the
    commitment of an ATTEST or REVOKE, the state keys of the consent records it touches
    (a bound ATTEST's subject record too). None for governance, which may change
    anything. The mempool re-checks a pending transaction when a block touched one of
    its keys."""
    p = tx.payload
    if isinstance(p, Attest):
        return (p.commitment, subject_key(p.subject)) if p.subject else (p.commitment,)
    if isinstance(p, Revoke):
        return (p.commitment,)
    if isinstance(p, ConsentGrant):
        return (subject_key(tx.sender),)
    if isinstance(p, ConsentRevoke):
        return (subject_key(tx.sender), grant_key(p.grant_id))
    if isinstance(p, Access):
        return (grant_key(p.grant_id),)
    return None
