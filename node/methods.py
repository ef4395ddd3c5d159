"""The node's JSON-RPC methods (this module registers them; ``node/rpc`` serves them).

Public contract (docs/RPC.md): ``submitTransaction``, ``submitTransactions``, ``status``,
``ping`` (a no-op) and the read methods below.
Writes are authorised by the transaction's own signature, so submitting needs no API
key; the mempool answers BUSY (-32003) when full and rule failures are -32004 with a
stable ``data.code``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from ledger.errors import DecodeError
from ledger.types import MAX_TX_BYTES, BlockHeader, Transaction
from node.logs import get_logger
from node.mempool import AddResult, AddStatus
from node.rpc import (
    Bool,
    Busy,
    CallContext,
    CredentialStore,
    Hex,
    Int,
    InvalidParams,
    ListOf,
    MethodRegistry,
    NotFound,
    Param,
    Rejected,
    Timeout,
    make_app,
    serve_http,
)

if TYPE_CHECKING:
    from node.node import Node

log = get_logger("rpc")
MAX_WAIT_S = 60


def _decode_tx(raw: bytes, where: str) -> Transaction:
    try:
        return Transaction.decode(raw)
    except DecodeError as exc:
        raise InvalidParams(f"invalid param '{where}': not a transaction ({exc})",
                            param=where, reason=str(exc)) from None


def _outcome(node: Node, tx: Transaction, result: AddResult) -> dict[str, Any]:
    if result.status == AddStatus.BUSY:
        raise Busy("the mempool is full; retry later")
    if result.status == AddStatus.REJECTED:
        raise Rejected(result.code, result.message)
    height = node.committed_height_of(tx.tx_id)
    return {"tx_id": tx.tx_id.hex(), "status": "committed" if height is not None else "pending",
            "height": height}


def build_registry(node: Node) -> MethodRegistry:
    rpc = MethodRegistry(title="dvp node", version="0.1.0")

    @rpc.method("submitTransaction",
                Param("tx", Hex(min_length=1, max_length=MAX_TX_BYTES),
                      description="canonical encoding of a signed transaction, hex"),
                Param("wait", Bool(), default=False,
                      description="return only once committed (or timed out)"),
                Param("timeout_s", Int(1, MAX_WAIT_S), default=30),
                summary="Submit one signed transaction; returns its id (and height if waited)",
                errors=(Busy, Rejected, Timeout, InvalidParams), timeout_s=MAX_WAIT_S + 5)
    async def submit_transaction(ctx: CallContext, tx: bytes, wait: bool,
                                 timeout_s: int) -> dict[str, Any]:
        t = _decode_tx(tx, "tx")
        result = node.submit(t)
        if result.status == AddStatus.DUPLICATE or result.status == AddStatus.ADDED:
            out = _outcome(node, t, result)
        else:
            committed = node.committed_height_of(t.tx_id)
            if committed is not None:  # a resubmission of a committed tx: report it
                return {"tx_id": t.tx_id.hex(), "status": "committed", "height": committed}
            out = _outcome(node, t, result)
        if wait and out["status"] != "committed":
            height = await node.wait_committed(t.tx_id, timeout_s)
            if height is None:
                raise Timeout(f"not committed within {timeout_s} s; it may still commit",
                              {"tx_id": t.tx_id.hex()})
            out = {"tx_id": t.tx_id.hex(), "status": "committed", "height": height}
        return out

    @rpc.method("submitTransactions",
                Param("txs", ListOf(Hex(min_length=1, max_length=MAX_TX_BYTES), max_items=5000),
                      description="signed transactions, hex; each is admitted independently"),
                Param("wait", Bool(), default=False),
                Param("timeout_s", Int(1, MAX_WAIT_S), default=30),
                summary="Submit many transactions in one request (how issuers attest in bulk)",
                errors=(Busy, InvalidParams), timeout_s=MAX_WAIT_S + 5)
    async def submit_transactions(ctx: CallContext, txs: list[bytes], wait: bool,
                                  timeout_s: int) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        accepted: list[bytes] = []
        for i, raw in enumerate(txs):
            t = _decode_tx(raw, f"txs[{i}]")
            r = node.submit(t)
            if r.status in (AddStatus.ADDED, AddStatus.DUPLICATE):
                results.append({"tx_id": t.tx_id.hex(), "status": "pending"})
                accepted.append(t.tx_id)
            else:
                results.append({"tx_id": t.tx_id.hex(), "status": "rejected",
                                "code": r.code, "message": r.message})
            if i % 256 == 255:
                await trio.sleep(0)
        if wait:
            with trio.move_on_after(timeout_s):
                for tx_id in accepted:
                    await node.wait_committed(tx_id, timeout_s)
        for r in results:
            if r["status"] == "pending":
                h = node.committed_height_of(bytes.fromhex(r["tx_id"]))
                if h is not None:
                    r["status"], r["height"] = "committed", h
        return {"results": results,
                "accepted": sum(1 for r in results if r["status"] != "rejected")}

    @rpc.method("getHeader",
                Param("height", Int(0), default=None,
                      description="block height; the newest committed when omitted"),
                summary="A committed block header with its commit certificate",
                errors=(NotFound, InvalidParams))
    async def get_header(ctx: CallContext, height: int | None) -> dict[str, Any]:
        store = node.ledger.store
        h = store.height if height is None else height
        header = store.get_header(h) if h <= store.height else None
        if header is None:
            raise NotFound(f"no block at height {h} (the chain is at {store.height})")
        cert = store.get_certificate(h)
        return {"height": h, "block_id": header.block_id.hex(),
                "header": header_json(header), "encoded": header.encoded.hex(),
                "certificate": None if cert is None else cert.encode().hex()}

    @rpc.method("getBlock",
                Param("height", Int(0), description="block height"),
                Param("include_txs", Bool(), default=False,
                      description="also return each transaction's canonical encoding"),
                summary="A committed block: header, certificate and transaction ids",
                errors=(NotFound, InvalidParams))
    async def get_block(ctx: CallContext, height: int, include_txs: bool) -> dict[str, Any]:
        store = node.ledger.store
        block = store.get_block(height) if height <= store.height else None
        if block is None:
            raise NotFound(f"no block at height {height} (the chain is at {store.height})")
        cert = store.get_certificate(height)
        out: dict[str, Any] = {
            "height": height, "block_id": block.block_id.hex(),
            "header": header_json(block.header), "encoded_header": block.header.encoded.hex(),
            "certificate": None if cert is None else cert.encode().hex(),
            "tx_ids": [t.hex() for t in block.tx_ids]}
        if include_txs:
            out["txs"] = [tx.encode().hex() for tx in block.txs]
        return out

    @rpc.method("getAttestationProof",
                Param("commitment", Hex(32), description="the document commitment, hex"),
                roles=frozenset({"verifier", "auditor"}),
                summary="The proof bundle for a commitment at the newest certified height "
                        "(docs/PROOFS.md): verify it offline with ledger.verify",
                errors=(NotFound, InvalidParams))
    async def get_attestation_proof(ctx: CallContext, commitment: bytes) -> dict[str, Any]:
        if node.ledger.height < 1:
            raise NotFound("no certified block yet")
        return node.prover.bundle(commitment).to_json()

    @rpc.method("getTransaction",
                Param("tx_id", Hex(32)),
                summary="A committed transaction with its inclusion proof, its block's header "
                        "and the history proof of that block in the newest certified header",
                errors=(NotFound, InvalidParams))
    async def get_transaction(ctx: CallContext, tx_id: bytes) -> dict[str, Any]:
        store = node.ledger.store
        loc = store.tx_location(tx_id)
        tx = store.get_tx(tx_id) if loc is not None else None
        if loc is None or tx is None or store.height < 1:
            raise NotFound("no committed transaction with this id")
        head = node.prover.refresh()
        inc = node.prover.included(loc[0], loc[1], head)
        return {"tx_id": tx_id.hex(), "height": loc[0], "index": loc[1],
                "tx": inc.tx.hex(), "block_header": inc.header.hex(),
                "tx_proof": [h.hex() for h in inc.tx_proof],
                "head": {"height": head,
                         "header": (store.get_header_bytes(head) or b"").hex(),
                         "certificate": (store.get_certificate_bytes(head) or b"").hex()},
                "history_proof": [h.hex() for h in inc.history_proof]}

    @rpc.method("getValidators",
                Param("height", Int(1), default=None,
                      description="the height whose certifying set you want (default: next)"),
                summary="The validator set in force at a height, with its hash",
                errors=(NotFound,))
    async def get_validators(ctx: CallContext, height: int | None) -> dict[str, Any]:
        h = node.ledger.height + 1 if height is None else height
        try:
            vs = node.ledger.validators_at(h)
        except KeyError:
            raise NotFound(f"the validator set at height {h} is not known yet") from None
        return {"height": h, "hash": vs.hash.hex(), "encoded": vs.encode().hex(),
                "quorum": vs.quorum,
                "validators": [{"member_id": v.member_id, "node_key": v.node_key.hex()}
                               for v in vs.validators]}

    @rpc.method("getMembers", roles=frozenset(),
                summary="Every consortium member with its roles and document types "
                        "(members only: it enumerates the consortium)")
    async def get_members(ctx: CallContext) -> dict[str, Any]:
        names = {1: "validator", 2: "issuer", 3: "verifier", 4: "auditor"}
        head = node.ledger.head
        return {"height": head.height, "members": [
            {"member_id": m.member_id, "name": m.name, "key": m.key.hex(),
             "roles": [names[r] for r in m.roles], "doc_types": list(m.doc_types)}
            for m in sorted(head.members.values(), key=lambda m: m.member_id)]}

    @rpc.method("getHistoryProof",
                Param("height", Int(0), description="the older block"),
                summary="Inclusion of block `height` in the newest certified header's "
                        "history root (RFC 6962)",
                errors=(NotFound,))
    async def get_history_proof(ctx: CallContext, height: int) -> dict[str, Any]:
        head = node.prover.refresh()
        if not height < head:
            raise NotFound(f"height must be below the newest certified height {head}")
        store = node.ledger.store
        return {"height": height, "block_id": (store.get_block_id(height) or b"").hex(),
                "head_height": head, "head_header": (store.get_header_bytes(head) or b"").hex(),
                "head_certificate": (store.get_certificate_bytes(head) or b"").hex(),
                "proof": [h.hex() for h in node.prover.history.inclusion_proof(height, head)]}

    @rpc.method("getConsistencyProof",
                Param("old_height", Int(1)), Param("new_height", Int(1)),
                summary="RFC 6962 consistency between the history roots of two headers",
                errors=(NotFound, InvalidParams))
    async def get_consistency_proof(ctx: CallContext, old_height: int,
                                    new_height: int) -> dict[str, Any]:
        head = node.prover.refresh()
        if not old_height <= new_height <= head:
            raise InvalidParams("need old_height <= new_height <= the newest height",
                                param="new_height", reason="out of range")
        # header h's history root covers blocks 0..h-1: tree sizes old_height, new_height
        return {"old_height": old_height, "new_height": new_height,
                "proof": [h.hex() for h in
                          node.prover.history.consistency_proof(old_height, new_height)]}

    @rpc.method("ping", summary="A no-op: answers \"pong\" without touching the node "
                "(liveness probes; benchmarks measure the HTTP/JSON-RPC floor with it)")
    async def ping(ctx: CallContext) -> str:
        return "pong"

    @rpc.method("status", summary="Height, view, primary, peers, mempool and last commit time")
    async def status(ctx: CallContext) -> dict[str, Any]:
        return node_status(node)

    return rpc


def header_json(h: BlockHeader) -> dict[str, Any]:
    return {"chain_id": h.chain_id, "height": h.height, "prev_block_id": h.prev_block_id.hex(),
            "time_ms": h.time_ms, "proposer": h.proposer.hex(), "tx_count": h.tx_count,
            "tx_root": h.tx_root.hex(), "state_root": h.state_root.hex(),
            "validator_set_hash": h.validator_set_hash.hex(),
            "next_validator_set_hash": h.next_validator_set_hash.hex(),
            "history_root": h.history_root.hex()}


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
        "last_commit_unix_ms": int(node.status.last_commit_wall * 1000) or None,
        "view_changes": node.status.view_changes,
    }


async def serve_rpc(node: Node, nursery: trio.Nursery) -> dict[str, int]:
    """Start the public RPC listener (and the admin one if configured); return ports."""
    cfg = node.config
    if cfg.rpc_open:
        creds = CredentialStore.open_mode()
        log.warning("RPC IS OPEN: no API credentials are checked (devnet mode). "
                    "Never run a consortium node like this.")
    else:
        creds = CredentialStore.from_config(cfg.credentials)
    app = make_app(build_registry(node), creds, node.metrics.registry)
    ports = {"rpc": await nursery.start(
        lambda task_status: serve_http(app, cfg.rpc_listen.host, cfg.rpc_listen.port,
                                       task_status=task_status,
                                       tls_cert=str(cfg.tls_cert) if cfg.tls_cert else None,
                                       tls_key=str(cfg.tls_key) if cfg.tls_key else None))}
    return ports
