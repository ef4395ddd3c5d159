"""What a verifier checks about consent (docs/CONSENT.md §5, docs/PROOFS.md §11 step 6).

A bundle for a document bound to a data subject (its attestation record names a
``subject`` key) must carry ``consent``: the grant's record proven against the head's
state root, the subject's signed ``CONSENT_GRANT`` and the member's signed ``ACCESS``,
each included in the chain. ``check_consent`` makes the checks, in the spec's order:

1. a bound record needs ``consent`` (else ``consent_missing``); an unbound one has none;
2. the grant record is proven under ``grant_key(grant_id)`` at the head's state root;
3. the ``CONSENT_GRANT`` has id ``grant_id``, sits at the record's (height, position),
   its signature verifies, its sender is the grant record's subject and the attestation
   record's subject, and its payload is the record's fields;
4. the ``ACCESS`` sits at a (height, position) listed in the grant's ``accesses`` at an
   index below ``max_uses`` with its sender as ``member_key``, and names this grant,
   this commitment and the grant's purpose; the grant covers the commitment;
5. the grant was live at the access (``consent_records.grant_live_at``, the rule book's
   own function: window by the access block's time, not revoked before it).

Any failure of 2-5 is ``consent_mismatch`` with a message saying which. Pure functions;
the inclusion check itself is ``ledger.verify``'s, passed in (this module cannot import
``ledger.verify``, which calls it), and failures come back as ``ConsentError`` for
``ledger.verify`` to turn into its ``VerificationError``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ledger.block import BlockHeader
from ledger.bundle import ConsentProof, IncludedTx
from ledger.consent_records import GrantRecord, grant_key, grant_live_at
from ledger.errors import DecodeError
from ledger.records import AttestationRecord
from ledger.smt import Proof, verify_proof
from ledger.transaction import Access, ConsentGrant, Transaction

CONSENT_MISSING = "consent_missing"
CONSENT_MISMATCH = "consent_mismatch"

#: ``included(part, height, position, what)``: the transaction and its block header once
#: its inclusion (signature, tx root, history root) verifies; raises ``ConsentError``.
Included = Callable[[IncludedTx, int, int, str], tuple[Transaction, BlockHeader]]


class ConsentError(Exception):
    """A consent check failed: ``reason`` is ``consent_missing`` or ``consent_mismatch``
    (``malformed`` for consent parts on a bundle that may not carry them)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class AccessInfo:
    """The recorded access a verdict on a bound document names."""

    grant_id: bytes
    purpose: str
    grantee: str  # the member the grant is for
    height: int  # where the ACCESS is
    time_ms: int  # that block's time
    member_key: bytes  # the key that signed the ACCESS

    def to_json(self) -> dict[str, object]:
        return {
            "grant_id": self.grant_id.hex(),
            "purpose": self.purpose,
            "grantee": self.grantee,
            "height": self.height,
            "time_ms": self.time_ms,
            "member_key": self.member_key.hex(),
        }

    def describe(self) -> str:
        """One line for people: ``dvp verify``, ``cli.documents.describe``."""
        return (
            f"access recorded at block {self.height} under grant {self.grant_id.hex()[:16]}… "
            f"for {self.purpose}"
        )


def _mismatch(message: str) -> ConsentError:
    return ConsentError(CONSENT_MISMATCH, message)


def check_consent(
    consent: ConsentProof | None,
    commitment: bytes,
    rec: AttestationRecord,
    head: BlockHeader,
    included: Included,
) -> AccessInfo | None:
    """Steps 1-5 of the module docstring for the verified attestation record ``rec``;
    the access to name in the verdict, or None for a document bound to no subject."""
    if not rec.subject:
        if consent is not None:
            raise ConsentError("malformed", "consent proofs for a document bound to no subject")
        return None
    if consent is None:
        raise ConsentError(
            CONSENT_MISSING,
            "this document is bound to its data subject: a bundle must carry the recorded "
            "access under the subject's consent (ask with --access, or record one)",
        )
    grant = _proven_grant(consent, head)
    _check_grant_tx(consent, grant, rec, included)
    return _check_access(consent, grant, commitment, included)


def _proven_grant(consent: ConsentProof, head: BlockHeader) -> GrantRecord:
    """Step 2."""
    try:
        proof = Proof.from_json(consent.state_proof)
        grant = GrantRecord.decode(consent.record)
    except (DecodeError, ValueError, TypeError) as exc:
        raise _mismatch(f"grant record or its proof: {exc}") from None
    if not verify_proof(head.state_root, grant_key(consent.grant_id), consent.record, proof):
        raise _mismatch("the grant record's proof does not match the head's state root")
    return grant


def _check_grant_tx(
    consent: ConsentProof, grant: GrantRecord, rec: AttestationRecord, included: Included
) -> None:
    """Step 3: the consent is the subject's own signed statement."""
    tx, _ = included(consent.grant_tx, grant.height, grant.position, "CONSENT_GRANT")
    if tx.tx_id != consent.grant_id:
        raise _mismatch("the CONSENT_GRANT transaction is not the grant the record is for")
    if not isinstance(tx.payload, ConsentGrant):
        raise _mismatch("the transaction at the grant's place is not a CONSENT_GRANT")
    if tx.sender != grant.subject or tx.sender != rec.subject:
        raise _mismatch("the CONSENT_GRANT is not signed by the document's subject key")
    if tx.payload != grant.payload():
        raise _mismatch("the grant record does not match its signed CONSENT_GRANT")


def _check_access(
    consent: ConsentProof, grant: GrantRecord, commitment: bytes, included: Included
) -> AccessInfo:
    """Steps 4 and 5."""
    inc = consent.access
    block = _access_place(inc)
    index = next(
        (i for i, a in enumerate(grant.accesses) if (a.height, a.position) == (block, inc.index)),
        None,
    )
    if index is None or index >= grant.max_uses:
        raise _mismatch("the ACCESS is not among the accesses the grant record lists")
    tx, header = included(inc, block, inc.index, "ACCESS")
    p = tx.payload
    if not isinstance(p, Access):
        raise _mismatch("the transaction at the access's place is not an ACCESS")
    if tx.sender != grant.accesses[index].member_key:
        raise _mismatch("the ACCESS is not signed by the member key the grant record lists")
    if p.grant_id != consent.grant_id:
        raise _mismatch("the ACCESS is under another grant")
    if p.commitment != commitment:
        raise _mismatch("the ACCESS is to another document")
    if p.purpose != grant.purpose:
        raise _mismatch(f"the ACCESS is for {p.purpose!r}, the grant for {grant.purpose!r}")
    if commitment not in grant.commitments:
        raise _mismatch("the grant does not cover this document")
    refused = grant_live_at(grant, block, inc.index, header.time_ms, recorded=index)
    if refused is not None:
        raise _mismatch(f"the grant was not live at the access ({refused[0]}: {refused[1]})")
    return AccessInfo(
        consent.grant_id, grant.purpose, grant.grantee, block, header.time_ms, tx.sender
    )


def _access_place(inc: IncludedTx) -> int:
    """The height of the ACCESS's block, read from its header (checked by ``included``)."""
    try:
        return BlockHeader.decode(inc.header).height
    except DecodeError as exc:
        raise _mismatch(f"ACCESS block header: {exc}") from None
