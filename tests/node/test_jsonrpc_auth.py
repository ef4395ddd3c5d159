"""JSON-RPC dispatch: credentials and roles (bearer keys, role checks, open mode, the
credential config and its errors).
"""

from __future__ import annotations

from typing import Any

import pytest

from node.rpc.auth import CredentialStore, Principal, generate_api_key, hash_api_key
from node.rpc.jsonrpc import Dispatcher
from node.rpc.registry import CallContext
from tests.node.jsonrpc_support import (
    AUDITOR_KEY,
    BANK_KEY,
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
