"""Offline verification of a proof bundle: the verdict a bank can trust.

Pure functions, no I/O and no clock (``now_ms`` is passed in, as in CometBFT's light
client). The node, the CLI (``dvp verify``) and the auditor all call this module.

``verify_bundle(bundle, anchor, now_ms=..., max_age_ms=...)`` trusts only ``anchor``
(the genesis validator set and chain id, or a pinned validator set) and checks, in order:

1. the chain of certified validator-set changes from the anchor to the newest header H
   (each change header certified by the set before it, each new set hashing to the
   header's ``next_validator_set_hash``), and H's certificate against the set in force;
2. freshness: H is at most ``max_age_ms`` older than ``now_ms`` (when both are given);
3. the state proof of the commitment's record — or of its absence — against H's state
   root;
4. for a record: the signed ATTEST transaction for this commitment, its inclusion in its
   block's tx root at the record's position, and that block's inclusion in H's history
   root; the same for the REVOKE transaction of a revoked record when it is included.

It returns a ``Verdict`` (VALID, REVOKED, EXPIRED or NOT_FOUND with issuer, document type,
times and heights) or raises ``VerificationError`` whose ``reason`` says exactly what
failed. A bundle that does not verify never yields a verdict.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ledger import merkle
from ledger.bundle import BundleError, IncludedTx, ProofBundle
from ledger.errors import DecodeError, ValidationError
from ledger.records import AttestationRecord, Status, attestation_key, attestation_status
from ledger.smt import Proof, verify_proof
from ledger.types import (
    Attest,
    BlockHeader,
    CertificateSignatureError,
    CommitCertificate,
    Genesis,
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
    STALE = "stale"
    STATE_ROOT_MISMATCH = "state_root_mismatch"
    TX_ROOT_MISMATCH = "tx_root_mismatch"
    HISTORY_ROOT_MISMATCH = "history_root_mismatch"
    RECORD_MISMATCH = "record_mismatch"


class VerificationError(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


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
    issuer: str | None = None
    doc_type: str | None = None
    issued_at_ms: int | None = None
    valid_until_ms: int | None = None
    attested_height: int | None = None
    attest_tx_id: bytes | None = None
    revoked_height: int | None = None
    revoke_reason: int | None = None

    def to_json(self) -> dict[str, object]:
        return {
            k: (v.hex() if isinstance(v, bytes) else str(v) if isinstance(v, Status) else v)
            for k, v in self.__dict__.items()
        }


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


def verify_head(bundle: ProofBundle, anchor: TrustAnchor) -> BlockHeader:
    """Follow the certified validator-set changes from the anchor to the head header."""
    chain = anchor.chain_id
    if bundle.chain_id != chain:
        raise _fail(Reason.WRONG_CHAIN, f"bundle is for chain {bundle.chain_id!r}")
    current = anchor.validators
    last = anchor.since_height - 1
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
    if head.validator_set_hash != current.hash:
        raise _fail(
            Reason.VALIDATOR_CHAIN_BROKEN,
            f"head header {head.height} is certified by a set the chain did not lead to",
        )
    check_certificate(head, bundle.head.certificate, current, chain, f"head header {head.height}")
    return head


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
        if block.block_id != head.block_id:
            raise _fail(Reason.HISTORY_ROOT_MISMATCH, f"{what} block is not the head block")
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
    now_ms: int | None = None,
    max_age_ms: int | None = None,
) -> Verdict:
    """The verdict on ``bundle.commitment``; ``VerificationError`` if anything fails."""
    head = verify_head(bundle, anchor)
    if now_ms is not None and max_age_ms is not None and now_ms - head.time_ms > max_age_ms:
        raise _fail(
            Reason.STALE,
            f"the newest certified header is {now_ms - head.time_ms} ms "
            f"old; at most {max_age_ms} ms accepted",
        )
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
        if bundle.attest is not None or bundle.revoke is not None:
            # nothing would check them: refuse rather than pass along unchecked bytes
            raise _fail(Reason.MALFORMED, "a bundle without a record carries transactions")
        return Verdict(Status.NOT_FOUND, bundle.commitment, head.height, head.time_ms)
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
    if p.doc_type != rec.doc_type or p.valid_until_ms != rec.valid_until_ms:
        raise _fail(Reason.RECORD_MISMATCH, "the record does not match its ATTEST transaction")
    if not rec.revoked_height and bundle.revoke is not None:
        raise _fail(Reason.MALFORMED, "a REVOKE transaction for a record that is not revoked")
    if rec.revoked_height and bundle.revoke is not None:
        rtx, _ = _included(
            bundle.revoke, head, rec.revoked_height, rec.revoke_position, anchor.chain_id, "REVOKE"
        )
        if isinstance(rtx.payload, Revoke) and rtx.payload.commitment != bundle.commitment:
            raise _fail(Reason.WRONG_COMMITMENT, "the REVOKE transaction is for another commitment")
    return Verdict(
        attestation_status(rec, head.time_ms),
        bundle.commitment,
        head.height,
        head.time_ms,
        issuer=rec.issuer,
        doc_type=rec.doc_type,
        issued_at_ms=p.issued_at_ms,
        valid_until_ms=rec.valid_until_ms or None,
        attested_height=rec.height,
        attest_tx_id=tx.tx_id,
        revoked_height=rec.revoked_height or None,
        revoke_reason=rec.revoke_reason if rec.revoked_height else None,
    )


def verify_bundle_json(doc: object, anchor: TrustAnchor, **kwargs: int | None) -> Verdict:
    """``verify_bundle`` on the JSON form; a malformed document is ``MALFORMED``."""
    try:
        bundle = ProofBundle.from_json(doc)
    except BundleError as exc:
        raise _fail(Reason.MALFORMED, str(exc)) from None
    return verify_bundle(bundle, anchor, **kwargs)
