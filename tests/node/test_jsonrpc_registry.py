"""JSON-RPC method registry: registration checks, the OpenRPC document, the observer's
bounded labels, the executor contract and per-call defaults.
"""

from __future__ import annotations

import pytest

from node.rpc.auth import CredentialStore
from node.rpc.errors import InvalidParams
from node.rpc.jsonrpc import Call, Dispatcher
from node.rpc.params import Int, ListOf, Param
from node.rpc.registry import CallContext, MethodRegistry
from tests.node.jsonrpc_support import (
    error_of,
    make_dispatcher,
    make_registry,
    req,
    run,
)


@pytest.fixture
def d() -> Dispatcher:
    return make_dispatcher()


# --- registration and OpenRPC ----------------------------------------------------------


def test_registration_is_checked() -> None:
    rpc = MethodRegistry()

    def sync(ctx: CallContext) -> None:
        pass

    async def takes_x(ctx: CallContext, x: int) -> None:
        pass

    with pytest.raises(TypeError, match="async def"):
        rpc.add("sync", sync)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'y' missing"):
        rpc.add("m", takes_x, params=[Param("y", Int())])
    with pytest.raises(TypeError, match="'x' is not a declared param"):
        rpc.add("m", takes_x)
    with pytest.raises(ValueError, match="reserved"):
        rpc.add("rpc.mine", takes_x, params=[Param("x", Int())])
    rpc.add("m", takes_x, params=[Param("x", Int())])
    with pytest.raises(ValueError, match="twice"):
        rpc.add("m", takes_x, params=[Param("x", Int())])
    with pytest.raises(ValueError):
        Param("ctx", Int())
    with pytest.raises(InvalidParams, match="out of range"):  # defaults are validated too
        Param("n", Int(0, 5), default=9)


def test_openrpc_document(d: Dispatcher) -> None:
    doc = run(d, req("rpc.discover"))["result"]
    assert doc["openrpc"] == "1.2.6"
    assert doc["info"] == {"title": "test node", "version": "9.9.9"}
    methods = {m["name"]: m for m in doc["methods"]}
    assert set(methods) == {"fail", "getBlock", "lookup", "noop", "rpc.discover", "whoami"}
    block = methods["getBlock"]
    assert block["paramStructure"] == "by-name"
    assert block["params"][0] == {
        "name": "height",
        "required": True,
        "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        "description": "block height",
    }
    assert block["params"][1]["schema"]["default"] is False
    assert block["result"] == {"name": "block", "description": "the block header",
                               "schema": {"type": "object"}}  # fmt: skip
    assert [e["code"] for e in block["errors"]] == [-32602, -32002, -32001]
    assert block["x-access"] == ["auditor", "verifier"]
    assert methods["whoami"]["x-access"] == "member"
    assert methods["noop"]["x-access"] == "public" and methods["noop"]["summary"] == "does nothing"
    lookup = {p["name"]: p for p in methods["lookup"]["params"]}
    assert lookup["commitment"]["schema"]["minLength"] == 64
    assert lookup["kinds"]["schema"]["items"] == {"type": "string", "enum": ["credit", "bank"]}
    assert lookup["kinds"]["schema"]["default"] == ["credit"]
    assert "default" not in lookup["note"]["schema"] and not lookup["note"]["required"]


def test_observer_sees_bounded_labels() -> None:
    seen: list[tuple[str, str]] = []
    clock = iter(range(1000))
    d = Dispatcher(
        make_registry(),
        CredentialStore.open_mode(),
        observe=lambda m, o, s: seen.append((m, o)),
        clock=lambda: float(next(clock)),
    )
    run(d, [req("noop"), req("nope"), 1, req("lookup", {}), req("fail", {"how": "busy"})])
    run(d, b"{")
    # Validation failures are seen first: every request is checked before any runs.
    assert seen == [
        ("<unknown>", "method_not_found"),
        ("<invalid>", "invalid_request"),
        ("lookup", "invalid_params"),
        ("noop", "ok"),
        ("fail", "busy"),
        ("<invalid>", "parse_error"),
    ]


def test_executor_contract_and_validation_before_execution() -> None:
    seen: list[list[str]] = []

    async def lazy(calls: list[Call]) -> None:
        seen.append([c.method.name for c in calls])  # runs nothing, settles nothing

    d = Dispatcher(make_registry(), CredentialStore.open_mode(), execute=lazy)
    batch = [req("noop", id=1), req("lookup", {}, id=2), req("getBlock", {"height": 1}, id=3)]
    response = run(d, batch)  # a broken executor is our bug: -32603, never an exception
    assert error_of(response)["code"] == -32603 and response["id"] is None
    assert seen == [["noop", "getBlock"]]  # invalid lookup never reached the executor


def test_list_defaults_are_not_shared_between_calls() -> None:
    rpc = MethodRegistry()

    @rpc.method("grow", Param("items", ListOf(Int(), max_items=5), default=[]))
    async def grow(ctx: CallContext, items: list[int]) -> list[int]:
        items.append(1)
        return items

    d = Dispatcher(rpc, CredentialStore.open_mode())
    assert run(d, req("grow"))["result"] == [1]
    assert run(d, req("grow"))["result"] == [1]
