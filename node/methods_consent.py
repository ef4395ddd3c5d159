"""The consent side of the RPC (docs/CONSENT.md §4, §6; registered by
``node.methods.build_registry``).

- ``require_consent``: the gate ``getAttestationProof`` and ``verifyAttestation`` pass
  through. For a commitment whose attestation binds a data subject, the call must name
  ``access``: a committed ACCESS to that commitment, recorded under a grant to the
  caller's organisation (when the node knows the caller: its API key's member id; in
  open mode any grantee's). Otherwise ``ConsentRequired`` (-32007) with the reason and the
  caller's live grants for the document, so the client can record an access.
- ``submitConsent`` (public: subjects have no API key): a signed ``CONSENT_GRANT`` or
  ``CONSENT_REVOKE``, admitted like ``submitTransaction`` (the ledger's rules decide).
- ``getSubjectLog`` (public, signed by each subject key asked about): the proven log of
  ``ledger.subject_log``. A request more than ``QUERY_SKEW_MS`` from the node's clock, or
  with a bad signature, is refused (-32602): only a key holder may list its log.

Reads are against the committed head (``node.ledger.head``), the state the bundle is
built at.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ledger.bundle import ProofBundle
from ledger.consent_records import (
    GrantRecord,
    SubjectRecord,
    grant_key,
    grant_live_at,
    subject_key,
)
from ledger.errors import DecodeError
from ledger.prove import ConsentProofError
from ledger.subject_log import (
    MAX_QUERY_KEYS,
    QUERY_SKEW_MS,
    build_subject_log,
    query_signature_ok,
)
from ledger.transaction import SUBJECT_KINDS, Access
from ledger.types import MAX_TX_BYTES, Transaction
from node.rpc import (
    Bool,
    Busy,
    CallContext,
    ConsentRequired,
    Hex,
    Int,
    InvalidParams,
    ListOf,
    MethodRegistry,
    NotFound,
    Param,
    Pruned,
    Rejected,
    Result,
    Timeout,
)
from node.rpc.auth import OPEN_PRINCIPAL
from node.rpc.params import Schema, json_type_name
from node.rpc_schemas import HEX32, INT, SUBJECT_LOG, nullable, obj

if TYPE_CHECKING:
    from node.view import NodeView as Node

__all__ = [
    "ACCESS_PARAM",
    "Submit",
    "add_consent_methods",
    "caller_member",
    "consented_bundle",
    "require_consent",
]

#: How ``submitConsent`` admits a transaction: ``node.methods``'s submitTransaction path.
Submit = Callable[[Transaction, bool, int], Awaitable[dict[str, Any]]]
MAX_WAIT_S = 60


def caller_member(ctx: CallContext) -> str | None:
    """The caller's organisation (its API key's member id); None when unknown (open
    mode without a key)."""
    p = ctx.principal
    if p is None or p.member_id == OPEN_PRINCIPAL.member_id:
        return None
    return p.member_id


def _grants_for(node: Node, subject: bytes, commitment: bytes) -> list[tuple[bytes, GrantRecord]]:
    """The grants ``subject`` signed that cover ``commitment``, oldest first."""
    state = node.ledger.head
    raw = state.read(subject_key(subject))
    out = []
    for gid in () if raw is None else SubjectRecord.decode(raw).grants:
        graw = state.read(grant_key(gid))
        if graw is not None:
            rec = GrantRecord.decode(graw)
            if commitment in rec.commitments:
                out.append((gid, rec))
    return out


def _grant_json(gid: bytes, rec: GrantRecord) -> dict[str, Any]:
    return {
        "grant_id": gid.hex(),
        "grantee": rec.grantee,
        "purpose": rec.purpose,
        "uses_left": rec.uses_left,
        "not_after_ms": rec.not_after_ms,
    }


def require_consent(node: Node, ctx: CallContext, commitment: bytes, access: bytes | None) -> bool:
    """Pass (True: the document is bound and ``access`` fits; False: it is not bound) or
    raise ``ConsentRequired`` (docs/CONSENT.md §4)."""
    state = node.ledger.head
    rec = state.attestation(commitment)
    if rec is None or not rec.subject:
        return False
    member = caller_member(ctx)
    mine = [
        (gid, g) for gid, g in _grants_for(node, rec.subject, commitment)
        if member is None or g.grantee == member
    ]  # fmt: skip
    # "Now" as at admission: the next block after the head, at the head's time.
    refusals = [grant_live_at(g, state.height + 1, 0, state.time_ms) for _, g in mine]
    live = [_grant_json(gid, g) for (gid, g), why in zip(mine, refusals, strict=True) if not why]
    # Open mode: the node cannot tell who calls, so every grantee's grants are listed.
    who = f"{member}" if member else "the caller (unknown in open mode: any grantee)"
    if access is None:
        if live:
            raise ConsentRequired(
                f"this document is bound to its data subject: record an access under one "
                f"of the {len(live)} live grant(s) listed for {who} and pass its id as access",
                "no_access",
                live,
            )
        if not mine:
            raise ConsentRequired(
                f"this document is bound to its data subject, who granted {who} no consent",
                "no_grant",
                [],
            )
        code, message = next(r for r in reversed(refusals) if r is not None)
        raise ConsentRequired(f"no live consent for {who}: {message}", code, [])
    store = node.ledger.store
    loc = store.tx_location(access)
    tx = store.get_tx(access) if loc is not None else None
    if loc is None or tx is None:
        raise ConsentRequired(f"no committed access {access.hex()[:16]}", "access_not_found", live)
    p = tx.payload
    if not isinstance(p, Access) or p.commitment != commitment:
        raise ConsentRequired(
            f"transaction {access.hex()[:16]} is not an access to this document",
            "access_mismatch",
            live,
        )
    graw = state.read(grant_key(p.grant_id))
    grant = GrantRecord.decode(graw) if graw is not None else None
    if grant is None or not any(
        (a.height, a.position) == loc and a.member_key == tx.sender for a in grant.accesses
    ):
        raise ConsentRequired(
            "that access is not recorded under its grant", "access_mismatch", live
        )
    if member is not None and grant.grantee != member:
        raise ConsentRequired(
            f"that access was recorded by {grant.grantee}, not {member}", "wrong_grantee", live
        )
    return True


#: The optional param of ``getAttestationProof`` and ``verifyAttestation``.
ACCESS_PARAM = Param(
    "access",
    Hex(32),
    default=None,
    description="for a document bound to a data subject: the id of your committed ACCESS "
    "transaction to it (docs/CONSENT.md §4)",
)


def consented_bundle(
    node: Node, ctx: CallContext, commitment: bytes, access: bytes | None
) -> ProofBundle:
    """The bundle for ``commitment``, through the consent gate (``require_consent``)."""
    if require_consent(node, ctx, commitment, access):
        try:
            return node.prover.bundle(commitment, access=access)
        except ConsentProofError as exc:
            raise ConsentRequired(str(exc), "access_mismatch", []) from None
    return node.prover.bundle(commitment)


class _SignedKey(Schema):
    """``{"key": hex32, "signature": hex64}``: a subject key and its query signature."""

    def check(self, value: object, where: str) -> tuple[bytes, bytes]:
        if type(value) is not dict or set(value) != {"key", "signature"}:
            raise InvalidParams(
                f"invalid param '{where}': expected an object with key and signature, got "
                f"{json_type_name(value)}",
                param=where,
                reason="expected {key, signature}",
            )
        return (
            Hex(32).check(value["key"], f"{where}.key"),
            Hex(64).check(value["signature"], f"{where}.signature"),
        )

    def json_schema(self) -> dict[str, Any]:
        return obj(
            key={"type": "string", "pattern": "^[0-9a-f]{64}$"},
            signature={"type": "string", "pattern": "^[0-9a-f]{128}$"},
        )


def add_consent_methods(rpc: MethodRegistry, node: Node, submit: Submit) -> None:
    @rpc.method(
        "submitConsent",
        Param(
            "tx",
            Hex(min_length=1, max_length=MAX_TX_BYTES),
            description="a signed CONSENT_GRANT or CONSENT_REVOKE, hex (signed by the subject key)",
        ),
        Param("wait", Bool(), default=False, description="return only once committed"),
        Param("timeout_s", Int(1, MAX_WAIT_S), default=30),
        summary="A data subject's grant or revocation (public: subjects have no API key; "
        "the ledger's rules decide, docs/CONSENT.md §4)",
        result=Result(
            "result",
            "where the transaction stands",
            obj(tx_id=HEX32, status={"enum": ["pending", "committed"]}, height=nullable(INT)),
        ),
        errors=(Busy, Rejected, Timeout, InvalidParams),
        timeout_s=MAX_WAIT_S + 5,
    )
    async def submit_consent(
        ctx: CallContext, tx: bytes, wait: bool, timeout_s: int
    ) -> dict[str, Any]:
        try:
            t = Transaction.decode(tx)
        except DecodeError as exc:
            raise InvalidParams(
                f"invalid param 'tx': not a transaction ({exc})", param="tx", reason=str(exc)
            ) from None
        if t.kind not in SUBJECT_KINDS:
            raise InvalidParams(
                "invalid param 'tx': submitConsent takes CONSENT_GRANT or CONSENT_REVOKE "
                f"only, not {t.kind.name} (use submitTransaction)",
                param="tx",
                reason="not a consent transaction",
            )
        return await submit(t, wait, timeout_s)

    @rpc.method(
        "getSubjectLog",
        Param(
            "keys",
            ListOf(_SignedKey(), min_items=1, max_items=MAX_QUERY_KEYS),
            description="the subject keys, each with its signature over "
            '"dvp/subject-query/v1" || 0x00 || encode([chain_id, key, issued_at_ms])',
        ),
        Param(
            "issued_at_ms",
            Int(0),
            description="when the request was signed (Unix ms); refused if more than "
            "5 minutes from the node's clock",
        ),
        summary="A data subject's grants, revocations and accesses, each proven against "
        "one certified head (public; signed by each key asked about, docs/CONSENT.md §6)",
        result=Result("result", "the proven log (ledger.subject_log)", SUBJECT_LOG),
        errors=(NotFound, InvalidParams, Pruned),
    )
    async def get_subject_log(
        ctx: CallContext, keys: list[tuple[bytes, bytes]], issued_at_ms: int
    ) -> dict[str, Any]:
        skew = abs(int(time.time() * 1000) - issued_at_ms)
        if skew > QUERY_SKEW_MS:
            raise InvalidParams(
                f"invalid param 'issued_at_ms': the request was signed {skew / 1000:.0f} s "
                f"from this node's clock (at most {QUERY_SKEW_MS // 1000} s); sign it again "
                "now, or check the computer's clock",
                param="issued_at_ms",
                reason="stale or future request",
            )
        for i, (key, sig) in enumerate(keys):
            if not query_signature_ok(node.chain_id, key, issued_at_ms, sig):
                raise InvalidParams(
                    f"invalid param 'keys[{i}].signature': not that key's signature over "
                    "this request (only the key's holder may list its log)",
                    param=f"keys[{i}].signature",
                    reason="bad signature",
                )
        if node.ledger.height < 1:
            raise NotFound("no certified block yet")
        return build_subject_log(node.prover, [k for k, _ in keys])
