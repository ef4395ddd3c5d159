"""``verifyAttestation``: the node's own verdict on a commitment, with the head it was
judged at (registered by ``node.methods.build_registry``).

For clients that cannot check a proof bundle themselves (``getAttestationProof`` is how
a bank verifies without trusting the node): the node builds the bundle for the
commitment and runs ``ledger.verify`` on it against its own genesis, as of its own clock
and with the freshness limit ``max_age_ms`` (default ``DEFAULT_MAX_AGE_MS``). The result
is the verdict (VALID, REVOKED, EXPIRED, NOT_FOUND) or UNVERIFIABLE with reason
``state_too_old`` -- never a verdict from a head older than the limit, so a node cut off
from its peers cannot answer VALID for a document revoked since. Either way it carries
the head: ``height``, ``block_time_ms``, ``head_age_ms``, ``checked_at_ms``,
``max_age_ms`` (the shape of ``dvp verify --json``). A document bound to a data subject
needs ``access`` (``node.methods_consent.require_consent``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ledger.verify import DEFAULT_MAX_AGE_MS, TrustAnchor, VerificationError, verify_bundle
from node.methods_consent import ACCESS_PARAM, consented_bundle
from node.rpc import (
    CallContext,
    ConsentRequired,
    Hex,
    Int,
    InvalidParams,
    MethodRegistry,
    NotFound,
    Param,
    Pruned,
    Result,
)
from node.rpc_schemas import VERDICT

if TYPE_CHECKING:
    from node.view import NodeView as Node

__all__ = ["MAX_AGE_LIMIT_MS", "add_verify_method"]

#: The largest ``max_age_ms`` a caller may ask for (a day; more is no freshness at all).
MAX_AGE_LIMIT_MS = 86_400_000


def add_verify_method(rpc: MethodRegistry, node: Node, roles: frozenset[str]) -> None:
    anchor = TrustAnchor.from_genesis(node.genesis)

    @rpc.method(
        "verifyAttestation",
        Param("commitment", Hex(32), description="the document commitment, hex"),
        ACCESS_PARAM,
        Param(
            "max_age_ms",
            Int(1, MAX_AGE_LIMIT_MS),
            default=DEFAULT_MAX_AGE_MS,
            description="UNVERIFIABLE when the newest certified block is older than this "
            "(ms, by the node's clock)",
        ),
        roles=roles,
        summary="This node's verdict on a commitment, as of its clock, with the head it "
        "was judged at; UNVERIFIABLE (state_too_old) when its head is older than max_age_ms. "
        "To trust no node, verify getAttestationProof's bundle yourself",
        result=Result(
            "result", "the verdict, or UNVERIFIABLE/INVALID with reason and message", VERDICT
        ),
        errors=(NotFound, InvalidParams, Pruned, ConsentRequired),
    )
    async def verify_attestation(
        ctx: CallContext, commitment: bytes, access: bytes | None, max_age_ms: int
    ) -> dict[str, Any]:
        if node.ledger.height < 1:
            raise NotFound("no certified block yet")
        bundle = consented_bundle(node, ctx, commitment, access)
        try:
            verdict = verify_bundle(
                bundle, anchor, now_ms=int(time.time() * 1000), max_age_ms=max_age_ms
            )
        except VerificationError as exc:
            return exc.to_json()
        return verdict.to_json()
