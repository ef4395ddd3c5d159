"""The RPC server over real sockets: hypercorn's trio worker on 127.0.0.1, port 0.

Each test runs its own ``trio.run`` (pytest-trio is not used) through ``with_server``,
which starts ``serve_http`` in a nursery, runs the client side, then triggers the
graceful shutdown and waits for the server to return. A test that returns therefore
also shows the server stopped with no task left behind.

Clients: ``http.client`` in a worker thread where ordinary requests suffice, and raw
trio sockets driven by h11 (client side) where a test must misbehave on purpose
(stall mid-body, stream a body that never ends).

Here: ordinary use. tests/node/test_http_server_hostile.py: hostile or slow clients;
tests/node/test_http_server_lifecycle.py: shutdown, the admin listener, open mode, TLS.
Shared helpers: tests/node/http_support.py.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from node.rpc.auth import CredentialStore
from node.rpc.http import make_app
from tests.node.http_support import (
    JSON,
    KEY,
    NOOP,
    get,
    in_thread,
    make_registry,
    new_app,
    post,
    with_server,
)

# --- ordinary use ---------------------------------------------------------------------


def test_call_keep_alive_and_notification() -> None:
    async def client(port: int) -> None:
        def talk() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            remotes = set()
            for i in range(5):
                body = json.dumps({"jsonrpc": "2.0", "method": "remote", "id": i}).encode()
                status, headers, raw = post(conn, body)
                assert status == 200 and headers["content-type"] == "application/json"
                assert "server" not in {k.lower() for k in headers}
                response = json.loads(raw)
                assert response["id"] == i
                remotes.add(response["result"])
            assert len(remotes) == 1  # one TCP connection (same client port) for all five
            status, _, raw = post(conn, b'{"jsonrpc":"2.0","method":"noop"}')
            assert (status, raw) == (204, b"")
            status, _, raw = post(conn, b"[" + b",".join([NOOP] * 3) + b"]", {
                "Content-Type": "application/json; charset=UTF-8"})  # fmt: skip
            assert status == 200 and len(json.loads(raw)) == 3
            status, _, raw = post(conn, b"{nope")
            assert status == 200 and json.loads(raw)["error"]["code"] == -32700
            conn.close()

        await in_thread(talk)

    with_server(client)


def test_credentials_over_http() -> None:
    async def client(port: int) -> None:
        def talk() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            body = b'{"jsonrpc":"2.0","method":"whoami","id":1}'
            _, _, raw = post(conn, body)
            assert json.loads(raw)["error"]["code"] == -32002
            _, _, raw = post(conn, body, {**JSON, "Authorization": f"Bearer {KEY.key}"})
            assert json.loads(raw)["result"] == "hk-bank"
            conn.close()

        await in_thread(talk)

    with_server(client)


def test_errors_404_405_415_keep_connection_usable() -> None:
    async def client(port: int) -> None:
        def talk() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            status, headers, raw = get(conn, "/nope")
            assert status == 404 and json.loads(raw) == {"error": "not found"}
            assert headers["content-type"] == "application/json"
            status, headers, raw = get(conn, "/rpc")
            assert status == 405 and headers["allow"] == "POST"
            conn.request("POST", "/metrics", body=b"x")
            response = conn.getresponse()
            assert response.status == 405 and response.getheader("allow") == "GET"
            response.read()
            content_types: list[str | None] = [
                "text/plain", "application/json; charset=latin-1", None]  # fmt: skip
            for content_type in content_types:
                headers_ = {} if content_type is None else {"Content-Type": content_type}
                status, _, raw = post(conn, NOOP, headers_)
                assert status == 415 and b"application/json" in raw
            # The small refused bodies were drained, so the same connection still works.
            status, _, raw = post(conn, NOOP)
            assert status == 200 and json.loads(raw)["result"] is None
            conn.close()

        await in_thread(talk)

    with_server(client)


def test_metrics_and_health() -> None:
    metrics = CollectorRegistry()
    unready = {"status": "unready", "failing": ["peers"]}
    reports: Iterator[dict[str, Any]] = iter(
        [{"height": 7}, {"height": 8, "status": "x"}, unready, {"status": "ok"}]
    )
    app = make_app(
        make_registry(), CredentialStore.open_mode(), metrics, health=lambda: next(reports)
    )

    async def client(port: int) -> None:
        def talk() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for _ in range(3):
                post(conn, NOOP)
            post(conn, b'{"jsonrpc":"2.0","method":"nope","id":1}')
            status, headers, raw = get(conn, "/metrics")
            assert status == 200 and headers["content-type"].startswith("text/plain")
            text = raw.decode()
            assert 'dvp_rpc_calls_total{method="noop",outcome="ok"} 3.0' in text
            assert 'dvp_rpc_calls_total{method="<unknown>",outcome="method_not_found"} 1.0' in text
            assert 'dvp_http_requests_total{path="/rpc",status="200"} 4.0' in text
            assert 'dvp_rpc_call_duration_seconds_count{method="noop"} 3.0' in text
            status, _, raw = get(conn, "/health")
            assert status == 200 and json.loads(raw) == {"status": "ok", "height": 7}
            status, _, raw = get(conn, "/health")  # the callback now reports trouble
            assert status == 503 and json.loads(raw)["status"] == "x"
            # Kubernetes' probes: readiness is the same report; liveness only says the
            # process answers, whatever the report (restarting would not help it)
            status, _, raw = get(conn, "/readyz")
            assert status == 503 and json.loads(raw) == unready
            status, _, raw = get(conn, "/livez")
            assert status == 200 and json.loads(raw) == {"status": "ok"}
            status, _, raw = get(conn, "/readyz")
            assert status == 200
            conn.close()

        await in_thread(talk)

    with_server(client, app)
    # The metrics went to the registry given, not the process-global one.
    from prometheus_client import REGISTRY

    assert (
        REGISTRY.get_sample_value("dvp_rpc_calls_total", {"method": "noop", "outcome": "ok"})
        is None
    )
    assert metrics.get_sample_value("dvp_rpc_calls_total", {"method": "noop", "outcome": "ok"}) == 3


def test_call_deadline_gives_timeout_error() -> None:
    """A call that would never finish is answered -32005: the deadline cut it."""
    app = new_app(call_timeout_s=0.2)

    async def client(port: int) -> None:
        def talk() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            _, _, raw = post(conn, b'{"jsonrpc":"2.0","method":"forever","id":1}')
            assert json.loads(raw)["error"] == {
                "code": -32005, "message": "forever did not finish within 0.2 s"}  # fmt: skip
            # In a batch, a call that overruns does not take the others down with it,
            # and a method's own timeout_s (2 s) overrides the server default (0.2 s).
            batch = [
                {"jsonrpc": "2.0", "method": "forever", "id": 1},
                {"jsonrpc": "2.0", "method": "noop", "id": 2},
                {"jsonrpc": "2.0", "method": "noop", "id": 3},
                {"jsonrpc": "2.0", "method": "patient", "params": {"ms": 400}, "id": 4},
                {"jsonrpc": "2.0", "method": "forever", "id": 5},
            ]
            _, _, raw = post(conn, json.dumps(batch).encode())
            responses = json.loads(raw)
            assert [r["id"] for r in responses] == [1, 2, 3, 4, 5]
            assert responses[0]["error"]["code"] == -32005
            assert responses[1]["result"] is None and responses[2]["result"] is None
            assert responses[3]["result"] == 400
            assert responses[4]["error"]["code"] == -32005
            conn.close()

        await in_thread(talk)

    with_server(client, app)
