"""JSON-RPC dispatch under hypothesis-generated garbage: every body gets a well-formed
response (or none, for notifications) with a known error code; nothing escapes.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from node.rpc.auth import CredentialStore
from node.rpc.jsonrpc import Dispatcher
from tests.node.jsonrpc_support import (
    BEARER,
    CREDENTIALS,
    KNOWN_CODES,
    make_registry,
)

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
    logging.getLogger("dvp.rpc").disabled = True  # the "bug" method logs on purpose
    try:
        d = Dispatcher(make_registry(), CredentialStore.from_config(CREDENTIALS))
        raw = trio.run(lambda: d.dispatch(body, authorization=auth))
    finally:
        logging.getLogger("dvp.rpc").disabled = False
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
