"""JSON-RPC dispatch without HTTP: parse errors, invalid requests, calls, notifications,
batches, params and handler errors.

The dispatcher is pure (bytes in, bytes out), so each test builds a registry, feeds a
body and reads the response. ``trio.run`` drives the async handlers. The other topics:
tests/node/test_jsonrpc_auth.py (credentials and roles), test_jsonrpc_registry.py
(registration, OpenRPC, observer, executor), test_jsonrpc_fuzz.py (hypothesis garbage).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from node.rpc.auth import CredentialStore
from node.rpc.jsonrpc import Dispatcher, Limits
from tests.node.jsonrpc_support import (
    BEARER,
    CREDENTIALS,
    error_of,
    make_dispatcher,
    make_registry,
    req,
    run,
)


@pytest.fixture
def d() -> Dispatcher:
    return make_dispatcher()


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
    with caplog.at_level(logging.ERROR, logger="dvp.rpc"):
        response = run(d, req("fail", {"how": how}, id=9))
    err = error_of(response)
    assert err["code"] == -32603 and err["message"] == "internal error"
    assert response["id"] == 9
    assert "secret" not in json.dumps(response) and "Traceback" not in json.dumps(response)
    incident = err["data"]["incident"]
    [record] = [r for r in caplog.records if incident in r.getMessage()]
    assert record.exc_info is not None  # the traceback stays in the server log
