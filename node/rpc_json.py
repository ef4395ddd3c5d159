"""The JSON shapes of what the node's RPC answers: block headers, governance proposals,
the node's status. One function per shape, used by every method that returns it
(docs/RPC.md specifies them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledger.protocol import supported_versions
from ledger.records import ProposalRecord, ProposalStatus
from ledger.types import GOV_ARGS, BlockHeader, GovAction, RevokeReason, Role

if TYPE_CHECKING:
    from node.view import NodeView as Node


def _gov_arg_json(kind: str, value: Any) -> Any:
    if kind in ("key", "hash"):
        return bytes(value).hex()
    if kind == "role":
        return Role(value).name.lower()
    if kind == "reason":
        return RevokeReason(value).name.lower().replace("_", "-")
    return value


def proposal_json(pid: bytes, rec: ProposalRecord, reason: str) -> dict[str, Any]:
    """A proposal as ``getProposals`` returns it (action and enums as lowercase names);
    ``reason``: ``ledger.rules.proposal_outcome``'s line."""
    action = GovAction(rec.action)
    return {
        "proposal_id": pid.hex(),
        "action": action.name.lower().replace("_", "-"),
        "args": [_gov_arg_json(k, v) for k, v in zip(GOV_ARGS[action], rec.args, strict=True)],
        "proposer": rec.proposer,
        "deadline_height": rec.deadline_height,
        "yes": list(rec.yes),
        "no": list(rec.no),
        "status": ProposalStatus(rec.status).name.lower(),
        "decided_height": rec.decided_height or None,
        "reason": reason,
    }


def header_json(h: BlockHeader) -> dict[str, Any]:
    return {
        "version": h.version,
        "chain_id": h.chain_id,
        "height": h.height,
        "prev_block_id": h.prev_block_id.hex(),
        "time_ms": h.time_ms,
        "proposer": h.proposer.hex(),
        "tx_count": h.tx_count,
        "tx_root": h.tx_root.hex(),
        "state_root": h.state_root.hex(),
        "validator_set_hash": h.validator_set_hash.hex(),
        "next_validator_set_hash": h.next_validator_set_hash.hex(),
        "history_root": h.history_root.hex(),
    }


def node_status(node: Node) -> dict[str, Any]:
    head = node.ledger.head
    replica = node.replica
    view = replica.view if replica is not None else None
    vset = head.validators_at(head.height + 1)
    primary = vset.validators[view % vset.n].member_id if view is not None else None
    return {
        "chain_id": node.chain_id,
        "node": node.config.name,
        "role": node.config.role,
        "height": head.height,
        "block_id": head.block_id.hex(),
        "state_root": head.state_root.hex(),
        "block_time_ms": head.time_ms,
        "view": view,
        "primary": primary,
        "validators": [v.member_id for v in vset.validators],
        "peers": len(node.transport.connected_peers()),
        "mempool": len(node.mempool),
        "last_commit_unix_ms": node.status.last_commit_unix_ms or None,
        "view_changes": node.status.view_changes,
        # equivocation evidence recorded (consensus database), and why nothing commits
        # while a disk write keeps failing (None when the disk is fine)
        "evidence": node.status.evidence,
        "store_error": node.status.store_error,
        # 0: an archive node; else the lowest height whose block body it still has
        # (``[ledger] retain_blocks``): clients needing older proofs ask an archive node
        "bodies_from": node.ledger.store.bodies_from,
        # the protocol version of the next block, what this build speaks, and the
        # activations governance has scheduled ([height, version])
        "protocol_version": head.chain.version_at(head.height + 1),
        "protocol_versions_supported": list(supported_versions()),
        "scheduled_versions": [[h, v] for h, v in head.chain.scheduled_versions],
    }
