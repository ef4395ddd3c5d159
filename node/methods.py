"""The node's JSON-RPC methods (this module registers them; ``node/rpc`` serves them).

Public contract (docs/RPC.md): ``submitTransaction``, ``submitTransactions``, ``status``,
``ping`` (a no-op) and the read methods below; the consent methods ``submitConsent`` and
``getSubjectLog`` and the consent gate of the proof look-ups are ``node.methods_consent``.
Writes are authorised by the transaction's own signature, so submitting needs no API
key; the mempool answers BUSY (-32003) when full and rule failures are -32004 with a
stable ``data.code``.

Access (``roles=`` on each method; the OpenRPC ``x-access`` says the same):
- public: ``submitTransaction(s)``, ``submitConsent``, ``getSubjectLog``, ``getHeader``,
  ``getHistoryProof``, ``getConsistencyProof``, ``status``, ``ping``, ``rpc.discover``;
- any member with an API key: what enumerates the consortium or its blocks --
  ``getMembers``, ``getValidators``, ``getProposals`` (``node.methods_consortium``),
  ``getBlock`` (the auditor's bulk read);
- ``verifier`` or ``auditor``: look-ups of proofs by commitment or transaction id --
  ``getAttestationProof``, ``getTransaction``, and the node's own verdict
  ``verifyAttestation`` (``node.methods_verify``).
``serve_rpc`` also starts the admin listener (``node.admin``) when configured; both
listeners answer ``/livez``, and ``/readyz`` and ``/health`` with ``node.health``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from ledger.errors import DecodeError
from ledger.types import (
    MAX_TX_BYTES,
    Transaction,
)
from node.health import readiness, status_fields
from node.logs import get_logger
from node.mempool import ADMIT_CHUNK, AddResult, AddStatus
from node.methods_consent import ACCESS_PARAM, add_consent_methods, consented_bundle
from node.methods_consortium import add_consortium_methods
from node.methods_verify import add_verify_method
from node.rpc import (
    Bool,
    Busy,
    CallContext,
    ConsentRequired,
    CredentialStore,
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
    make_app,
    serve_http,
)
from node.rpc_json import header_json, node_status
from node.rpc_schemas import (
    BLOCK,
    BLOCK_HEAD,
    BUNDLE,
    CERTIFIED_HEAD,
    HEX,
    HEX32,
    INT,
    NAT,
    STATUS,
    SUBMITTED,
    array,
    nullable,
    obj,
)

if TYPE_CHECKING:
    from node.view import NodeView as Node

log = get_logger("rpc")
MAX_WAIT_S = 60
# Who may call what (see the module docstring). Empty = any authenticated member.
MEMBERS: frozenset[str] = frozenset()
PROOF_READERS = frozenset({"verifier", "auditor"})


def _decode_tx(raw: bytes, where: str) -> Transaction:
    try:
        return Transaction.decode(raw)
    except DecodeError as exc:
        raise InvalidParams(
            f"invalid param '{where}': not a transaction ({exc})", param=where, reason=str(exc)
        ) from None


def _certified(node: Node, height: int) -> dict[str, Any]:
    """A certified head (``rpc_schemas.CERTIFIED_HEAD``, the bundle's ``head``): header
    ``height`` and its commit certificate, canonical encodings in hex (no certificate
    for header 0: genesis anchors it)."""
    store = node.ledger.store
    cert = store.get_certificate_bytes(height) if height > 0 else None
    return {
        "header": (store.get_header_bytes(height) or b"").hex(),
        "certificate": None if cert is None else cert.hex(),
    }


def _outcome(node: Node, tx: Transaction, result: AddResult) -> dict[str, Any]:
    if result.status == AddStatus.BUSY:
        raise Busy(result.message)
    if result.status == AddStatus.REJECTED:
        raise Rejected(result.code, result.message)
    height = node.committed_height_of(tx.tx_id)
    return {
        "tx_id": tx.tx_id.hex(),
        "status": "committed" if height is not None else "pending",
        "height": height,
    }


async def submit_one(node: Node, t: Transaction, wait: bool, timeout_s: int) -> dict[str, Any]:
    """Admit one transaction through the mempool (and wait for its commit if asked):
    ``submitTransaction``'s path, which ``submitConsent`` shares."""
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
            raise Timeout(
                f"not committed within {timeout_s} s; it may still commit",
                {"tx_id": t.tx_id.hex()},
            )
        out = {"tx_id": t.tx_id.hex(), "status": "committed", "height": height}
    return out


def build_registry(node: Node) -> MethodRegistry:
    rpc = MethodRegistry(title="dvp node", version="0.1.0")

    @rpc.method(
        "submitTransaction",
        Param(
            "tx",
            Hex(min_length=1, max_length=MAX_TX_BYTES),
            description="canonical encoding of a signed transaction, hex",
        ),
        Param(
            "wait", Bool(), default=False, description="return only once committed (or timed out)"
        ),
        Param("timeout_s", Int(1, MAX_WAIT_S), default=30),
        summary="Submit one signed transaction; returns its id (and height if waited)",
        result=Result(
            "result",
            "where the transaction stands",
            obj(tx_id=HEX32, status={"enum": ["pending", "committed"]}, height=nullable(INT)),
        ),
        errors=(Busy, Rejected, Timeout, InvalidParams),
        timeout_s=MAX_WAIT_S + 5,
    )
    async def submit_transaction(
        ctx: CallContext, tx: bytes, wait: bool, timeout_s: int
    ) -> dict[str, Any]:
        return await submit_one(node, _decode_tx(tx, "tx"), wait, timeout_s)

    @rpc.method(
        "submitTransactions",
        Param(
            "txs",
            ListOf(Hex(min_length=1, max_length=MAX_TX_BYTES), max_items=5000),
            description="signed transactions, hex; each is admitted independently",
        ),
        Param("wait", Bool(), default=False),
        Param("timeout_s", Int(1, MAX_WAIT_S), default=30),
        summary="Submit many transactions in one request (how issuers attest in bulk)",
        result=Result("result", "per-transaction outcome, in request order", SUBMITTED),
        errors=(Busy, InvalidParams),
        timeout_s=MAX_WAIT_S + 5,
    )
    async def submit_transactions(
        ctx: CallContext, txs: list[bytes], wait: bool, timeout_s: int
    ) -> dict[str, Any]:
        results: list[dict[str, Any]] = []
        accepted: list[tuple[bytes, dict[str, Any]]] = []
        for start in range(0, len(txs), ADMIT_CHUNK):
            if start:
                await trio.sleep(0)  # admission in chunks: consensus gets the loop between
            # Each transaction is answered on its own: one that does not decode is
            # "malformed" in its place, and the others of its chunk are still admitted.
            chunk: list[Transaction] = []
            malformed: dict[int, dict[str, Any]] = {}
            for i, raw in enumerate(txs[start : start + ADMIT_CHUNK], start):
                try:
                    chunk.append(Transaction.decode(raw))
                except DecodeError as exc:
                    malformed[i] = {
                        "tx_id": None,
                        "status": "rejected",
                        "code": "malformed",
                        "message": f"txs[{i}]: not a transaction ({exc})",
                    }
            more = start + ADMIT_CHUNK < len(txs)
            admitted = iter(zip(chunk, node.submit_batch(chunk, more=more), strict=True))
            for i in range(start, min(start + ADMIT_CHUNK, len(txs))):
                if i in malformed:
                    results.append(malformed[i])
                    continue
                t, r = next(admitted)
                out: dict[str, Any]
                if r.status in (AddStatus.ADDED, AddStatus.DUPLICATE):
                    out = {"tx_id": t.tx_id.hex(), "status": "pending"}
                    accepted.append((t.tx_id, out))
                else:
                    out = {
                        "tx_id": t.tx_id.hex(),
                        "status": "rejected",
                        "code": r.code,
                        "message": r.message,
                    }
                results.append(out)
        if wait:
            with trio.move_on_after(timeout_s):
                for tx_id, _ in accepted:
                    await node.wait_committed(tx_id, timeout_s)
            for tx_id, out in accepted:
                h = node.committed_height_of(tx_id)
                if h is not None:
                    out["status"], out["height"] = "committed", h
        return {
            "results": results,
            "accepted": sum(1 for r in results if r["status"] != "rejected"),
        }

    @rpc.method(
        "getHeader",
        Param(
            "height",
            Int(0),
            default=None,
            description="block height; the newest committed when omitted",
        ),
        summary="A committed block header with its commit certificate",
        result=Result("result", "header fields and hex encodings", obj(**BLOCK_HEAD)),
        errors=(NotFound, InvalidParams),
    )
    async def get_header(ctx: CallContext, height: int | None) -> dict[str, Any]:
        store = node.ledger.store
        h = store.height if height is None else height
        header = store.get_header(h) if h <= store.height else None
        if header is None:
            raise NotFound(f"no block at height {h} (the chain is at {store.height})")
        cert = store.get_certificate(h)
        return {
            "height": h,
            "block_id": header.block_id.hex(),
            "header": header_json(header),
            "encoded": header.encoded.hex(),
            "certificate": None if cert is None else cert.encode().hex(),
        }

    @rpc.method(
        "getBlock",
        Param("height", Int(0), description="block height"),
        Param(
            "include_txs",
            Bool(),
            default=False,
            description="also return each transaction's canonical encoding",
        ),
        roles=MEMBERS,
        summary="A committed block: header, certificate and transaction ids "
        "(members only: replaying blocks in bulk enumerates the chain)",
        result=Result("result", "the block", BLOCK),
        errors=(NotFound, InvalidParams, Pruned),
    )
    async def get_block(ctx: CallContext, height: int, include_txs: bool) -> dict[str, Any]:
        store = node.ledger.store
        block = store.get_block(height) if height <= store.height else None
        if block is None:
            raise NotFound(f"no block at height {height} (the chain is at {store.height})")
        cert = store.get_certificate(height)
        out: dict[str, Any] = {
            "height": height,
            "block_id": block.block_id.hex(),
            "header": header_json(block.header),
            "encoded": block.header.encoded.hex(),
            "certificate": None if cert is None else cert.encode().hex(),
            "tx_ids": [t.hex() for t in block.tx_ids],
        }
        if include_txs:
            out["txs"] = [tx.encode().hex() for tx in block.txs]
        return out

    @rpc.method(
        "getAttestationProof",
        Param("commitment", Hex(32), description="the document commitment, hex"),
        ACCESS_PARAM,
        roles=PROOF_READERS,
        summary="The proof bundle for a commitment at the newest certified height "
        "(docs/PROOFS.md): verify it offline with ledger.verify. A document bound to a "
        "data subject needs access (docs/CONSENT.md §4), else -32007",
        result=Result("result", "the proof bundle (docs/PROOFS.md section 11)", BUNDLE),
        errors=(NotFound, InvalidParams, Pruned, ConsentRequired),
    )
    async def get_attestation_proof(
        ctx: CallContext, commitment: bytes, access: bytes | None
    ) -> dict[str, Any]:
        if node.ledger.height < 1:
            raise NotFound("no certified block yet")
        return consented_bundle(node, ctx, commitment, access).to_json()

    add_verify_method(rpc, node, PROOF_READERS)
    add_consent_methods(rpc, node, lambda t, wait, timeout_s: submit_one(node, t, wait, timeout_s))
    add_consortium_methods(rpc, node, MEMBERS)

    @rpc.method(
        "getTransaction",
        Param("tx_id", Hex(32), description="the transaction id, hex"),
        roles=PROOF_READERS,
        summary="A committed transaction with its inclusion proof, its block's header "
        "and the history proof of that block in the newest certified header",
        result=Result(
            "result",
            "the transaction and its proofs",
            obj(
                tx_id=HEX32,
                height=INT,
                index=INT,
                tx=HEX,
                block_header=HEX,
                tx_proof=array(HEX32),
                head_height=NAT,
                head=CERTIFIED_HEAD,
                history_proof=array(HEX32),
            ),
        ),
        errors=(NotFound, InvalidParams, Pruned),
    )
    async def get_transaction(ctx: CallContext, tx_id: bytes) -> dict[str, Any]:
        store = node.ledger.store
        loc = store.tx_location(tx_id)
        tx = store.get_tx(tx_id) if loc is not None else None
        if loc is None or tx is None or store.height < 1:
            raise NotFound("no committed transaction with this id")
        head = node.prover.refresh()
        inc = node.prover.included(loc[0], loc[1], head)
        return {
            "tx_id": tx_id.hex(),
            "height": loc[0],
            "index": loc[1],
            "tx": inc.tx.hex(),
            "block_header": inc.header.hex(),
            "tx_proof": [h.hex() for h in inc.tx_proof],
            "head_height": head,
            "head": _certified(node, head),
            "history_proof": [h.hex() for h in inc.history_proof],
        }

    @rpc.method(
        "getHistoryProof",
        Param("height", Int(0), description="the older block"),
        summary="Inclusion of block `height` in the newest certified header's "
        "history root (RFC 6962)",
        result=Result(
            "result",
            "the audit path",
            obj(
                height=INT,
                block_id=HEX32,
                head_height=NAT,
                head=CERTIFIED_HEAD,
                proof=array(HEX32),
            ),
        ),
        errors=(NotFound,),
    )
    async def get_history_proof(ctx: CallContext, height: int) -> dict[str, Any]:
        head = node.prover.refresh()
        if not height < head:
            raise NotFound(f"height must be below the newest certified height {head}")
        store = node.ledger.store
        return {
            "height": height,
            "block_id": (store.get_block_id(height) or b"").hex(),
            "head_height": head,
            "head": _certified(node, head),
            "proof": [h.hex() for h in node.prover.history.inclusion_proof(height, head)],
        }

    @rpc.method(
        "getConsistencyProof",
        Param("old_height", Int(0), description="the older header (0: the empty tree)"),
        Param("new_height", Int(0), description="the newer header, at most the newest"),
        summary="RFC 9162 consistency between the history roots of two headers "
        "(tree size = height), with both headers and their certificates",
        result=Result(
            "result",
            "the consistency proof and the two certified headers",
            obj(
                old_height=NAT,
                new_height=NAT,
                old=CERTIFIED_HEAD,
                new=CERTIFIED_HEAD,
                proof=array(HEX32),
            ),
        ),
        errors=(NotFound, InvalidParams),
    )
    async def get_consistency_proof(
        ctx: CallContext, old_height: int, new_height: int
    ) -> dict[str, Any]:
        head = node.prover.refresh()
        if not old_height <= new_height <= head:
            raise InvalidParams(
                "need old_height <= new_height <= the newest height",
                param="new_height",
                reason="out of range",
            )
        # Header h's history root covers blocks 0..h-1: tree sizes old_height, new_height.
        # From size 0 the proof is empty (every tree extends the empty one).
        return {
            "old_height": old_height,
            "new_height": new_height,
            "old": _certified(node, old_height),
            "new": _certified(node, new_height),
            "proof": [
                h.hex() for h in node.prover.history.consistency_proof(old_height, new_height)
            ],
        }

    @rpc.method(
        "ping",
        summary='A no-op: answers "pong" without touching the node '
        "(liveness probes; benchmarks measure the HTTP/JSON-RPC floor with it)",
        result=Result("pong", 'the string "pong"', {"type": "string"}),
    )
    async def ping(ctx: CallContext) -> str:
        return "pong"

    @rpc.method(
        "status",
        summary="Height, view, primary, peers, mempool and last commit time",
        result=Result("result", "the node's view of the chain", STATUS),
    )
    async def status(ctx: CallContext) -> dict[str, Any]:
        return {**node_status(node), **status_fields(node)}

    return rpc


async def serve_rpc(node: Node, nursery: trio.Nursery) -> dict[str, int]:
    """Start the public RPC listener (and the admin one if configured); return ports."""
    from node.admin import ADMIN_ROLES, build_admin_registry
    from node.rpc.static import StaticSite

    cfg = node.config
    # Configured keys stay valid in open mode: a client that sends one is identified,
    # and a wrong key is still refused (node.rpc.auth).
    creds = CredentialStore.from_config(cfg.credentials, open_mode=cfg.rpc_open)
    if cfg.rpc_open:
        log.warning(
            "RPC IS OPEN: no API credentials are checked (devnet mode). "
            "Never run a consortium node like this.",
            listen=str(cfg.rpc_listen),
        )

    def health() -> dict[str, Any]:
        return readiness(node, int(time.time() * 1000))

    # [rpc] metrics_auth: /metrics wants an operator's key, like the admin methods.
    metrics_roles = ADMIN_ROLES if cfg.metrics_auth else None
    # The verification page pins the genesis this node was started with (read at start:
    # the file the node already loaded, served byte for byte).
    app = make_app(
        build_registry(node),
        creds,
        node.metrics.registry,
        health=health,
        metrics_roles=metrics_roles,
        page=StaticSite(cfg.genesis.read_bytes()),
    )
    ports = {
        "rpc": await nursery.start(
            lambda task_status: serve_http(
                app,
                cfg.rpc_listen.host,
                cfg.rpc_listen.port,
                task_status=task_status,
                tls_cert=str(cfg.tls_cert) if cfg.tls_cert else None,
                tls_key=str(cfg.tls_key) if cfg.tls_key else None,
            )
        )
    }
    admin_addr = cfg.admin_listen
    if admin_addr is not None:
        # Loopback only (checked by node.config), plain HTTP, admin methods only.
        admin = make_app(
            build_admin_registry(node),
            creds,
            node.metrics.registry,
            metrics_namespace="dvp_admin",
            health=health,
            metrics_roles=metrics_roles,
        )
        ports["admin"] = await nursery.start(
            lambda task_status: serve_http(
                admin, admin_addr.host, admin_addr.port, task_status=task_status
            )
        )
        log.info("admin RPC listening", port=ports["admin"])
    return ports
