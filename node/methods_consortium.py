"""``getValidators``, ``getMembers`` and ``getProposals``: who the consortium is and
what it is deciding (registered by ``node.methods.build_registry``; members only, since
they enumerate organisations, node keys and votes).

A proposal carries ``reason``: why it stands where it does, counted against the
validator set that decided it (``ledger.rules.proposal_outcome``, the tally's own
arithmetic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledger.records import ProposalRecord, proposal_key
from ledger.rules import proposal_outcome
from node.rpc import (
    CallContext,
    Hex,
    Int,
    InvalidParams,
    ListOf,
    MethodRegistry,
    NotFound,
    Param,
    Result,
)
from node.rpc_json import proposal_json
from node.rpc_schemas import HEX, HEX32, NAT, PROPOSAL, STR, array, obj

if TYPE_CHECKING:
    from node.view import NodeView as Node

__all__ = ["add_consortium_methods"]


def add_consortium_methods(rpc: MethodRegistry, node: Node, roles: frozenset[str]) -> None:
    @rpc.method(
        "getValidators",
        Param(
            "height",
            Int(1),
            default=None,
            description="the height whose certifying set you want (default: next)",
        ),
        roles=roles,
        summary="The validator set in force at a height, with its hash (members "
        "only: it lists organisations and node keys)",
        result=Result(
            "result",
            "the set",
            obj(
                height=NAT,
                hash=HEX32,
                encoded=HEX,
                quorum=NAT,
                validators=array(obj(member_id=STR, node_key=HEX32)),
            ),
        ),
        errors=(NotFound,),
    )
    async def get_validators(ctx: CallContext, height: int | None) -> dict[str, Any]:
        h = node.ledger.height + 1 if height is None else height
        try:
            vs = node.ledger.validators_at(h)
        except KeyError:
            raise NotFound(f"the validator set at height {h} is not known yet") from None
        return {
            "height": h,
            "hash": vs.hash.hex(),
            "encoded": vs.encode().hex(),
            "quorum": vs.quorum,
            "validators": [
                {"member_id": v.member_id, "node_key": v.node_key.hex()} for v in vs.validators
            ],
        }

    @rpc.method(
        "getMembers",
        roles=roles,
        summary="Every consortium member with its roles and document types "
        "(members only: it enumerates the consortium)",
        result=Result(
            "result",
            "members at the newest height",
            obj(
                height=NAT,
                doc_types=array(STR),
                members=array(
                    obj(
                        member_id=STR,
                        name=STR,
                        key=HEX32,
                        roles=array({"enum": ["validator", "issuer", "verifier", "auditor"]}),
                        doc_types=array(STR),
                    )
                ),
            ),
        ),
    )
    async def get_members(ctx: CallContext) -> dict[str, Any]:
        names = {1: "validator", 2: "issuer", 3: "verifier", 4: "auditor"}
        head = node.ledger.head
        return {
            "height": head.height,
            "doc_types": list(head.chain.doc_types),
            "members": [
                {
                    "member_id": m.member_id,
                    "name": m.name,
                    "key": m.key.hex(),
                    "roles": [names[r] for r in m.roles],
                    "doc_types": list(m.doc_types),
                }
                for m in sorted(head.members.values(), key=lambda m: m.member_id)
            ],
        }

    @rpc.method(
        "getProposals",
        Param(
            "ids",
            ListOf(Hex(32), max_items=100),
            default=None,
            description="proposal ids (any status); every open proposal if omitted",
        ),
        roles=roles,
        summary="Governance proposals with their votes: the open ones, or the given "
        "ids whatever their status (members only)",
        result=Result(
            "result",
            "proposals at the newest height",
            obj(height=NAT, voters=array(STR), quorum=NAT, proposals=array(PROPOSAL)),
        ),
        errors=(NotFound, InvalidParams),
    )
    async def get_proposals(ctx: CallContext, ids: list[bytes] | None) -> dict[str, Any]:
        head = node.ledger.head
        if ids is None:
            found = sorted(head.open_proposals.items())
        else:
            found = []
            for pid in ids:
                raw = head.tree.get(proposal_key(pid), head.height)
                if raw is None:
                    raise NotFound(
                        f"no proposal {pid.hex()} (a proposal's id is the id of "
                        "the transaction that proposed it)"
                    )
                found.append((pid, ProposalRecord.decode(raw)))
        voters = head.validators_at(head.height + 1)

        def outcome(rec: ProposalRecord) -> str:
            # Counted against the set that decided it (the tally's own arithmetic).
            try:
                decided_by = node.ledger.validators_at(rec.decided_height or head.height + 1)
            except KeyError:
                decided_by = voters
            return proposal_outcome(rec, decided_by)

        return {
            "height": head.height,
            "quorum": voters.quorum,
            "voters": [v.member_id for v in voters.validators],
            "proposals": [proposal_json(pid, rec, outcome(rec)) for pid, rec in found],
        }
