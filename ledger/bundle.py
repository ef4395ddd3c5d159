"""The proof bundle: everything a verifier needs to judge one commitment, offline.

A bundle for commitment C at the newest certified height H holds (docs/PROOFS.md §11):

- ``head``: header H (canonical bytes) and its commit certificate;
- ``valset_changes``: every header whose ``next_validator_set_hash`` differs from its
  ``validator_set_hash`` between genesis and H, each with its certificate and the new
  validator set — the chain of certified validator-set changes back to genesis;
- ``record`` and ``state_proof``: C's attestation record (or nothing) and the sparse
  Merkle proof of it (or of its absence) against header H's state root;
- ``attest`` (when there is a record): the signed ATTEST transaction, the header of
  its block with the RFC 6962 inclusion proof of its id in that block's tx root, and
  the history proof of that block in H's history root; ``revoke`` likewise for the
  transaction that revoked a revoked record: the issuer's REVOKE, or the GOV_VOTE (or
  GOV_PROPOSE) that decided a governance revocation;
- ``proposal`` (a governance revocation only): the proposal's id and record, with the
  sparse Merkle proof of the record against H's state root, so a verifier counts the
  yes votes itself;
- ``consent`` (a document bound to a data subject, docs/CONSENT.md §5; null otherwise):
  the grant's id and record with its sparse Merkle proof against H's state root, the
  subject's signed ``CONSENT_GRANT`` and the member's signed ``ACCESS``, each with its
  inclusion proofs.

``to_json``/``from_json`` give the JSON form served by ``getAttestationProof``: binary
values are lowercase hex, and objects are the canonical encodings (hex) of the ledger
types, so a verifier hashes exactly the bytes that were signed. Parsing is strict: an
unknown or missing field, a wrong type or malformed hex raises ``BundleError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ledger.errors import DecodeError

BUNDLE_VERSION = 3
_HEX = re.compile(r"(?:[0-9a-f]{2})*")
MAX_HEX_CHARS = 2 * 1024 * 1024


class BundleError(DecodeError):
    """A bundle that is not well-formed JSON of the documented shape."""


@dataclass(frozen=True)
class CertifiedHeader:
    header: bytes  # canonical BlockHeader encoding
    certificate: bytes  # canonical CommitCertificate encoding


@dataclass(frozen=True)
class ValsetChange:
    header: bytes
    certificate: bytes
    next_validators: bytes  # canonical ValidatorSet encoding


@dataclass(frozen=True)
class IncludedTx:
    tx: bytes  # canonical Transaction encoding
    header: bytes  # header of the block that holds it
    index: int  # position in that block
    tx_proof: tuple[bytes, ...]  # RFC 6962 inclusion of the tx id in header.tx_root
    history_proof: tuple[bytes, ...]  # inclusion of the block id in head's history_root


@dataclass(frozen=True)
class ProposalProof:
    """A governance proposal's record in the head's state, and its proof."""

    proposal_id: bytes  # the GOV_PROPOSE transaction's id
    record: bytes  # canonical ProposalRecord encoding
    state_proof: dict[str, Any]  # the JSON form of ledger.smt.Proof


@dataclass(frozen=True)
class ConsentProof:
    """The recorded access a bound document's bundle carries (docs/CONSENT.md §5)."""

    grant_id: bytes  # the CONSENT_GRANT transaction's id
    record: bytes  # canonical GrantRecord encoding
    state_proof: dict[str, Any]  # the JSON form of ledger.smt.Proof, key grant_key(grant_id)
    grant_tx: IncludedTx  # the subject's signed CONSENT_GRANT
    access: IncludedTx  # the member's signed ACCESS

    def to_json(self) -> dict[str, Any]:
        return {
            "grant_id": self.grant_id.hex(),
            "record": self.record.hex(),
            "state_proof": self.state_proof,
            "grant_tx": _included_json(self.grant_tx),
            "access": _included_json(self.access),
        }


def _included_json(x: IncludedTx) -> dict[str, Any]:
    return {
        "tx": x.tx.hex(),
        "header": x.header.hex(),
        "index": x.index,
        "tx_proof": [h.hex() for h in x.tx_proof],
        "history_proof": [h.hex() for h in x.history_proof],
    }


@dataclass(frozen=True)
class ProofBundle:
    chain_id: str
    commitment: bytes
    head: CertifiedHeader
    valset_changes: tuple[ValsetChange, ...]
    record: bytes | None
    state_proof: dict[str, Any]  # the JSON form of ledger.smt.Proof
    attest: IncludedTx | None = None
    revoke: IncludedTx | None = None
    proposal: ProposalProof | None = None
    consent: ConsentProof | None = None

    def to_json(self) -> dict[str, Any]:
        def inc(x: IncludedTx | None) -> dict[str, Any] | None:
            return None if x is None else _included_json(x)

        return {
            "version": BUNDLE_VERSION,
            "chain_id": self.chain_id,
            "commitment": self.commitment.hex(),
            "head": {"header": self.head.header.hex(), "certificate": self.head.certificate.hex()},
            "valset_changes": [
                {
                    "header": c.header.hex(),
                    "certificate": c.certificate.hex(),
                    "next_validators": c.next_validators.hex(),
                }
                for c in self.valset_changes
            ],
            "record": None if self.record is None else self.record.hex(),
            "state_proof": self.state_proof,
            "attest": inc(self.attest),
            "revoke": inc(self.revoke),
            "proposal": None
            if self.proposal is None
            else {
                "id": self.proposal.proposal_id.hex(),
                "record": self.proposal.record.hex(),
                "state_proof": self.proposal.state_proof,
            },
            "consent": None if self.consent is None else self.consent.to_json(),
        }

    @classmethod
    def from_json(cls, doc: Any) -> ProofBundle:
        d = _obj(
            doc,
            "bundle",
            {
                "version",
                "chain_id",
                "commitment",
                "head",
                "valset_changes",
                "record",
                "state_proof",
                "attest",
                "revoke",
                "proposal",
                "consent",
            },
        )
        if type(d["version"]) is not int or d["version"] != BUNDLE_VERSION:  # not 3.0
            raise BundleError(f"bundle version {d['version']!r} is not {BUNDLE_VERSION}")
        if not isinstance(d["chain_id"], str):
            raise BundleError("chain_id: expected a string")
        head = _obj(d["head"], "head", {"header", "certificate"})
        changes = []
        if not isinstance(d["valset_changes"], list) or len(d["valset_changes"]) > 10_000:
            raise BundleError("valset_changes: expected a list")
        for i, c in enumerate(d["valset_changes"]):
            c = _obj(c, f"valset_changes[{i}]", {"header", "certificate", "next_validators"})
            changes.append(
                ValsetChange(
                    _hex(c["header"], "header"),
                    _hex(c["certificate"], "certificate"),
                    _hex(c["next_validators"], "next_validators"),
                )
            )
        if not isinstance(d["state_proof"], dict):
            raise BundleError("state_proof: expected an object")
        return cls(
            chain_id=d["chain_id"],
            commitment=_hex(d["commitment"], "commitment", 32),
            head=CertifiedHeader(
                _hex(head["header"], "head.header"), _hex(head["certificate"], "head.certificate")
            ),
            valset_changes=tuple(changes),
            record=None if d["record"] is None else _hex(d["record"], "record"),
            state_proof=d["state_proof"],
            attest=_included(d["attest"], "attest"),
            revoke=_included(d["revoke"], "revoke"),
            proposal=_proposal(d["proposal"]),
            consent=_consent(d["consent"]),
        )


def _obj(value: Any, what: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BundleError(f"{what}: expected an object")
    missing, unknown = keys - set(value), set(value) - keys
    if missing:
        raise BundleError(f"{what}: missing fields {sorted(missing)}")
    if unknown:
        raise BundleError(f"{what}: unknown fields {sorted(unknown)}")
    return value


def _hex(value: Any, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str) or len(value) > MAX_HEX_CHARS or not _HEX.fullmatch(value):
        raise BundleError(f"{what}: expected lowercase hex")
    raw = bytes.fromhex(value)
    if size is not None and len(raw) != size:
        raise BundleError(f"{what}: expected {size} bytes")
    return raw


def _included(value: Any, what: str) -> IncludedTx | None:
    if value is None:
        return None
    d = _obj(value, what, {"tx", "header", "index", "tx_proof", "history_proof"})
    if type(d["index"]) is not int or d["index"] < 0:
        raise BundleError(f"{what}.index: expected a non-negative integer")
    for name in ("tx_proof", "history_proof"):
        if not isinstance(d[name], list) or len(d[name]) > 64:
            raise BundleError(f"{what}.{name}: expected a list of at most 64 hashes")
    return IncludedTx(
        _hex(d["tx"], f"{what}.tx"),
        _hex(d["header"], f"{what}.header"),
        d["index"],
        tuple(_hex(h, f"{what}.tx_proof", 32) for h in d["tx_proof"]),
        tuple(_hex(h, f"{what}.history_proof", 32) for h in d["history_proof"]),
    )


def _proposal(value: Any) -> ProposalProof | None:
    if value is None:
        return None
    d = _obj(value, "proposal", {"id", "record", "state_proof"})
    if not isinstance(d["state_proof"], dict):
        raise BundleError("proposal.state_proof: expected an object")
    return ProposalProof(
        _hex(d["id"], "proposal.id", 32), _hex(d["record"], "proposal.record"), d["state_proof"]
    )


def _consent(value: Any) -> ConsentProof | None:
    if value is None:
        return None
    d = _obj(value, "consent", {"grant_id", "record", "state_proof", "grant_tx", "access"})
    if not isinstance(d["state_proof"], dict):
        raise BundleError("consent.state_proof: expected an object")
    grant_tx = _included(d["grant_tx"], "consent.grant_tx")
    access = _included(d["access"], "consent.access")
    if grant_tx is None or access is None:
        raise BundleError("consent: grant_tx and access are required")
    return ConsentProof(
        _hex(d["grant_id"], "consent.grant_id", 32),
        _hex(d["record"], "consent.record"),
        d["state_proof"],
        grant_tx,
        access,
    )
