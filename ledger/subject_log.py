"""The data subject's log: every grant, revocation and access under its keys, proven
(docs/CONSENT.md §6; served by ``getSubjectLog``, checked by ``dvp subject log``).

- ``query_message`` / ``sign_query`` / ``query_signature_ok``: the signed request. Only
  a holder of a subject key may ask for that key's log: the signature is over
  ``"dvp/subject-query/v1" || 0x00 || encode([chain_id, key, issued_at_ms])``.
- ``build_subject_log(prover, keys)``: the answer against the newest certified head --
  the head and the validator-set changes leading to it (as in a bundle), then per key its
  subject record with a state proof, and per grant its record with a state proof, the
  signed ``CONSENT_GRANT``, the ``CONSENT_REVOKE`` if revoked, and every ``ACCESS``, each
  with its inclusion proof.
- ``verify_subject_log(doc, anchor)``: checks all of it against the trust anchor (the
  genesis) and returns the events (``LogEntry``), oldest first. A node cannot hide a
  grant (the subject record lists them all, proven), hide an access (the grant record
  lists them all, proven) or invent one (each is a signed transaction in a certified
  block). ``VerificationError`` (``ledger.verify``) says what failed.

Pure: no I/O and no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.bundle import BundleError, CertifiedHeader, IncludedTx, ProofBundle, ValsetChange
from ledger.codec import Domain, encode
from ledger.consent_records import GrantRecord, SubjectRecord, grant_key, subject_key
from ledger.crypto import KeyPair, verify
from ledger.errors import DecodeError
from ledger.prove import Prover
from ledger.smt import Proof, verify_proof
from ledger.transaction import Access, ConsentGrant, ConsentRevoke
from ledger.types import BlockHeader
from ledger.verify import (
    HeadInfo,
    Reason,
    TrustAnchor,
    VerificationError,
    _included,
    verify_head,
)

__all__ = [
    "LOG_VERSION",
    "MAX_QUERY_KEYS",
    "QUERY_SKEW_MS",
    "LogEntry",
    "SubjectLog",
    "build_subject_log",
    "query_message",
    "query_signature_ok",
    "sign_query",
    "verify_subject_log",
]

LOG_VERSION = 1
#: A request signed more than this far from the node's clock is refused (replay window).
QUERY_SKEW_MS = 5 * 60_000
#: Keys one request may ask about (a subject holds one key per document).
MAX_QUERY_KEYS = 64


def query_message(chain_id: str, key: bytes, issued_at_ms: int) -> bytes:
    """What a subject key signs to ask for its log (under ``Domain.SUBJECT_QUERY``)."""
    return encode([chain_id, key, issued_at_ms])


def sign_query(key: KeyPair, chain_id: str, issued_at_ms: int) -> bytes:
    return key.sign(Domain.SUBJECT_QUERY, query_message(chain_id, key.public_key, issued_at_ms))


def query_signature_ok(chain_id: str, key: bytes, issued_at_ms: int, signature: bytes) -> bool:
    return verify(key, Domain.SUBJECT_QUERY, query_message(chain_id, key, issued_at_ms), signature)


# -- building (the node) -------------------------------------------------------
def _inc_json(x: IncludedTx) -> dict[str, Any]:
    return {
        "tx": x.tx.hex(),
        "header": x.header.hex(),
        "index": x.index,
        "tx_proof": [h.hex() for h in x.tx_proof],
        "history_proof": [h.hex() for h in x.history_proof],
    }


def build_subject_log(prover: Prover, keys: list[bytes]) -> dict[str, Any]:
    """The log of ``keys`` at the newest certified head (the JSON of ``getSubjectLog``).

    Raises ``ledger.errors.BodyPruned`` when a transaction it must carry is in a block
    body this node pruned (as ``Prover.bundle`` does)."""
    head = prover.refresh()
    store = prover.ledger.store
    header, cert = store.get_header_bytes(head), store.get_certificate_bytes(head)
    if header is None or cert is None:
        raise KeyError(f"no certified header at height {head}")
    # The same chain of validator-set changes a bundle carries (Prover caches them).
    changes = [prover.valset_change(h) for h in prover.changes if h < head]
    tree = prover.ledger.tree
    subjects = []
    for key in keys:
        raw, proof = tree.get_with_proof(subject_key(key), head)
        grants = []
        if raw is not None:
            for gid in SubjectRecord.decode(raw).grants:
                graw, gproof = tree.get_with_proof(grant_key(gid), head)
                if graw is None:
                    raise KeyError(f"grant {gid.hex()} is listed but has no record")
                rec = GrantRecord.decode(graw)
                revoke = None
                if rec.revoked_height:
                    revoke = _inc_json(
                        prover.included(rec.revoked_height, rec.revoke_position, head)
                    )
                grants.append(
                    {
                        "grant_id": gid.hex(),
                        "record": graw.hex(),
                        "state_proof": gproof.to_json(),
                        "grant_tx": _inc_json(prover.included(rec.height, rec.position, head)),
                        "revoke_tx": revoke,
                        "accesses": [
                            _inc_json(prover.included(a.height, a.position, head))
                            for a in rec.accesses
                        ],
                    }
                )
        subjects.append(
            {
                "key": key.hex(),
                "record": None if raw is None else raw.hex(),
                "state_proof": proof.to_json(),
                "grants": grants,
            }
        )
    return {
        "version": LOG_VERSION,
        "chain_id": prover.ledger.chain_id,
        "head": {"header": header.hex(), "certificate": cert.hex()},
        "valset_changes": [
            {
                "header": c.header.hex(),
                "certificate": c.certificate.hex(),
                "next_validators": c.next_validators.hex(),
            }
            for c in changes
        ],
        "subjects": subjects,
    }


# -- verifying (the subject) ---------------------------------------------------
@dataclass(frozen=True)
class LogEntry:
    """One proven event under a subject key: ``event`` is "grant", "revoke" or "access".

    ``member``: the grantee (for an access, the member whose key signed it -- the ledger
    admitted it only from the grantee). ``time_ms``: the block's time."""

    subject: bytes
    event: str
    grant_id: bytes
    member: str
    purpose: str
    height: int
    time_ms: int
    tx_id: bytes
    commitment: bytes | None  # the document an access verified
    grant: GrantRecord  # the grant as of the head

    def to_json(self) -> dict[str, Any]:
        g = self.grant
        return {
            "subject": self.subject.hex(),
            "event": self.event,
            "grant_id": self.grant_id.hex(),
            "member": self.member,
            "purpose": self.purpose,
            "height": self.height,
            "time_ms": self.time_ms,
            "tx_id": self.tx_id.hex(),
            "commitment": None if self.commitment is None else self.commitment.hex(),
            "uses_left": g.uses_left,
            "not_after_ms": g.not_after_ms,
            "revoked_height": g.revoked_height or None,
        }


@dataclass(frozen=True)
class SubjectLog:
    """A verified log: the head it is proven at, the documents bound to each key, and
    the events oldest first."""

    head: HeadInfo
    keys: tuple[bytes, ...]
    entries: tuple[LogEntry, ...]
    documents: dict[bytes, tuple[bytes, ...]]


def _fail(reason: Reason, message: str) -> VerificationError:
    return VerificationError(reason, message)


def _hex(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _fail(Reason.MALFORMED, f"{what}: expected hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise _fail(Reason.MALFORMED, f"{what}: not hex") from None


def _inc(value: Any, what: str) -> IncludedTx:
    if not isinstance(value, dict) or set(value) != {
        "tx",
        "header",
        "index",
        "tx_proof",
        "history_proof",
    }:
        raise _fail(Reason.MALFORMED, f"{what}: not an included transaction")
    index = value["index"]
    if type(index) is not int or index < 0:
        raise _fail(Reason.MALFORMED, f"{what}.index: expected a natural number")
    proofs = []
    for name in ("tx_proof", "history_proof"):
        items = value[name]
        if not isinstance(items, list):
            raise _fail(Reason.MALFORMED, f"{what}.{name}: expected a list")
        proofs.append(tuple(_hex(h, f"{what}.{name}[]") for h in items))
    return IncludedTx(
        _hex(value["tx"], f"{what}.tx"),
        _hex(value["header"], f"{what}.header"),
        index,
        proofs[0],
        proofs[1],
    )


def _proven(root: bytes, key: bytes, raw: bytes | None, proof: Any, what: str) -> None:
    try:
        p = Proof.from_json(proof)
    except DecodeError as exc:
        raise _fail(Reason.MALFORMED, f"{what} state proof: {exc}") from None
    if not verify_proof(root, key, raw, p):
        raise _fail(Reason.STATE_ROOT_MISMATCH, f"{what} is not proven by the head's state root")


def _head(doc: dict[str, Any], anchor: TrustAnchor) -> BlockHeader:
    """The certified head, through ``ledger.verify``'s own validator-chain checks."""
    try:
        head = CertifiedHeader(
            _hex(doc["head"]["header"], "head.header"),
            _hex(doc["head"]["certificate"], "head.certificate"),
        )
        changes = tuple(
            ValsetChange(
                _hex(c["header"], "valset_changes[].header"),
                _hex(c["certificate"], "valset_changes[].certificate"),
                _hex(c["next_validators"], "valset_changes[].next_validators"),
            )
            for c in doc["valset_changes"]
        )
    except (KeyError, TypeError) as exc:
        raise _fail(Reason.MALFORMED, f"head or valset_changes: {exc}") from None
    # verify_head reads only a bundle's chain id, head and changes.
    shell = ProofBundle(doc["chain_id"], bytes(32), head, changes, None, {})
    try:
        return verify_head(shell, anchor)[0]
    except BundleError as exc:  # pragma: no cover - verify_head raises VerificationError
        raise _fail(Reason.MALFORMED, str(exc)) from None


def verify_subject_log(
    doc: Any, anchor: TrustAnchor, *, now_ms: int = 0, keys: list[bytes] | None = None
) -> SubjectLog:
    """Check ``doc`` (``build_subject_log``'s JSON) against ``anchor``; the proven
    events, oldest first. ``keys``: the keys asked about -- the answer must be for
    exactly those. ``now_ms`` only dates the head (its age); it judges nothing."""
    if not isinstance(doc, dict) or doc.get("version") != LOG_VERSION:
        raise _fail(Reason.MALFORMED, f"not a subject log of version {LOG_VERSION}")
    chain = anchor.chain_id
    if doc.get("chain_id") != chain:
        raise _fail(Reason.WRONG_CHAIN, f"the log is for chain {doc.get('chain_id')!r}")
    head = _head(doc, anchor)
    root = head.state_root
    subjects = doc.get("subjects")
    if not isinstance(subjects, list):
        raise _fail(Reason.MALFORMED, "subjects: expected a list")
    asked = [_hex(s.get("key") if isinstance(s, dict) else None, "key") for s in subjects]
    if keys is not None and asked != list(keys):
        raise _fail(Reason.RECORD_MISMATCH, "the log is not for the keys asked about")
    entries: list[LogEntry] = []
    documents: dict[bytes, tuple[bytes, ...]] = {}
    for key, s in zip(asked, subjects, strict=True):
        short = key.hex()[:16]
        raw = None if s.get("record") is None else _hex(s["record"], "subject.record")
        _proven(root, subject_key(key), raw, s.get("state_proof"), f"subject record {short}")
        try:
            rec = SubjectRecord() if raw is None else SubjectRecord.decode(raw)
        except DecodeError as exc:
            raise _fail(Reason.MALFORMED, f"subject record {short}: {exc}") from None
        documents[key] = rec.commitments
        grants = s.get("grants")
        if not isinstance(grants, list) or [
            _hex(g.get("grant_id") if isinstance(g, dict) else None, "grant_id") for g in grants
        ] != list(rec.grants):
            raise _fail(
                Reason.RECORD_MISMATCH,
                f"the grants listed for key {short} are not those its proven record names",
            )
        for g in grants:
            entries.extend(_grant_entries(g, key, head, chain))
    entries.sort(key=lambda e: (e.height, e.time_ms, e.event != "grant"))
    info = HeadInfo(head.height, head.time_ms, now_ms or head.time_ms, None)
    return SubjectLog(info, tuple(asked), tuple(entries), documents)


def _grant_entries(g: dict[str, Any], key: bytes, head: BlockHeader, chain: str) -> list[LogEntry]:
    gid = _hex(g["grant_id"], "grant_id")
    what = f"grant {gid.hex()[:16]}"
    raw = _hex(g.get("record"), f"{what} record")
    _proven(head.state_root, grant_key(gid), raw, g.get("state_proof"), what)
    try:
        rec = GrantRecord.decode(raw)
    except DecodeError as exc:
        raise _fail(Reason.MALFORMED, f"{what}: {exc}") from None
    if rec.subject != key:
        raise _fail(Reason.RECORD_MISMATCH, f"{what} is another key's grant")
    tx, block = _included(
        _inc(g.get("grant_tx"), what), head, rec.height, rec.position, chain, what
    )
    if tx.tx_id != gid or tx.sender != key:
        raise _fail(Reason.SIGNER_MISMATCH, f"{what}: not the subject's own signed grant")
    if not isinstance(tx.payload, ConsentGrant) or tx.payload != rec.payload():
        raise _fail(Reason.RECORD_MISMATCH, f"{what}: the signed grant differs from its record")
    out = [
        LogEntry(
            key,
            "grant",
            gid,
            rec.grantee,
            rec.purpose,
            rec.height,
            block.time_ms,
            tx.tx_id,
            None,
            rec,
        )
    ]
    revoke = g.get("revoke_tx")
    if bool(rec.revoked_height) != (revoke is not None):
        raise _fail(Reason.RECORD_MISMATCH, f"{what}: revocation and record disagree")
    if revoke is not None:
        rtx, rblock = _included(
            _inc(revoke, f"{what} revocation"),
            head,
            rec.revoked_height,
            rec.revoke_position,
            chain,
            f"{what} revocation",
        )
        if rtx.sender != key or rtx.payload != ConsentRevoke(gid):
            raise _fail(Reason.SIGNER_MISMATCH, f"{what}: the revocation is not the subject's")
        out.append(
            LogEntry(
                key,
                "revoke",
                gid,
                rec.grantee,
                rec.purpose,
                rec.revoked_height,
                rblock.time_ms,
                rtx.tx_id,
                None,
                rec,
            )
        )
    accesses = g.get("accesses")
    if not isinstance(accesses, list) or len(accesses) != len(rec.accesses):
        raise _fail(Reason.RECORD_MISMATCH, f"{what}: the accesses shown are not those recorded")
    for i, (a, entry) in enumerate(zip(accesses, rec.accesses, strict=True)):
        where = f"{what} access {i}"
        atx, ablock = _included(_inc(a, where), head, entry.height, entry.position, chain, where)
        p = atx.payload
        if atx.sender != entry.member_key:
            raise _fail(Reason.SIGNER_MISMATCH, f"{where}: signed by another key than recorded")
        if (
            not isinstance(p, Access)
            or p.grant_id != gid
            or p.commitment not in rec.commitments
            or p.purpose != rec.purpose
        ):
            raise _fail(Reason.RECORD_MISMATCH, f"{where}: not an access under this grant")
        out.append(
            LogEntry(
                key,
                "access",
                gid,
                rec.grantee,
                rec.purpose,
                entry.height,
                ablock.time_ms,
                atx.tx_id,
                p.commitment,
                rec,
            )
        )
    return out
