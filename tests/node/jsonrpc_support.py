"""What the JSON-RPC dispatch tests share: a registry exercising every schema type, role rule
and error class, credentials, and helpers that dispatch a body and read the reply.

``make_dispatcher()`` is what each test module's ``d`` fixture returns.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from ledger.errors import RuleError
from node.rpc.auth import CredentialStore, generate_api_key
from node.rpc.errors import Busy, NotFound, Rejected, Timeout
from node.rpc.jsonrpc import Dispatcher
from node.rpc.params import Bool, Choice, Hex, Int, ListOf, Param, Str
from node.rpc.registry import CallContext, MethodRegistry, Result

BANK_KEY = generate_api_key()
AUDITOR_KEY = generate_api_key()
CREDENTIALS = {
    "hk-bank": {"roles": ["verifier", "member"], "key_sha256": BANK_KEY.key_sha256},
    "regulator": {"roles": ["auditor"], "key_sha256": AUDITOR_KEY.key_sha256},
}
KNOWN_CODES = {
    -32700, -32600, -32601, -32602, -32603, -32001, -32002, -32003, -32004, -32005, -32006,
}  # fmt: skip


def make_registry(calls: list[tuple[str, Any]] | None = None) -> MethodRegistry:
    """A registry exercising every schema type, role rule and error class."""
    seen = calls if calls is not None else []
    rpc = MethodRegistry(title="test node", version="9.9.9")

    @rpc.method("noop", summary="does nothing")
    async def noop(ctx: CallContext) -> None:
        seen.append(("noop", ctx.request_id))

    @rpc.method(
        "getBlock",
        Param("height", Int(0, 2**63 - 1), description="block height"),
        Param("with_txs", Bool(), default=False),
        roles={"verifier", "auditor"},
        errors=(NotFound,),
        result=Result("block", "the block header", {"type": "object"}),
    )
    async def get_block(ctx: CallContext, height: int, with_txs: bool) -> dict[str, Any]:
        if height > 100:
            raise NotFound(f"no block at height {height}")
        assert ctx.principal is not None
        return {"height": height, "with_txs": with_txs, "caller": ctx.principal.member_id}

    @rpc.method(
        "lookup",
        Param("commitment", Hex(32)),
        Param("note", Str(8), default=None),
        Param("kinds", ListOf(Choice("credit", "bank"), max_items=3), default=["credit"]),
        Param("blob", Hex(min_length=1, max_length=4), default="00"),
    )
    async def lookup(
        ctx: CallContext, commitment: bytes, note: str | None, kinds: list[str], blob: bytes
    ) -> dict[str, Any]:
        return {"c": commitment.hex(), "note": note, "kinds": kinds, "blob": blob.hex()}

    @rpc.method("whoami", roles=())
    async def whoami(ctx: CallContext) -> str:
        assert ctx.principal is not None
        return ctx.principal.member_id

    @rpc.method("fail", Param("how", Choice("bug", "busy", "rule", "rejected", "timeout", "nan")))
    async def fail(ctx: CallContext, how: str) -> Any:
        await trio.sleep(0)
        if how == "busy":
            raise Busy("mempool full")
        if how == "rule":
            raise RuleError("not_issuer", "issuer not admitted for this document type")
        if how == "rejected":
            raise Rejected("already_attested")
        if how == "timeout":
            raise Timeout()
        if how == "nan":
            return float("nan")  # not JSON: must become -32603, not a broken body
        raise ValueError("secret internal detail")

    return rpc


def run(dispatcher: Dispatcher, body: bytes | Any, auth: str | None = None) -> Any:
    """Dispatch ``body`` (raw bytes, or any other value JSON-encoded) and decode the reply:
    None for no response, else the parsed JSON."""
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    raw = trio.run(lambda: dispatcher.dispatch(body, authorization=auth))
    return None if raw is None else json.loads(raw)


def req(method: str, params: Any = None, id: Any = 1, **extra: Any) -> dict[str, Any]:
    r: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id, **extra}
    if params is not None:
        r["params"] = params
    return r


# (each test module's ``d`` fixture returns this)
def make_dispatcher() -> Dispatcher:
    return Dispatcher(make_registry(), CredentialStore.from_config(CREDENTIALS))


def error_of(response: Any) -> dict[str, Any]:
    assert "result" not in response, response
    err: dict[str, Any] = response["error"]
    return err


BEARER = f"Bearer {BANK_KEY.key}"
