"""Offline verification of a proof bundle: the verdict a bank can trust.

Pure functions, no I/O and no clock (``now_ms``, the verifier's clock, is passed in, as
in CometBFT's light client). The node, the CLI (``dvp verify``) and the auditor all call
this module.

``verify_bundle(bundle, anchor, now_ms=..., max_age_ms=DEFAULT_MAX_AGE_MS)`` trusts only
``anchor`` (the genesis validator set and chain id, or a pinned validator set) and
checks, in order:

1. the chain of certified validator-set changes from the anchor to the newest header H
   (each change header certified by the set before it, each new set hashing to the
   header's ``next_validator_set_hash``), and H's certificate against the set in force;
2. freshness: H is at most ``max_age_ms`` older than ``now_ms`` -- by default
   ``DEFAULT_MAX_AGE_MS``; only ``max_age_ms=None`` (an auditor judging an old bundle)
   turns it off. Beyond it the answer is ``STATE_TOO_OLD``, never a verdict: a node cut
   off from its peers keeps serving its old head, which cannot show a later revocation;
3. the state proof of the commitment's record — or of its absence — against H's state
   root;
4. for a record: the signed ATTEST transaction for this commitment, signed by the key
   the record names for its issuer, its inclusion in its block's tx root at the record's
   position, and that block's inclusion in H's history root;
5. for a revoked record, the same for the transaction that revoked it, signed by the key
   the record names for its revoker: the issuer's REVOKE (revoker = issuer, same
   reason), or the GOV_VOTE / GOV_PROPOSE that decided a governance revocation -- then
   the proposal's record, proven against H's state root, must be the approved
   REVOKE_ATTESTATION of this commitment with the record's reason, decided at the
   revocation's height by yes votes of a quorum of the validator set in force there
   (known from step 1), the revoker among them.

It returns a ``Verdict`` (VALID, REVOKED, EXPIRED or NOT_FOUND with issuer, document type,
times and heights) or raises ``VerificationError`` whose ``reason`` says exactly what
failed. A bundle that does not verify never yields a verdict. Expiry is judged against
``now_ms`` (the verifier's clock), not H's time. Both carry the certified head they were
judged at (``HeadInfo``: height, block time, its age by the verifier's clock) once the
head's certificate has verified.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ledger import merkle
from ledger.bundle import BundleError, IncludedTx, ProofBundle, ProposalProof
from ledger.consent_verify import AccessInfo, ConsentError, check_consent
from ledger.errors import DecodeError, ValidationError
from ledger.records import (
    AttestationRecord,
    ProposalRecord,
    ProposalStatus,
    Status,
    attestation_key,
    attestation_status,
    proposal_key,
)
from ledger.smt import Proof, verify_proof
from ledger.types import (
    Attest,
    BlockHeader,
    CertificateSignatureError,
    CommitCertificate,
    Genesis,
    GovAction,
    GovPropose,
    GovVote,
    QuorumError,
    Revoke,
    Transaction,
    ValidatorSet,
)


class Reason(StrEnum):
    MALFORMED = "malformed"
    WRONG_CHAIN = "wrong_chain"
    WRONG_COMMITMENT = "wrong_commitment"
    BAD_SIGNATURE = "bad_signature"
    INSUFFICIENT_QUORUM = "insufficient_quorum"
    VALIDATOR_CHAIN_BROKEN = "validator_chain_broken"
    STATE_TOO_OLD = "state_too_old"
    STATE_ROOT_MISMATCH = "state_root_mismatch"
    TX_ROOT_MISMATCH = "tx_root_mismatch"
    HISTORY_ROOT_MISMATCH = "history_root_mismatch"
    RECORD_MISMATCH = "record_mismatch"
    SIGNER_MISMATCH = "signer_mismatch"
    GOVERNANCE_MISMATCH = "governance_mismatch"
    CONSENT_MISSING = "consent_missing"
    CONSENT_MISMATCH = "consent_mismatch"


#: Reasons that are no verdict on a sound proof (UNVERIFIABLE), not a proof that fails
#: (INVALID): a head too old, or a bound document whose bundle carries no access
#: (docs/CONSENT.md §5). A consent part that is there but does not prove a recorded
#: access under a live grant (``consent_mismatch``) is a failing proof: INVALID.
UNVERIFIABLE_REASONS = frozenset({Reason.STATE_TOO_OLD, Reason.CONSENT_MISSING})


#: The newest certified header may be at most this old by the verifier's clock. An idle
#: chain commits an empty heartbeat block every ``heartbeat_ms`` (5 s by default,
#: ledger.consortium.ChainParams), so a connected node's head is rarely over ~6 s old;
#: 30 s leaves room for a view change (a silent primary is replaced after about two
#: heartbeats) and for clocks a few seconds apart, and is still short enough that a
#: revocation reaches every verifier within half a minute. docs/PROOFS.md §11.
DEFAULT_MAX_AGE_MS = 30_000


@dataclass(frozen=True)
class HeadInfo:
    """The certified head a result was judged at, and its age by the verifier's clock
    (``checked_at_ms - block_time_ms``; negative if the verifier's clock is behind)."""

    height: int
    block_time_ms: int
    checked_at_ms: int
    max_age_ms: int | None

    @property
    def age_ms(self) -> int:
        return self.checked_at_ms - self.block_time_ms

    def to_json(self) -> dict[str, object]:
        return {
            "height": self.height,
            "block_time_ms": self.block_time_ms,
            "head_age_ms": self.age_ms,
            "checked_at_ms": self.checked_at_ms,
            "max_age_ms": self.max_age_ms,
        }


class VerificationError(Exception):
    """No verdict: ``reason`` says what failed; ``head`` is the certified head when the
    failure came after its certificate verified (always for ``STATE_TOO_OLD``)."""

    def __init__(self, reason: Reason, message: str, head: HeadInfo | None = None) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message
        self.head = head

    @property
    def status(self) -> str:
        """UNVERIFIABLE when the proof is sound but its state too old to judge by (ask
        again, or another node), or a bound document's consent is missing or does not
        hold (docs/CONSENT.md §5); INVALID when the proof itself does not verify (a
        forged, corrupted or wrong-chain answer: do not trust that node)."""
        return "UNVERIFIABLE" if self.reason in UNVERIFIABLE_REASONS else "INVALID"

    def to_json(self) -> dict[str, object]:
        """The answer as the CLI (``--json``) and the RPC give it."""
        out: dict[str, object] = {
            "status": self.status,
            "reason": self.reason.value,
            "message": self.message,
        }
        if self.head is not None:
            out.update(self.head.to_json())
        return out


@dataclass(frozen=True)
class TrustAnchor:
    """What the verifier trusts: the chain id and the validator set at ``since_height``."""

    chain_id: str
    validators: ValidatorSet
    since_height: int = 0

    @classmethod
    def from_genesis(cls, genesis: Genesis) -> TrustAnchor:
        return cls(genesis.chain_id, genesis.validators, 0)


@dataclass(frozen=True)
class Verdict:
    status: Status
    commitment: bytes
    height: int  # the certified height the verdict is as of
    block_time_ms: int
    head_age_ms: int  # that head's age by the verifier's clock (checked_at_ms - block_time)
    checked_at_ms: int  # the verifier's clock: expiry and freshness are judged against it
    max_age_ms: int | None  # the freshness limit applied (None: none)
    issuer: str | None = None
    doc_type: str | None = None
    issued_at_ms: int | None = None
    valid_until_ms: int | None = None
    attested_height: int | None = None
    attest_tx_id: bytes | None = None
    revoked_height: int | None = None
    revoke_reason: int | None = None
    revoked_by: str | None = None  # the member that signed the revoking transaction
    revoke_proposal: bytes | None = None  # the governance proposal, when revoked by one
    access: AccessInfo | None = None  # the recorded access, for a document bound to a subject

    def to_json(self) -> dict[str, object]:
        return {k: _json_value(v) for k, v in self.__dict__.items()}


def _json_value(v: object) -> object:
    """A verdict field in JSON: bytes as hex, the status as its name, the access an object."""
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, Status):
        return str(v)
    if isinstance(v, AccessInfo):
        return v.to_json()
    return v


def _fail(reason: Reason, message: str) -> VerificationError:
    return VerificationError(reason, message)


def _header(raw: bytes, what: str, chain_id: str) -> BlockHeader:
    try:
        h = BlockHeader.decode(raw)
    except DecodeError as exc:
        raise _fail(Reason.MALFORMED, f"{what}: {exc}") from None
    if h.chain_id != chain_id:
        raise _fail(Reason.WRONG_CHAIN, f"{what} is for chain {h.chain_id!r}, not {chain_id!r}")
    return h


def check_certificate(
    header: BlockHeader, raw_cert: bytes, validators: ValidatorSet, chain_id: str, what: str
) -> CommitCertificate:
    """The certificate of ``header`` by ``validators``, or ``VerificationError``."""
    try:
        cert = CommitCertificate.decode(raw_cert)
    except DecodeError as exc:
        raise _fail(Reason.MALFORMED, f"{what} certificate: {exc}") from None
    if cert.height != header.height:
        raise _fail(Reason.MALFORMED, f"{what} certificate is for height {cert.height}")
    try:
        cert.verify(chain_id, validators, header.block_id)
    except QuorumError as exc:
        raise _fail(Reason.INSUFFICIENT_QUORUM, f"{what}: {exc}") from None
    except CertificateSignatureError as exc:
        raise _fail(Reason.BAD_SIGNATURE, f"{what}: {exc}") from None
    except ValidationError as exc:
        raise _fail(Reason.BAD_SIGNATURE, f"{what}: {exc}") from None
    return cert


@dataclass(frozen=True)
class ValidatorHistory:
    """The validator sets a verified bundle leads through: ``sets[i]`` is in force from
    height ``starts[i]`` (the anchor's set from its height, each change's new set from
    the height after its header) up to the next start."""

    starts: tuple[int, ...]
    sets: tuple[ValidatorSet, ...]

    def at(self, height: int) -> ValidatorSet | None:
        """The set that certified ``height``; None before the anchor's height."""
        found = None
        for start, vs in zip(self.starts, self.sets, strict=True):
            if start > height:
                break
            found = vs
        return found


def verify_head(bundle: ProofBundle, anchor: TrustAnchor) -> tuple[BlockHeader, ValidatorHistory]:
    """Follow the certified validator-set changes from the anchor to the head header;
    the head and the sets in force along the way."""
    chain = anchor.chain_id
    if bundle.chain_id != chain:
        raise _fail(Reason.WRONG_CHAIN, f"bundle is for chain {bundle.chain_id!r}")
    current = anchor.validators
    last = anchor.since_height - 1
    starts, sets = [anchor.since_height], [anchor.validators]
    head = _header(bundle.head.header, "head header", chain)
    for i, change in enumerate(bundle.valset_changes):
        h = _header(change.header, f"valset change {i}", chain)
        if h.height <= last or h.height >= head.height:
            raise _fail(
                Reason.VALIDATOR_CHAIN_BROKEN,
                f"valset change {i} at height {h.height} is out of order",
            )
        if h.validator_set_hash != current.hash:
            raise _fail(
                Reason.VALIDATOR_CHAIN_BROKEN,
                f"header {h.height} is certified by a set the chain did not lead to "
                "(a validator-set change is missing)",
            )
        check_certificate(h, change.certificate, current, chain, f"header {h.height}")
        try:
            nxt = ValidatorSet.decode(change.next_validators)
        except DecodeError as exc:
            raise _fail(Reason.MALFORMED, f"valset change {i}: {exc}") from None
        if nxt.hash != h.next_validator_set_hash:
            raise _fail(
                Reason.VALIDATOR_CHAIN_BROKEN,
                f"the validator set after height {h.height} does not match its header",
            )
        current, last = nxt, h.height
        starts.append(h.height + 1)
        sets.append(nxt)
    if head.validator_set_hash != current.hash:
        raise _fail(
            Reason.VALIDATOR_CHAIN_BROKEN,
            f"head header {head.height} is certified by a set the chain did not lead to",
        )
    check_certificate(head, bundle.head.certificate, current, chain, f"head header {head.height}")
    return head, ValidatorHistory(tuple(starts), tuple(sets))


def _included(
    inc: IncludedTx, head: BlockHeader, height: int, position: int, chain: str, what: str
) -> tuple[Transaction, BlockHeader]:
    try:
        tx = Transaction.decode(inc.tx)
    except DecodeError as exc:
        raise _fail(Reason.MALFORMED, f"{what} transaction: {exc}") from None
    if tx.chain_id != chain:
        raise _fail(Reason.WRONG_CHAIN, f"{what} transaction is for chain {tx.chain_id!r}")
    if not tx.signature_ok():
        raise _fail(Reason.BAD_SIGNATURE, f"{what} transaction signature does not verify")
    block = _header(inc.header, f"{what} block header", chain)
    if block.height != height or inc.index != position:
        raise _fail(Reason.RECORD_MISMATCH, f"{what} is not at the record's height/position")
    if not merkle.verify_inclusion(tx.tx_id, position, block.tx_count, inc.tx_proof, block.tx_root):
        raise _fail(
            Reason.TX_ROOT_MISMATCH, f"{what} transaction is not in block {height}'s tx root"
        )
    if block.height == head.height:
        # The head is in no history tree of its own (size H.height covers 0..H-1): its
        # certificate proves it, so the proof must be empty and the block the head itself.
        if block.block_id != head.block_id:
            raise _fail(Reason.HISTORY_ROOT_MISMATCH, f"{what} block is not the head block")
        if inc.history_proof:
            raise _fail(
                Reason.HISTORY_ROOT_MISMATCH,
                f"{what} block is the head: its history proof must be empty",
            )
    elif block.height > head.height or not merkle.verify_inclusion(
        block.block_id, block.height, head.height, inc.history_proof, head.history_root
    ):
        raise _fail(
            Reason.HISTORY_ROOT_MISMATCH, f"block {block.height} is not in the head's history root"
        )
    return tx, block


def verify_bundle(
    bundle: ProofBundle,
    anchor: TrustAnchor,
    *,
    now_ms: int,
    max_age_ms: int | None = DEFAULT_MAX_AGE_MS,
) -> Verdict:
    """The verdict on ``bundle.commitment`` as of ``now_ms`` (the verifier's clock, Unix
    ms); ``VerificationError`` if anything fails, ``STATE_TOO_OLD`` if the newest
    certified header is more than ``max_age_ms`` older than ``now_ms``.

    Requires ``max_age_ms`` None or >= 0 (``ValueError`` otherwise: a caller's bug).
    """
    if max_age_ms is not None and max_age_ms < 0:
        raise ValueError(f"max_age_ms must be >= 0, not {max_age_ms}")
    h, sets = verify_head(bundle, anchor)
    info = HeadInfo(h.height, h.time_ms, now_ms, max_age_ms)
    if max_age_ms is not None and info.age_ms > max_age_ms:
        raise VerificationError(
            Reason.STATE_TOO_OLD,
            f"state too old: the newest certified header (height {h.height}) is "
            f"{info.age_ms} ms old by this verifier's clock; at most {max_age_ms} ms "
            "accepted. The node may be cut off from the consortium: ask again, or ask "
            "another node",
            info,
        )
    try:
        return _judge(bundle, anchor, h, sets, info)
    except VerificationError as exc:
        exc.head = info
        raise


def _judge(
    bundle: ProofBundle,
    anchor: TrustAnchor,
    head: BlockHeader,
    sets: ValidatorHistory,
    info: HeadInfo,
) -> Verdict:
    """Steps 3-5 of the module docstring, against the verified head, then the verdict."""
    try:
        proof = Proof.from_json(bundle.state_proof)
    except (DecodeError, ValueError, TypeError) as exc:
        raise _fail(Reason.MALFORMED, f"state proof: {exc}") from None
    key = attestation_key(bundle.commitment)
    if not verify_proof(head.state_root, key, bundle.record, proof):
        raise _fail(
            Reason.STATE_ROOT_MISMATCH, "the state proof does not match the head's state root"
        )
    if bundle.record is None:
        if any(
            x is not None for x in (bundle.attest, bundle.revoke, bundle.proposal, bundle.consent)
        ):
            # nothing would check them: refuse rather than pass along unchecked bytes
            raise _fail(Reason.MALFORMED, "a bundle without a record carries transactions")
        return Verdict(Status.NOT_FOUND, bundle.commitment, *_as_of(info))
    try:
        rec = AttestationRecord.decode(bundle.record)
    except DecodeError as exc:
        raise _fail(Reason.MALFORMED, f"record: {exc}") from None
    if bundle.attest is None:
        raise _fail(Reason.MALFORMED, "a record without its ATTEST transaction")
    tx, _ = _included(bundle.attest, head, rec.height, rec.position, anchor.chain_id, "ATTEST")
    p = tx.payload
    if not isinstance(p, Attest) or p.commitment != bundle.commitment:
        raise _fail(Reason.WRONG_COMMITMENT, "the ATTEST transaction is for another commitment")
    if (p.doc_type, p.valid_until_ms, p.subject) != (rec.doc_type, rec.valid_until_ms, rec.subject):
        raise _fail(Reason.RECORD_MISMATCH, "the record does not match its ATTEST transaction")
    if tx.sender != rec.issuer_key:
        raise _fail(
            Reason.SIGNER_MISMATCH,
            f"the ATTEST is not signed by the key the record names for {rec.issuer}",
        )
    if not rec.revoked_height:
        if bundle.revoke is not None or bundle.proposal is not None:
            raise _fail(Reason.MALFORMED, "revocation proofs for a record that is not revoked")
    else:
        _check_revocation(bundle, anchor.chain_id, head, sets, rec)
    access = _check_consent(bundle, anchor.chain_id, head, rec)
    return Verdict(
        attestation_status(rec, info.checked_at_ms),
        bundle.commitment,
        *_as_of(info),
        issuer=rec.issuer,
        doc_type=rec.doc_type,
        issued_at_ms=p.issued_at_ms,
        valid_until_ms=rec.valid_until_ms or None,
        attested_height=rec.height,
        attest_tx_id=tx.tx_id,
        revoked_height=rec.revoked_height or None,
        revoke_reason=rec.revoke_reason if rec.revoked_height else None,
        revoked_by=rec.revoker or None,
        revoke_proposal=None if bundle.proposal is None else bundle.proposal.proposal_id,
        access=access,
    )


def _check_consent(
    bundle: ProofBundle, chain: str, head: BlockHeader, rec: AttestationRecord
) -> AccessInfo | None:
    """Step 6 (ledger.consent_verify), with this module's inclusion check; any failure of
    a consent part's inclusion is a ``consent_mismatch``."""

    def included(
        inc: IncludedTx, height: int, position: int, what: str
    ) -> tuple[Transaction, BlockHeader]:
        try:
            return _included(inc, head, height, position, chain, what)
        except VerificationError as exc:
            raise ConsentError(Reason.CONSENT_MISMATCH.value, exc.message) from None

    try:
        return check_consent(bundle.consent, bundle.commitment, rec, head, included)
    except ConsentError as exc:
        raise _fail(Reason(exc.reason), exc.message) from None


def _check_revocation(
    bundle: ProofBundle,
    chain: str,
    head: BlockHeader,
    sets: ValidatorHistory,
    rec: AttestationRecord,
) -> None:
    """Step 5: the transaction that revoked ``rec`` is where the record says, signed by
    the revoker's key, and entitled: the issuer's own REVOKE, or the deciding vote of an
    approved governance proposal whose yes votes the verifier counts itself."""
    if bundle.revoke is None:
        raise _fail(Reason.MALFORMED, "a revoked record without the transaction that revoked it")
    rtx, _ = _included(
        bundle.revoke, head, rec.revoked_height, rec.revoke_position, chain, "revoking"
    )
    if rtx.sender != rec.revoker_key:
        raise _fail(
            Reason.SIGNER_MISMATCH,
            f"the revoking transaction is not signed by the key the record names for {rec.revoker}",
        )
    p = rtx.payload
    if isinstance(p, Revoke):
        if p.commitment != bundle.commitment:
            raise _fail(Reason.WRONG_COMMITMENT, "the REVOKE transaction is for another commitment")
        if int(p.reason) != rec.revoke_reason:
            raise _fail(Reason.RECORD_MISMATCH, "the record's reason is not the REVOKE's")
        if rec.revoker != rec.issuer:
            raise _fail(Reason.SIGNER_MISMATCH, "a REVOKE by a member other than the issuer")
        if bundle.proposal is not None:
            raise _fail(Reason.MALFORMED, "a proposal for a revocation by the issuer")
        return
    if not isinstance(p, (GovVote, GovPropose)):
        raise _fail(Reason.RECORD_MISMATCH, "the transaction at the revocation does not revoke")
    if bundle.proposal is None:
        raise _fail(Reason.MALFORMED, "a governance revocation without its proposal")
    _check_proposal(bundle.proposal, rtx, head, sets, rec, bundle.commitment)


def _check_proposal(
    prop: ProposalProof,
    rtx: Transaction,
    head: BlockHeader,
    sets: ValidatorHistory,
    rec: AttestationRecord,
    commitment: bytes,
) -> None:
    try:
        proof = Proof.from_json(prop.state_proof)
        pr = ProposalRecord.decode(prop.record)
    except (DecodeError, ValueError, TypeError) as exc:
        raise _fail(Reason.MALFORMED, f"proposal: {exc}") from None
    if not verify_proof(head.state_root, proposal_key(prop.proposal_id), prop.record, proof):
        raise _fail(
            Reason.STATE_ROOT_MISMATCH, "the proposal's proof does not match the head's state root"
        )
    p = rtx.payload
    decides = (
        p.proposal_id == prop.proposal_id and p.approve
        if isinstance(p, GovVote)
        else rtx.tx_id == prop.proposal_id
    )
    if not decides:
        raise _fail(Reason.GOVERNANCE_MISMATCH, "the revoking transaction is not a yes vote on it")
    if (
        pr.action != GovAction.REVOKE_ATTESTATION
        or tuple(pr.args) != (commitment, rec.revoke_reason)
        or pr.status != ProposalStatus.APPROVED
        or pr.decided_height != rec.revoked_height
    ):
        raise _fail(
            Reason.GOVERNANCE_MISMATCH,
            "the proposal is not the approved revocation of this commitment with this reason "
            f"at height {rec.revoked_height}",
        )
    voters = sets.at(rec.revoked_height)
    if voters is None:
        raise _fail(
            Reason.GOVERNANCE_MISMATCH,
            f"decided at height {rec.revoked_height}, before the trusted validator set",
        )
    members = {v.member_id for v in voters.validators}
    yes = members.intersection(pr.yes)
    if len(yes) < voters.quorum:
        raise _fail(
            Reason.GOVERNANCE_MISMATCH,
            f"{len(yes)} yes votes of the {voters.n} validators at height "
            f"{rec.revoked_height}; {voters.quorum} needed",
        )
    if rec.revoker not in yes:
        raise _fail(Reason.SIGNER_MISMATCH, f"{rec.revoker} is not a counted yes voter")


def _as_of(info: HeadInfo) -> tuple[int, int, int, int, int | None]:
    """A Verdict's head fields, in its field order."""
    return info.height, info.block_time_ms, info.age_ms, info.checked_at_ms, info.max_age_ms


def verify_bundle_json(
    doc: object,
    anchor: TrustAnchor,
    *,
    now_ms: int,
    max_age_ms: int | None = DEFAULT_MAX_AGE_MS,
) -> Verdict:
    """``verify_bundle`` on the JSON form; a malformed document is ``MALFORMED``."""
    try:
        bundle = ProofBundle.from_json(doc)
    except BundleError as exc:
        raise _fail(Reason.MALFORMED, str(exc)) from None
    return verify_bundle(bundle, anchor, now_ms=now_ms, max_age_ms=max_age_ms)
