"""The consent rules: binding a document to its subject, grants, revocations and access
events (docs/CONSENT.md §4). Part of the rule book: ``ledger.rules.apply_tx`` calls
these, so mempool admission and block execution run the same code.

- ``bind_subject``: an ATTEST with a ``subject`` key adds the commitment to that key's
  subject record (a key bound on chain is one that has a subject record).
- ``apply_subject_tx``: a ``CONSENT_GRANT`` or ``CONSENT_REVOKE``, signed by a subject
  key (not a member's): the key must be bound, the signature must verify, and the key is
  held to ``subject_tx_limit`` transactions per ``subject_window_ms`` of block time.
- ``record_access``: an ``ACCESS`` by a member: the grant must be live now
  (``consent_records.grant_live_at``) for this member, document and purpose; the access
  is appended to the grant record.
- ``check_purpose_action`` / ``apply_purpose_action``: ADD_PURPOSE and REMOVE_PURPOSE.

Every check runs before any write. "Now" is ``ws.time_ms``: the block's time when
executing a block, the head's at admission.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ledger.consent_records import (
    CONSENT_KEY,
    MAX_SUBJECT_DOCUMENTS,
    MAX_SUBJECT_GRANTS,
    AccessEntry,
    GrantRecord,
    PolicyRecord,
    SubjectRecord,
    decode_grant,
    grant_key,
    grant_live_at,
    remember_grant,
    subject_key,
)
from ledger.consortium import Member
from ledger.errors import RuleError, did_you_mean
from ledger.transaction import (
    MAX_GRANT_WINDOW_MS,
    Access,
    ConsentGrant,
    ConsentRevoke,
    GovAction,
    Transaction,
)

if TYPE_CHECKING:
    from ledger.working_set import WorkingSet


# -- reads --------------------------------------------------------------------
def subject_record(ws: WorkingSet, key: bytes) -> SubjectRecord | None:
    return ws.read_record(subject_key(key), SubjectRecord.decode)


def grant_record(ws: WorkingSet, grant_id: bytes) -> GrantRecord:
    rec = ws.read_record(grant_key(grant_id), decode_grant)
    if rec is None:
        raise RuleError("no_grant", f"no consent grant {grant_id.hex()[:16]}")
    return rec


def policy(ws: WorkingSet) -> PolicyRecord:
    raw = ws.read(CONSENT_KEY)
    return PolicyRecord(()) if raw is None else PolicyRecord.decode(raw)


# -- binding ------------------------------------------------------------------
def bind_subject(ws: WorkingSet, subject: bytes, commitment: bytes) -> None:
    """Check that ``subject`` may be bound to one more document, and bind it."""
    if subject in ws.key_index:
        raise RuleError(
            "subject_is_member_key", "a subject key must be the subject's own, not a member key"
        )
    rec = subject_record(ws, subject) or SubjectRecord()
    if len(rec.commitments) >= MAX_SUBJECT_DOCUMENTS:
        raise RuleError(
            "too_many_documents",
            f"this subject key is bound to {MAX_SUBJECT_DOCUMENTS} documents already; "
            "use a fresh key per document",
        )
    ws.write_record(subject_key(subject), rec._replace(commitments=(*rec.commitments, commitment)))


# -- the subject's own transactions -------------------------------------------
def apply_subject_tx(
    ws: WorkingSet, tx: Transaction, verified: Callable[[bytes], bool] | None
) -> None:
    """A ``CONSENT_GRANT`` or ``CONSENT_REVOKE`` signed by a subject key."""
    rec = subject_record(ws, tx.sender)
    if rec is None:
        raise RuleError(
            "unknown_sender",
            "the signing key is neither a member key nor a subject key bound to a document",
        )
    if not ((verified is not None and verified(tx.tx_id)) or tx.signature_ok()):
        raise RuleError("bad_signature", "transaction signature does not verify")
    params = ws.chain.params
    start, count = rec.window_start_ms, rec.window_count
    if ws.time_ms - start >= params.subject_window_ms:
        start, count = ws.time_ms, 0
    if count >= params.subject_tx_limit:
        raise RuleError(
            "rate_limited",
            f"this subject key signed {count} transactions in the last "
            f"{params.subject_window_ms // 1000} s (limit {params.subject_tx_limit}); "
            "retry later",
        )
    p = tx.payload
    grants = rec.grants
    if isinstance(p, ConsentGrant):
        _check_grant(ws, tx.sender, p)
        if len(grants) >= MAX_SUBJECT_GRANTS:
            raise RuleError(
                "too_many_grants", f"this subject key signed {MAX_SUBJECT_GRANTS} grants already"
            )
        ws.write_record(
            grant_key(tx.tx_id), GrantRecord.granted(tx.sender, p, ws.height, ws.position)
        )
        grants = (*grants, tx.tx_id)
    elif isinstance(p, ConsentRevoke):
        grant = grant_record(ws, p.grant_id)
        if grant.subject != tx.sender:
            raise RuleError("not_grant_subject", "only the grant's subject may revoke it")
        if grant.revoked_height:
            raise RuleError("already_revoked", f"revoked at block {grant.revoked_height}")
        revoked = grant._replace(revoked_height=ws.height, revoke_position=ws.position)
        ws.write_record(grant_key(p.grant_id), revoked)
    else:  # pragma: no cover - apply_tx routes only the subject kinds here
        raise AssertionError(tx.kind)
    ws.write_record(
        subject_key(tx.sender),
        rec._replace(grants=grants, window_start_ms=start, window_count=count + 1),
    )


def _check_grant(ws: WorkingSet, subject: bytes, p: ConsentGrant) -> None:
    for c in p.commitments:
        att = ws.attestation(c)
        if att is None:
            raise RuleError("not_found", f"no attestation of commitment {c.hex()[:16]}")
        if att.subject != subject:
            raise RuleError(
                "not_bound", f"commitment {c.hex()[:16]} is not bound to the signing key"
            )
    ws.member(p.grantee)  # unknown_member, with the nearest id suggested
    purposes = policy(ws).purposes
    if p.purpose not in purposes:
        hint = did_you_mean(p.purpose, purposes)
        raise RuleError(
            "unknown_purpose",
            f"{p.purpose!r} is not one of the consortium's purposes {list(purposes)}{hint}",
        )
    if p.not_after_ms <= ws.time_ms:
        raise RuleError("bad_window", "the grant's window ends in the past")
    if p.not_after_ms - p.not_before_ms > MAX_GRANT_WINDOW_MS:
        raise RuleError("bad_window", "a grant's window may be at most 366 days")


# -- access events ------------------------------------------------------------
def record_access(ws: WorkingSet, member: Member, sender: bytes, p: Access) -> None:
    grant = grant_record(ws, p.grant_id)
    if grant.grantee != member.member_id:
        raise RuleError(
            "wrong_grantee", f"this grant is for {grant.grantee}, not {member.member_id}"
        )
    if p.commitment not in grant.commitments:
        raise RuleError("not_in_grant", "this grant does not cover that document")
    if p.purpose != grant.purpose:
        raise RuleError("wrong_purpose", f"this grant is for {grant.purpose!r}, not {p.purpose!r}")
    refused = grant_live_at(grant, ws.height, ws.position, ws.time_ms)
    if refused is not None:
        raise RuleError(*refused)
    entry = AccessEntry(ws.height, ws.position, sender)
    grant = grant._replace(accesses=(*grant.accesses, entry))
    raw = ws.write_record(grant_key(p.grant_id), grant)
    if raw is not None:
        remember_grant(raw, grant)


# -- governance of purposes ---------------------------------------------------
def check_purpose_action(ws: WorkingSet, action: GovAction, purpose: str) -> None:
    purposes = policy(ws).purposes
    if action == GovAction.ADD_PURPOSE and purpose in purposes:
        raise RuleError("no_change", f"{purpose!r} is a purpose already; nothing would change")
    if action == GovAction.REMOVE_PURPOSE and purpose not in purposes:
        hint = did_you_mean(purpose, purposes)
        raise RuleError("unknown_purpose", f"{purpose!r} is not a purpose{hint}")


def apply_purpose_action(ws: WorkingSet, action: GovAction, purpose: str) -> None:
    purposes = set(policy(ws).purposes)
    purposes.add(purpose) if action == GovAction.ADD_PURPOSE else purposes.discard(purpose)
    ws.write(CONSENT_KEY, PolicyRecord(tuple(sorted(purposes))).encode())
