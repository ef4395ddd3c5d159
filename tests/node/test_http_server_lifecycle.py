"""The RPC server's lifecycle: graceful shutdown and its deadline, cancellation, the admin
listener beside the public one, open mode's warning, TLS (helpers: tests/node/http_support.py).
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from node.rpc.auth import CredentialStore, generate_api_key
from node.rpc.http import make_app, serve_http
from node.rpc.registry import CallContext, MethodRegistry
from p2p.runtime import TaskStatus
from tests.node.http_support import (
    JSON,
    NOOP,
    Gate,
    RawClient,
    in_thread,
    make_registry,
    new_app,
    post,
    with_server,
)

# --- lifecycle --------------------------------------------------------------------------


async def _gated_call(port: int, method: bytes) -> RawClient:
    """Open a connection and send one complete call of ``method``."""
    raw = await RawClient.connect(port)
    body = b'{"jsonrpc":"2.0","method":"%s","id":1}' % method
    await raw.request_head("/rpc", [("Content-Type", "application/json"),
                                    ("Content-Length", str(len(body)))])  # fmt: skip
    await raw.send(h11.Data(data=body))
    await raw.send(h11.EndOfMessage())
    return raw


def test_graceful_shutdown_finishes_in_flight_calls() -> None:
    """After the trigger the server waits for the call in flight (its graceful deadline is
    far beyond the test's): it returns only once that call was released and answered."""
    gate = Gate()

    async def main() -> None:
        stop, returned, answered = trio.Event(), trio.Event(), trio.Event()
        results: list[Any] = []

        async def serve(task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            await serve_http(gate.app(), "127.0.0.1", 0, shutdown_trigger=stop.wait,
                             graceful_timeout_s=600.0, task_status=task_status)  # fmt: skip
            returned.set()

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve)

                async def call() -> None:
                    raw = await _gated_call(port, b"gate")
                    results.append(await raw.response())
                    answered.set()
                    await raw.aclose()

                idle = await trio.open_tcp_stream("127.0.0.1", port)  # keep-alive, no request
                nursery.start_soon(call)
                await gate.entered.wait()
                stop.set()
                await trio.testing.wait_all_tasks_blocked()
                assert not returned.is_set() and not results  # waiting for the call
                gate.release.set()
                await answered.wait()
                status, _, body = results[0]
                assert status == 200 and json.loads(body)["result"] == "released"
                await returned.wait()  # and then the server returned by itself
        assert await idle.receive_some(10) == b""  # the idle connection was closed
        await idle.aclose()

    trio.run(main)


def test_graceful_deadline_cancels_stuck_calls() -> None:
    """A call that never finishes: serve_http still returns (well within the test's
    fail_after) and the connection is closed, so the graceful deadline cancelled it."""
    gate = Gate()  # never released

    async def main() -> None:
        stop = trio.Event()
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(
                    partial(serve_http, gate.app(), "127.0.0.1", 0, shutdown_trigger=stop.wait,
                            graceful_timeout_s=0.3)
                )  # fmt: skip
                stuck = await _gated_call(port, b"gate")
                await gate.entered.wait()
                stop.set()
            assert await stuck.closed_by_server()
        await stuck.aclose()

    trio.run(main)


def test_cancelling_the_scope_stops_at_once() -> None:
    async def main() -> None:
        with trio.move_on_after(0.5) as scope:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve_http, new_app(), "127.0.0.1", 0)
                idle = await trio.open_tcp_stream("127.0.0.1", port)
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert await idle.receive_some(10) == b""
        await idle.aclose()

    trio.run(main)


def test_admin_listener_beside_public_one() -> None:
    admin_rpc = MethodRegistry(title="dvp admin")

    @admin_rpc.method("admin_peers", roles={"operator"})
    async def peers(ctx: CallContext) -> list[str]:
        return ["a", "b"]

    op_key = generate_api_key()
    admin_metrics = CollectorRegistry()
    admin = make_app(
        admin_rpc,
        CredentialStore.from_config(
            {"ops": {"roles": ["operator"], "key_sha256": op_key.key_sha256}}
        ),
        admin_metrics,
    )

    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            public_port = await nursery.start(
                partial(serve_http, new_app(), "127.0.0.1", 0, shutdown_trigger=stop.wait)
            )
            admin_port = await nursery.start(
                partial(serve_http, admin, "127.0.0.1", 0, shutdown_trigger=stop.wait))  # fmt: skip

            def talk() -> None:
                body = b'{"jsonrpc":"2.0","method":"admin_peers","id":1}'
                pub = http.client.HTTPConnection("127.0.0.1", public_port, timeout=10)
                assert json.loads(post(pub, body)[2])["error"]["code"] == -32601
                adm = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=10)
                auth = {**JSON, "Authorization": f"Bearer {op_key.key}"}
                assert json.loads(post(adm, body, auth)[2])["result"] == ["a", "b"]
                pub.close()
                adm.close()

            await in_thread(talk)
            stop.set()
        labels = {"method": "admin_peers", "outcome": "ok"}
        assert admin_metrics.get_sample_value("dvp_rpc_calls_total", labels) == 1
        # Sharing one metrics registry takes a second namespace.
        with pytest.raises(ValueError, match="Duplicated"):
            make_app(admin_rpc, CredentialStore.open_mode(), admin_metrics)
        make_app(admin_rpc, CredentialStore.open_mode(), admin_metrics,
                 metrics_namespace="dvp_admin")  # fmt: skip

    trio.run(main)


def test_open_mode_warns_loudly(caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(make_registry(), CredentialStore.open_mode(), CollectorRegistry())

    async def client(port: int) -> None:
        pass

    with caplog.at_level("WARNING", logger="dvp.http"):
        with_server(client, app)
    assert any("OPEN MODE" in r.getMessage() for r in caplog.records)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip

    async def client(port: int) -> None:
        def talk() -> None:
            context = ssl.create_default_context(cafile=str(cert))
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
            status, _, raw = post(conn, NOOP)
            assert status == 200 and json.loads(raw)["result"] is None
            conn.close()

        await in_thread(talk)

    with_server(client, tls_cert=str(cert), tls_key=str(key))
