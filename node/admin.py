"""The node's admin JSON-RPC surface, served only on ``[rpc] admin_listen`` (loopback).

Owns ``build_admin_registry``: four operator methods that are never mounted on the
public listener (and the public methods are not mounted here):

- ``admin.peers``     -- configured peers, their addresses and keys, and who is connected;
- ``admin.mempool``   -- pending transactions, bytes, limits and admission counters;
- ``admin.evidence``  -- equivocation evidence this replica recorded (signed message
                         pairs, re-verified against the validator set on every call);
- ``admin.logLevel``  -- read or change the node's log level without a restart.

Rules:
- Every method needs the ``operator`` role: loopback is shared by every local user
  and process, so the address alone is not an authorisation. A devnet in open mode
  lets anyone on the host call them (and says so at start).
- Read-only except ``admin.logLevel``, which changes only this process's logging.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from consensus.evidence import Evidence, verify_evidence
from consensus.messages import slot_key
from ledger.errors import DecodeError
from node.logs import get_logger
from node.rpc import CallContext, Choice, Int, MethodRegistry, Param, Result
from node.rpc_schemas import BOOL, EVIDENCE, HEX32, NAT, STR, array, nullable, obj

if TYPE_CHECKING:
    from node.view import NodeView as Node

__all__ = ["ADMIN_ROLES", "LOG_LEVELS", "build_admin_registry"]

log = get_logger("admin")

ADMIN_ROLES: Final = frozenset({"operator"})
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
# The logger every dvp module logs under (node.logs.get_logger prefixes "dvp.").
_ROOT_LOGGER: Final = "dvp"


def _member_names(node: Node) -> dict[bytes, str]:
    """Node and member keys -> member id, for labelling peers and evidence."""
    tip = node.ledger.tip
    names = {m.key: m.member_id for m in tip.members.values()}
    for h in (tip.height, tip.height + 1):
        try:
            names.update((v.node_key, v.member_id) for v in tip.validators_at(h).validators)
        except KeyError:  # a height before the oldest set this state knows
            continue
    return names


def _evidence_json(node: Node, raw: bytes, names: dict[bytes, str]) -> dict[str, Any]:
    try:
        ev = Evidence.decode(raw)
    except DecodeError as exc:  # our own store: report it rather than hide it
        return {"error": f"undecodable evidence record: {exc}", "encoded": raw.hex()}
    height = getattr(ev.first, "height", None)
    try:
        vset = node.ledger.validators_at(height if height is not None else node.ledger.height)
        verified = verify_evidence(ev, node.chain_id, vset, node.crypto)
    except KeyError:  # the set of that height is no longer known
        verified = None
    return {
        "sender": ev.sender.hex(),
        "member_id": names.get(ev.sender),
        "kind": type(ev.first).__name__,
        "slot": [s.hex() if isinstance(s, bytes) else int(s) for s in slot_key(ev.first)],
        "verified": verified,
        "first": ev.first.encoded.hex(),
        "second": ev.second.encoded.hex(),
    }


def build_admin_registry(node: Node) -> MethodRegistry:
    """The admin methods of ``node`` (see the module docstring)."""
    rpc = MethodRegistry(title="dvp node admin", version="0.1.0")

    @rpc.method(
        "admin.peers",
        roles=ADMIN_ROLES,
        summary="Configured peers (member, address, key, connected) and any other connected peers",
        result=Result(
            "result",
            "peer table",
            obj(
                configured=array(
                    obj(member_id=nullable(STR), address=STR, key=HEX32, connected=BOOL)
                ),
                other_connected=array(obj(member_id=nullable(STR), key=HEX32)),
            ),
        ),
    )
    async def peers(ctx: CallContext) -> dict[str, Any]:
        names = _member_names(node)
        connected = node.transport.connected_peers()
        addresses = node.peer_addresses()
        configured = [
            {
                "member_id": names.get(key),
                "address": addr,
                "key": key.hex(),
                "connected": key in connected,
            }
            for key, addr in sorted(addresses.items(), key=lambda kv: kv[1])
        ]
        known = set(addresses)
        other = [{"member_id": names.get(k), "key": k.hex()} for k in sorted(connected - known)]
        return {"configured": configured, "other_connected": other}

    @rpc.method(
        "admin.mempool",
        roles=ADMIN_ROLES,
        summary="Pending transactions and bytes, the limits, and admission counters since start",
        result=Result(
            "result",
            "mempool report",
            obj(
                txs=NAT,
                bytes=NAT,
                max_txs=NAT,
                client_max_txs=NAT,
                max_bytes=NAT,
                counters={"type": "object", "additionalProperties": NAT},
            ),
        ),
    )
    async def mempool(ctx: CallContext) -> dict[str, Any]:
        pool = node.mempool
        return {
            "txs": len(pool),
            "bytes": pool.size_bytes,
            "max_txs": pool.max_txs,
            "client_max_txs": node.client_limit(),
            "max_bytes": pool.max_bytes,
            "counters": dict(pool.stats),
        }

    @rpc.method(
        "admin.evidence",
        Param("limit", Int(1, 1000), default=100, description="at most this many, oldest first"),
        roles=ADMIN_ROLES,
        summary="Equivocation evidence this replica recorded: two conflicting "
        "signed messages per entry, re-verified now",
        result=Result("result", "evidence", obj(count=NAT, evidence=array(EVIDENCE))),
    )
    async def evidence(ctx: CallContext, limit: int) -> dict[str, Any]:
        records = node.cdb.evidence() if node.cdb is not None else []  # observers: none
        names = _member_names(node)
        return {
            "count": len(records),
            "evidence": [_evidence_json(node, raw, names) for raw in records[:limit]],
        }

    @rpc.method(
        "admin.logLevel",
        Param("level", Choice(*LOG_LEVELS), default=None, description="new level; omit to read it"),
        roles=ADMIN_ROLES,
        summary="Read or set the node's log level (this process only, until restart)",
        result=Result("result", "levels", obj(level=STR, previous=STR)),
    )
    async def log_level(ctx: CallContext, level: str | None) -> dict[str, Any]:
        logger = logging.getLogger(_ROOT_LOGGER)
        previous = logging.getLevelName(logger.getEffectiveLevel()).lower()
        if level is not None:
            # Logged before the change, so it shows at the level operators were watching.
            log.warning(
                "log level changed over the admin RPC",
                level=level,
                previous=previous,
                by=ctx.principal.member_id if ctx.principal else None,
            )
            logger.setLevel(level.upper())
        return {"level": level or previous, "previous": previous}

    return rpc
