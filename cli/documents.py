"""What issuers and verifiers run: ``dvp attest``, ``dvp revoke``, ``dvp verify``.

Each is a plain function returning data (used by the CLI and the demo) plus the
argparse wiring in ``cli.main``. Verification trusts only the genesis file: the node
serves a proof bundle and ``ledger.verify`` checks it offline.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.common import EXPIRY_BLOCKS
from cli.rpc_client import RpcCallError, RpcClient
from ledger.commitment import commitment_from_digest, decode_code, digest_file, encode_code
from ledger.crypto import KeyPair
from ledger.genesis import read_genesis
from ledger.receipt import Receipt
from ledger.receipt import build as build_receipt
from ledger.records import Status
from ledger.transaction import Access
from ledger.types import Attest, Genesis, Payload, Revoke, RevokeReason, Transaction
from ledger.verify import (
    DEFAULT_MAX_AGE_MS,
    Reason,
    TrustAnchor,
    Verdict,
    VerificationError,
    verify_bundle_json,
)


@dataclass
class Attestation:
    commitment: bytes
    code: str
    tx_id: str
    status: str
    height: int | None


def chain_and_expiry(client: RpcClient) -> tuple[str, int]:
    """The chain id and an expiry height for a new transaction (the node's height + 500)."""
    st = client.call("status")
    return str(st["chain_id"]), int(st["height"]) + EXPIRY_BLOCKS


def sign_and_submit(
    client: RpcClient,
    key: KeyPair,
    payload: Payload,
    *,
    wait: bool = True,
    method: str = "submitTransaction",
) -> dict[str, Any]:
    """Sign ``payload`` with ``key`` (a fresh nonce, ``chain_and_expiry``) and submit it
    with ``method``; the node's answer (``tx_id``, ``status``, ``height``)."""
    chain_id, expiry = chain_and_expiry(client)
    tx = Transaction(chain_id, key.public_key, secrets.randbits(63), expiry, payload).signed(key)
    res: dict[str, Any] = client.call(method, tx=tx.encode().hex(), wait=wait)
    return res


def attest_file(
    client: RpcClient,
    key: KeyPair,
    path: Path,
    doc_type: str,
    *,
    valid_until_ms: int = 0,
    wait: bool = True,
    salt: bytes | None = None,
    subject: bytes = b"",
) -> Attestation:
    """Commit to ``path`` with a fresh salt and submit the signed ATTEST; ``subject``: the
    data subject's public key to bind the document to (docs/CONSENT.md §2.1)."""
    salt = salt or secrets.token_bytes(32)
    commitment = commitment_from_digest(salt, digest_file(path))
    attest = Attest(doc_type, commitment, int(time.time() * 1000), valid_until_ms, b"", subject)
    res = sign_and_submit(client, key, attest, wait=wait)
    return Attestation(
        commitment, encode_code(salt), res["tx_id"], res["status"], res.get("height")
    )


def revoke(
    client: RpcClient, key: KeyPair, commitment: bytes, reason: RevokeReason, *, wait: bool = True
) -> dict[str, Any]:
    return sign_and_submit(client, key, Revoke(commitment, reason), wait=wait)


def commitment_of(path: Path, code: str) -> bytes:
    """The commitment a file and its verification code give (``CodeError`` for a bad
    code): what the issuer attested, computed here so the file never leaves."""
    return commitment_from_digest(decode_code(code), digest_file(path))


@dataclass(frozen=True)
class Checked:
    """One verification: the bundle as the node served it and the answer reached, as of
    ``checked_at_ms`` (this computer's clock); what a receipt records."""

    genesis: Genesis
    commitment: bytes
    bundle: dict[str, Any]
    result: Verdict | VerificationError
    checked_at_ms: int
    max_age_ms: int
    access: str | None = None  # the ACCESS recorded for a document bound to its subject

    def receipt(self) -> Receipt:
        return build_receipt(
            self.bundle,
            self.result,
            self.genesis,
            self.commitment,
            checked_at_ms=self.checked_at_ms,
            max_age_ms=self.max_age_ms,
        )


#: The RPC error of a document bound to a data subject, asked for without an access.
CONSENT_REQUIRED = -32007


class ConsentNeeded(Exception):
    """The document is bound to its data subject and no access could be recorded:
    ``reason`` is the node's (``no_grant``, ``grant_revoked``...) or the ledger's code."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def _member_of(client: RpcClient, key: KeyPair) -> str | None:
    """The member id of ``key`` (from ``getMembers``, if this caller may list them)."""
    try:
        members = client.call("getMembers")["members"]
    except RpcCallError:
        return None
    return next((m["member_id"] for m in members if m["key"] == key.public_key.hex()), None)


def record_access(
    client: RpcClient, key: KeyPair, grant_id: bytes, commitment: bytes, purpose: str
) -> str:
    """Sign and submit the ACCESS (docs/CONSENT.md §2.5), wait for its commit; its id.
    ``RpcCallError`` (-32004 with the ledger's code) if the grant does not allow it."""
    return str(sign_and_submit(client, key, Access(grant_id, commitment, purpose))["tx_id"])


def fetch_bundle(
    client: RpcClient,
    commitment: bytes,
    *,
    member_key: KeyPair | None = None,
    grant_id: bytes | None = None,
) -> tuple[dict[str, Any], str | None]:
    """The proof bundle for ``commitment`` and the access it was served for (None for a
    document not bound to a subject). For a bound one, with ``member_key``: record an
    access under ``grant_id`` (default: the caller's first live grant the node names),
    then fetch the bundle for it. ``ConsentNeeded`` when there is no way in."""
    try:
        return client.call("getAttestationProof", commitment=commitment.hex()), None
    except RpcCallError as exc:
        if exc.code != CONSENT_REQUIRED:
            raise
        data = exc.data if isinstance(exc.data, dict) else {}
        reason, grants = str(data.get("reason", "consent_required")), data.get("grants") or []
        message = str(exc)
        if member_key is None:
            raise ConsentNeeded(message, reason) from None
    member = _member_of(client, member_key)
    usable = [g for g in grants if member is None or g.get("grantee") == member]
    if grant_id is not None:
        usable = [g for g in usable if g["grant_id"] == grant_id.hex()]
        if not usable:
            raise ConsentNeeded(
                f"grant {grant_id.hex()[:16]}... is not a live grant of yours for this "
                f"document ({reason}: {message})",
                reason,
            )
    if not usable:
        raise ConsentNeeded(message, reason)
    g = usable[0]
    try:
        access = record_access(
            client, member_key, bytes.fromhex(g["grant_id"]), commitment, g["purpose"]
        )
    except RpcCallError as refused:
        code = refused.data.get("code") if isinstance(refused.data, dict) else None
        if refused.code == -32004 and code:
            raise ConsentNeeded(f"the ledger refused the access: {refused}", code) from None
        raise
    bundle = client.call("getAttestationProof", commitment=commitment.hex(), access=access)
    return bundle, access


def check_file(
    client: RpcClient,
    genesis_path: Path,
    path: Path,
    code: str,
    *,
    max_age_ms: int = DEFAULT_MAX_AGE_MS,
    member_key: KeyPair | None = None,
    grant_id: bytes | None = None,
) -> Checked:
    """Hash the file locally, fetch the bundle, verify it offline against the genesis, as
    of this computer's clock; the answer is a ``Verdict`` or the ``VerificationError``
    (the proof does not verify, or its newest certified block is over ``max_age_ms`` old).
    A document bound to a data subject needs ``member_key`` (``fetch_bundle``)."""
    commitment = commitment_of(path, code)
    genesis = read_genesis(genesis_path)
    bundle, access = fetch_bundle(client, commitment, member_key=member_key, grant_id=grant_id)
    now_ms = int(time.time() * 1000)
    result: Verdict | VerificationError
    try:
        result = verify_bundle_json(
            bundle, TrustAnchor.from_genesis(genesis), now_ms=now_ms, max_age_ms=max_age_ms
        )
    except VerificationError as exc:
        result = exc
    return Checked(genesis, commitment, bundle, result, now_ms, max_age_ms, access)


def verify_file(
    client: RpcClient,
    genesis_path: Path,
    path: Path,
    code: str,
    *,
    max_age_ms: int = DEFAULT_MAX_AGE_MS,
    member_key: KeyPair | None = None,
    grant_id: bytes | None = None,
) -> Verdict:
    """``check_file``'s verdict; ``VerificationError`` if there is none."""
    result = check_file(
        client,
        genesis_path,
        path,
        code,
        max_age_ms=max_age_ms,
        member_key=member_key,
        grant_id=grant_id,
    ).result
    if isinstance(result, VerificationError):
        raise result
    return result


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ms / 1000))


def _as_of(height: int, age_ms: int) -> str:
    return f"certified height {height}, {age_ms / 1000:.1f} s old"


def describe(v: Verdict) -> str:
    """One paragraph a bank officer can read."""
    as_of = _as_of(v.height, v.head_age_ms)
    if v.status == Status.NOT_FOUND:
        return (
            "NOT_FOUND: no issuer ever attested this document with this code (a changed "
            f"copy, or the wrong code), as proven at {as_of}."
        )
    head = {Status.VALID: "VALID", Status.REVOKED: "REVOKED", Status.EXPIRED: "EXPIRED"}[v.status]
    when = _utc(v.issued_at_ms) if v.issued_at_ms else ""
    text = (
        f"{head}: {v.doc_type} attested by {v.issuer} on {when} (block {v.attested_height}),"
        f" checked against {as_of}"
    )
    if v.status == Status.REVOKED:
        reason = RevokeReason(v.revoke_reason or 0).name.lower().replace("_", " ")
        by = (
            f"by a consortium vote (proposal {v.revoke_proposal.hex()[:16]}…, decided by "
            f"{v.revoked_by}'s vote)"
            if v.revoke_proposal
            else f"by its issuer {v.revoked_by}"
        )
        text += f"; revoked {by} at block {v.revoked_height} ({reason})"
    if v.status == Status.EXPIRED and v.valid_until_ms:
        text += f"; valid until {_utc(v.valid_until_ms)}"
    if v.access is not None:  # a document bound to its data subject (docs/CONSENT.md §5)
        a = v.access
        text += f"; {a.describe()} by {a.grantee}, {_utc(a.time_ms)}"
    return text + "."


def describe_failure(exc: VerificationError) -> str:
    """The paragraph for an answer that is no verdict: UNVERIFIABLE or INVALID."""
    if exc.reason == Reason.STATE_TOO_OLD and exc.head is not None:
        limit = exc.head.max_age_ms or 0
        return (
            f"UNVERIFIABLE (state too old): the node's newest certified block (height "
            f"{exc.head.height}, {_utc(exc.head.block_time_ms)}) is "
            f"{exc.head.age_ms / 1000:.1f} s old by this computer's clock; at most "
            f"{limit / 1000:g} s accepted (--max-age). The node may be cut off from the "
            "consortium: ask again shortly, or ask another member's node."
        )
    if exc.reason == Reason.CONSENT_MISSING:
        return (
            "UNVERIFIABLE (consent missing): this document is bound to its data subject, "
            f"and the node's answer carries no access recorded under a grant ({exc.message}). "
            "Verify with your member key (dvp verify --key MEMBER.json) so the access is "
            "recorded under the subject's grant (docs/CONSENT.md)."
        )
    return (
        f"INVALID: the proof the node sent does not verify against the genesis "
        f"({exc.reason.value}: {exc.message}). Do not rely on this node's answers; tell "
        "its operator."
    )


__all__ = [
    "Attestation",
    "Checked",
    "ConsentNeeded",
    "VerificationError",
    "attest_file",
    "check_file",
    "commitment_of",
    "describe",
    "describe_failure",
    "fetch_bundle",
    "record_access",
    "revoke",
    "sign_and_submit",
    "verify_file",
]
