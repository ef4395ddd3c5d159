"""JSON-RPC dispatch without HTTP: every error path, batches, notifications, params,
credentials and roles, OpenRPC, and hypothesis-generated garbage.

The dispatcher is pure (bytes in, bytes out), so each test builds a registry, feeds a
body and reads the response. ``trio.run`` drives the async handlers.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ledger.errors import RuleError
from node.rpc.auth import CredentialStore, Principal, generate_api_key, hash_api_key
from node.rpc.errors import Busy, InvalidParams, NotFound, Rejected, Timeout
from node.rpc.jsonrpc import Call, Dispatcher, Limits
from node.rpc.params import Bool, Choice, Hex, Int, ListOf, Param, Str
from node.rpc.registry import CallContext, MethodRegistry, Result

BANK_KEY = generate_api_key()
AUDITOR_KEY = generate_api_key()
CREDENTIALS = {
    "hk-bank": {"roles": ["verifier", "member"], "key_sha256": BANK_KEY.key_sha256},
    "regulator": {"roles": ["auditor"], "key_sha256": AUDITOR_KEY.key_sha256},
}
KNOWN_CODES = {-32700, -32600, -32601, -32602, -32603, -32001, -32002, -32003, -32004, -32005}


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


@pytest.fixture
def d() -> Dispatcher:
    return Dispatcher(make_registry(), CredentialStore.from_config(CREDENTIALS))


def error_of(response: Any) -> dict[str, Any]:
    assert "result" not in response, response
    err: dict[str, Any] = response["error"]
    return err


BEARER = f"Bearer {BANK_KEY.key}"


# --- parse errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"{", "invalid JSON"),
        (b"", "invalid JSON"),
        (b'{"jsonrpc":"2.0"} x', "invalid JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "not valid UTF-8"),  # UTF-8-encoded surrogate
        (b"NaN", "NaN"),
        (b'{"id": Infinity}', "Infinity"),
        (b"[-Infinity]", "Infinity"),
        (b'{"id": 1e400}', "out of range"),
        (b'{"a": 1, "a": 2}', "duplicate object key 'a'"),
        (b'[{"x": {"b": 1, "b": 1}}]', "duplicate object key 'b'"),
        (b"[" * 33 + b"]" * 33, "nested deeper than 32"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b'{"a":' * 50 + b"1" + b"}" * 50, "nested deeper"),
    ],
)
def test_parse_errors(d: Dispatcher, body: bytes, fragment: str) -> None:
    response = run(d, body)
    assert response["id"] is None
    assert error_of(response)["code"] == -32700
    assert fragment in error_of(response)["message"]


def test_depth_exactly_at_limit_is_accepted() -> None:
    d = Dispatcher(make_registry(), CredentialStore.open_mode(), limits=Limits(max_depth=3))
    ok = run(d, req("lookup", {"commitment": "00" * 32, "kinds": ["bank"]}))  # depth 3
    assert ok["result"]["kinds"] == ["bank"]
    deep = run(d, req("lookup", {"commitment": "00" * 32, "kinds": [["bank"]]}))
    assert error_of(deep)["code"] == -32700


# --- invalid requests ---------------------------------------------------------------


@pytest.mark.parametrize(
    "request_obj, fragment, echoed_id",
    [
        (1, "must be a JSON object", None),
        ("x", "must be a JSON object", None),
        (None, "must be a JSON object", None),
        ({"method": "noop", "id": 1}, '"jsonrpc" must be exactly "2.0"', 1),
        ({"jsonrpc": "1.0", "method": "noop", "id": "a"}, '"jsonrpc"', "a"),
        ({"jsonrpc": 2.0, "method": "noop", "id": 3}, '"jsonrpc"', 3),
        ({"jsonrpc": "2.0", "method": 1, "params": "bar"}, '"method" must be a string', None),
        ({"jsonrpc": "2.0", "id": 1}, '"method" must be a string', 1),
        ({"jsonrpc": "2.0", "method": "noop", "id": 1.5}, "id must be", None),
        ({"jsonrpc": "2.0", "method": "noop", "id": True}, "id must be", None),
        ({"jsonrpc": "2.0", "method": "noop", "id": [1]}, "id must be", None),
        ({"jsonrpc": "2.0", "method": "noop", "id": "x" * 257}, "id longer", None),
        ({"jsonrpc": "2.0", "method": "noop", "id": 1, "extra": 1}, "unknown request members", 1),
        ({"jsonrpc": "2.0", "method": "noop", "id": 1, "params": "p"}, '"params" must be', 1),
        ({"jsonrpc": "2.0", "method": "noop", "id": 1, "params": 5}, '"params" must be', 1),
    ],
)
def test_invalid_requests(d: Dispatcher, request_obj: Any, fragment: str, echoed_id: Any) -> None:
    response = run(d, request_obj)
    assert error_of(response)["code"] == -32600
    assert fragment in error_of(response)["message"]
    assert response["id"] == echoed_id


def test_huge_integer_id_is_invalid_request_not_a_crash(d: Dispatcher) -> None:
    response = run(d, b'{"jsonrpc":"2.0","method":"noop","id":' + b"9" * 5000 + b"}")
    assert error_of(response)["code"] == -32600
    assert response["id"] is None


def test_batch_limits(d: Dispatcher) -> None:
    empty = run(d, [])
    assert error_of(empty)["code"] == -32600 and "empty batch" in error_of(empty)["message"]
    too_many = run(d, [req("noop", id=i) for i in range(101)])
    assert isinstance(too_many, dict)  # one error, not 101
    assert error_of(too_many)["code"] == -32600 and "exceeds 100" in error_of(too_many)["message"]
    assert len(run(d, [req("noop", id=i) for i in range(100)])) == 100


def test_body_size_limit() -> None:
    d = Dispatcher(make_registry(), CredentialStore.open_mode(), limits=Limits(max_body_bytes=64))
    response = run(d, req("noop", id="x" * 100))
    assert error_of(response)["code"] == -32600
    assert "exceeds 64" in error_of(response)["message"]


# --- methods, notifications, batches -------------------------------------------------


def test_call_and_method_not_found(d: Dispatcher) -> None:
    assert run(d, req("noop", id="abc")) == {"jsonrpc": "2.0", "result": None, "id": "abc"}
    assert run(d, req("noop", id=None))["id"] is None  # null id is a call, not a notification
    response = run(d, req("nope", id=7))
    assert error_of(response) == {"code": -32601, "message": "method 'nope' not found"}
    assert response["id"] == 7


def test_notifications_never_answered() -> None:
    calls: list[tuple[str, Any]] = []
    d = Dispatcher(make_registry(calls), CredentialStore.from_config(CREDENTIALS))
    notif = {"jsonrpc": "2.0", "method": "noop"}
    assert run(d, notif) is None
    assert calls == [("noop", None)]
    for bad in (
        {"jsonrpc": "2.0", "method": "nope"},
        {"jsonrpc": "2.0", "method": "getBlock", "params": {"height": 1}},  # no credentials
        {"jsonrpc": "2.0", "method": "fail", "params": {"how": "bug"}},
        {"jsonrpc": "2.0", "method": "lookup", "params": [1]},
    ):
        assert run(d, bad) is None
    assert run(d, [notif, notif]) is None  # a batch of notifications: nothing at all


def test_batch_mixed_in_order(d: Dispatcher) -> None:
    batch = [
        req("noop", id=1),
        {"jsonrpc": "2.0", "method": "noop"},  # notification: no entry
        req("nope", id=2),
        42,
        req("lookup", {"commitment": "ab" * 32}, id=3),
        req("lookup", {"commitment": "AB" * 32}, id=4),
        req("getBlock", {"height": 5}, id=5),
        req("fail", {"how": "busy"}, id=6),
    ]
    responses = run(d, batch, auth=BEARER)
    assert [r["id"] for r in responses] == [1, 2, None, 3, 4, 5, 6]
    assert responses[0]["result"] is None
    assert error_of(responses[1])["code"] == -32601
    assert error_of(responses[2])["code"] == -32600
    assert responses[3]["result"]["c"] == "ab" * 32
    assert error_of(responses[4])["code"] == -32602
    assert responses[5]["result"] == {"height": 5, "with_txs": False, "caller": "hk-bank"}
    assert error_of(responses[6])["code"] == -32003


# --- params ---------------------------------------------------------------------------

C = "ab" * 32


@pytest.mark.parametrize(
    "params, param, fragment",
    [
        ([C], None, "by-name"),
        ({}, "commitment", "missing required param 'commitment'"),
        ({"commitment": C, "x": 1}, "x", "unknown param 'x'; expected commitment, note"),
        ({"commitment": 1}, "commitment", "expected 64 lowercase hex characters (32 bytes)"),
        ({"commitment": C[:-2]}, "commitment", "got 62 characters"),
        ({"commitment": C.upper()}, "commitment", "non-hex or uppercase"),
        ({"commitment": "0x" + C[:-2]}, "commitment", "without a 0x prefix"),
        ({"commitment": "zz" * 32}, "commitment", "non-hex"),
        ({"commitment": C, "note": "123456789"}, "note", "length 9 outside [0, 8]"),
        ({"commitment": C, "note": 5}, "note", "expected a string, got integer"),
        ({"commitment": C, "note": "\ud800"}, "note", "lone surrogate"),
        ({"commitment": C, "kinds": "credit"}, "kinds", "expected an array, got string"),
        ({"commitment": C, "kinds": ["a", "b", "c", "d"]}, "kinds", "4 items, expected 0 to 3"),
        ({"commitment": C, "kinds": ["credit", "x"]}, "kinds[1]", "expected one of credit, bank"),
        ({"commitment": C, "blob": ""}, "blob", "of 1 to 4 bytes"),
        ({"commitment": C, "blob": "abc"}, "blob", "got 3 characters"),
    ],
)
def test_param_errors_name_the_param(
    d: Dispatcher, params: Any, param: str | None, fragment: str
) -> None:
    err = error_of(run(d, req("lookup", params)))
    assert err["code"] == -32602
    assert fragment in err["message"], err
    if param is not None:
        assert err["data"]["param"] == param
        assert param in err["message"]


@pytest.mark.parametrize(
    "height, fragment",
    [
        (-1, "-1 is out of range, expected [0, 9223372036854775807]"),
        (2**63, "out of range"),
        (2**64, "out of range"),
        (10**30, "integer out of range"),
        (-(10**30), "integer out of range"),
        (True, "got boolean"),
        (1.0, "got number"),
        ("1", "got string"),
        (None, "got null"),
    ],
)
def test_int_params(d: Dispatcher, height: Any, fragment: str) -> None:
    err = error_of(run(d, req("getBlock", {"height": height}), auth=BEARER))
    assert err["code"] == -32602 and fragment in err["message"], err
    assert err["data"]["param"] == "height"


def test_number_with_thousands_of_digits_is_a_bad_param_not_a_parse_error(d: Dispatcher) -> None:
    body = b'{"jsonrpc":"2.0","method":"getBlock","id":1,"params":{"height":' + b"7" * 5000 + b"}}"
    err = error_of(run(d, body, auth=BEARER))
    assert err["code"] == -32602 and err["data"]["param"] == "height"


def test_defaults_and_explicit_null(d: Dispatcher) -> None:
    result = run(d, req("lookup", {"commitment": C}))["result"]
    assert result == {"c": C, "note": None, "kinds": ["credit"], "blob": "00"}
    result = run(d, req("lookup", {"commitment": C, "note": None, "kinds": [], "blob": "ff01"}))
    assert result["result"] == {"c": C, "note": None, "kinds": [], "blob": "ff01"}
    err = error_of(run(d, req("lookup", {"commitment": C, "kinds": None})))
    assert err["data"]["param"] == "kinds"  # null is only for params whose default is null


# --- errors from handlers ------------------------------------------------------------


def test_application_errors(d: Dispatcher) -> None:
    not_found = error_of(run(d, req("getBlock", {"height": 101}), auth=BEARER))
    assert not_found == {"code": -32001, "message": "no block at height 101"}
    assert error_of(run(d, req("fail", {"how": "busy"}))) == {
        "code": -32003,
        "message": "mempool full",
    }
    rule = error_of(run(d, req("fail", {"how": "rule"})))
    assert rule["code"] == -32004 and rule["data"] == {"code": "not_issuer"}
    assert "not admitted" in rule["message"]
    rejected = error_of(run(d, req("fail", {"how": "rejected"})))
    assert rejected == {
        "code": -32004,
        "message": "already_attested",
        "data": {"code": "already_attested"},
    }
    assert error_of(run(d, req("fail", {"how": "timeout"})))["code"] == -32005


@pytest.mark.parametrize("how", ["bug", "nan"])
def test_internal_error_logged_not_leaked(
    d: Dispatcher, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="node.rpc"):
        response = run(d, req("fail", {"how": how}, id=9))
    err = error_of(response)
    assert err["code"] == -32603 and err["message"] == "internal error"
    assert response["id"] == 9
    assert "secret" not in json.dumps(response) and "Traceback" not in json.dumps(response)
    incident = err["data"]["incident"]
    [record] = [r for r in caplog.records if incident in r.getMessage()]
    assert record.exc_info is not None  # the traceback stays in the server log


# --- credentials and roles ----------------------------------------------------------


def test_roles(d: Dispatcher) -> None:
    anonymous = error_of(run(d, req("getBlock", {"height": 1})))
    assert anonymous["code"] == -32002 and "requires credentials" in anonymous["message"]
    ok = run(d, req("getBlock", {"height": 1}), auth=BEARER)["result"]
    assert ok["caller"] == "hk-bank"
    assert run(d, req("getBlock", {"height": 1}), auth=f"bearer  {AUDITOR_KEY.key} ")["result"]
    # "member" (any authenticated caller) vs a role the caller lacks
    assert run(d, req("whoami"), auth=f"Bearer {AUDITOR_KEY.key}")["result"] == "regulator"
    assert error_of(run(d, req("whoami")))["code"] == -32002


def test_role_mismatch_names_roles() -> None:
    rpc = make_registry()

    @rpc.method("audit", roles={"auditor"})
    async def audit(ctx: CallContext) -> int:
        return 1

    d = Dispatcher(rpc, CredentialStore.from_config(CREDENTIALS))
    err = error_of(run(d, req("audit"), auth=BEARER))
    assert err["code"] == -32002
    assert err["message"] == "method audit requires role auditor; hk-bank has member, verifier"


@pytest.mark.parametrize(
    "header", ["Bearer wrong", "Basic abc", "Bearer", "Bearer " + "x" * 300, BANK_KEY.key]
)
def test_bad_credentials_refused_even_for_public_methods(d: Dispatcher, header: str) -> None:
    err = error_of(run(d, req("noop"), auth=header))
    assert err["code"] == -32002
    assert run(d, {"jsonrpc": "2.0", "method": "noop"}, auth=header) is None


def test_open_mode() -> None:
    d = Dispatcher(make_registry(), CredentialStore.open_mode())
    assert run(d, req("getBlock", {"height": 3}))["result"]["caller"] == "<open>"
    store = CredentialStore.from_config(CREDENTIALS, open_mode=True)
    d = Dispatcher(make_registry(), store)
    assert run(d, req("getBlock", {"height": 3}), auth=BEARER)["result"]["caller"] == "hk-bank"
    assert error_of(run(d, req("noop"), auth="Bearer nope"))["code"] == -32002


def test_api_key_helper_and_config_parsing() -> None:
    key = generate_api_key()
    assert key.key.startswith("dvp_") and len(key.key) > 40
    assert key.key_sha256 == hash_api_key(key.key) and len(key.key_sha256) == 64
    assert generate_api_key().key != key.key
    store = CredentialStore.from_config(
        {"m1": {"roles": ["auditor"], "key_sha256": key.key_sha256}}
    )
    assert store.authenticate(f"Bearer {key.key}") == Principal("m1", frozenset({"auditor"}))
    assert store.authenticate(None) is None
    assert store.principal("m1") == Principal("m1", frozenset({"auditor"}))


@pytest.mark.parametrize(
    "config",
    [
        {"m1": {"roles": ["auditor"], "key_sha256": "AB" * 32}},
        {"m1": {"roles": ["auditor"], "key_sha256": "ab" * 31}},
        {"m1": {"roles": [], "key_sha256": "ab" * 32}},
        {"m1": {"roles": "auditor", "key_sha256": "ab" * 32}},
        {"m1": {"roles": ["Auditor"], "key_sha256": "ab" * 32}},
        {"m1": {"roles": ["auditor"], "key_sha256": "ab" * 32, "key": "plaintext"}},
        {"m 1": {"roles": ["auditor"], "key_sha256": "ab" * 32}},
        {
            "m1": {"roles": ["auditor"], "key_sha256": "ab" * 32},
            "m2": {"roles": ["verifier"], "key_sha256": "ab" * 32},
        },
        [],
    ],
)
def test_bad_credential_config(config: Any) -> None:
    with pytest.raises(ValueError):
        CredentialStore.from_config(config)


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


# --- garbage never escapes ----------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
method_names = st.sampled_from(["noop", "getBlock", "lookup", "fail", "whoami", "rpc.discover",
                                "nope", ""])  # fmt: skip
param_values = st.one_of(
    json_values, st.just("ab" * 32), st.sampled_from(["bug", "busy", "rule", "nan", "timeout"])
)
param_names = st.sampled_from(["height", "with_txs", "commitment", "note", "kinds", "blob", "how",
                               "x"])  # fmt: skip


@st.composite
def request_like(draw: st.DrawFn) -> Any:
    """Mostly well-formed requests with, now and then, a field wrong or missing."""

    def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
        return draw(bad) if draw(st.integers(0, 9)) == 0 else draw(good)

    obj: dict[str, Any] = {}
    if draw(st.integers(0, 19)):
        obj["jsonrpc"] = mostly(st.just("2.0"), json_scalars)
    if draw(st.integers(0, 19)):
        obj["method"] = mostly(method_names, json_values)
    if draw(st.integers(0, 4)):
        obj["id"] = mostly(st.one_of(st.integers(), st.text(max_size=8)), json_values)
    if draw(st.integers(0, 4)):
        obj["params"] = mostly(st.dictionaries(param_names, param_values, max_size=4), json_values)
    if not draw(st.integers(0, 19)):
        obj[draw(st.text(max_size=5))] = draw(json_values)
    return obj


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


bodies = st.one_of(
    st.binary(max_size=64),
    json_values.map(encode),
    request_like().map(encode),
    st.lists(st.one_of(request_like(), json_values), max_size=6).map(encode),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 3000).map(lambda n: b'{"a":' * n + b"0" + b"}" * n),
    st.integers(20, 6000).map(
        lambda n: (
            b'{"jsonrpc":"2.0","method":"getBlock","id":1,"params":{"height":-%s}}' % (b"9" * n)
        )
    ),
    st.tuples(
        request_like().map(encode), st.binary(min_size=1, max_size=4), st.integers(0, 99)
    ).map(lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]),  # fmt: skip
)


def is_notification_body(body: bytes) -> bool:
    try:
        value = json.loads(body)
    except ValueError:
        return False
    if isinstance(value, dict):
        return (
            "id" not in value
            and value.get("jsonrpc") == "2.0"
            and isinstance(value.get("method"), str)
        )
    return isinstance(value, list) and bool(value) and all(is_notification_body(
        json.dumps(v).encode()) for v in value)  # fmt: skip


def check_response(response: Any) -> None:
    assert isinstance(response, dict), response
    assert response["jsonrpc"] == "2.0"
    assert "id" in response
    assert response["id"] is None or type(response["id"]) in (int, str)
    assert ("result" in response) != ("error" in response)
    if "error" in response:
        err = response["error"]
        assert set(err) <= {"code", "message", "data"}
        assert err["code"] in KNOWN_CODES
        assert isinstance(err["message"], str) and "Traceback" not in err["message"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, auth=st.sampled_from([None, BEARER, "Bearer nope", "junk"]))
def test_garbage_never_escapes(body: bytes, auth: str | None) -> None:
    logging.getLogger("node.rpc").disabled = True  # the "bug" method logs on purpose
    try:
        d = Dispatcher(make_registry(), CredentialStore.from_config(CREDENTIALS))
        raw = trio.run(lambda: d.dispatch(body, authorization=auth))
    finally:
        logging.getLogger("node.rpc").disabled = False
    if raw is None:
        assert is_notification_body(body), body
        return
    decoded = json.loads(raw)  # strict: the response itself is valid JSON
    items = decoded if isinstance(decoded, list) else [decoded]
    event("codes " + ",".join(sorted({str(i.get("error", {}).get("code", "ok")) for i in items})))
    if isinstance(decoded, list):
        assert decoded, "an empty batch response must be omitted, not []"
        for item in decoded:
            check_response(item)
    else:
        check_response(decoded)
