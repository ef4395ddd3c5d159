"""The RPC server over real sockets: hypercorn's trio worker on 127.0.0.1, port 0.

Each test runs its own ``trio.run`` (pytest-trio is not used) through ``with_server``,
which starts ``serve_http`` in a nursery, runs the client side, then triggers the
graceful shutdown and waits for the server to return. A test that returns therefore
also shows the server stopped with no task left behind.

Clients: ``http.client`` in a worker thread where ordinary requests suffice, and raw
trio sockets driven by h11 (client side) where a test must misbehave on purpose
(stall mid-body, stream a body that never ends).
"""

from __future__ import annotations

import gc
import http.client
import json
import shutil
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
from prometheus_client import CollectorRegistry

from node.rpc.auth import CredentialStore, generate_api_key
from node.rpc.http import RpcApp, make_app, serve_http
from node.rpc.jsonrpc import Limits
from node.rpc.params import Int, Param
from node.rpc.registry import CallContext, MethodRegistry

KEY = generate_api_key()
CREDENTIALS = {"hk-bank": {"roles": ["verifier"], "key_sha256": KEY.key_sha256}}
JSON = {"Content-Type": "application/json"}
NOOP = b'{"jsonrpc":"2.0","method":"noop","id":1}'


def make_registry() -> MethodRegistry:
    rpc = MethodRegistry()

    @rpc.method("noop")
    async def noop(ctx: CallContext) -> None:
        return None

    @rpc.method("remote")
    async def remote(ctx: CallContext) -> str | None:
        return ctx.remote

    @rpc.method("sleep", Param("ms", Int(0, 60_000)))
    async def sleep(ctx: CallContext, ms: int) -> int:
        await trio.sleep(ms / 1000)
        return ms

    @rpc.method("patient", Param("ms", Int(0, 60_000)), timeout_s=2.0)
    async def patient(ctx: CallContext, ms: int) -> int:
        await trio.sleep(ms / 1000)
        return ms

    @rpc.method("whoami", roles={"verifier"})
    async def whoami(ctx: CallContext) -> str:
        assert ctx.principal is not None
        return ctx.principal.member_id

    return rpc


def new_app(**options: Any) -> RpcApp:
    options.setdefault("body_timeout_s", 5.0)
    return make_app(
        make_registry(), CredentialStore.from_config(CREDENTIALS), CollectorRegistry(), **options
    )


def with_server(
    client: Callable[[int], Awaitable[None]],
    app: RpcApp | None = None,
    **serve_options: Any,
) -> None:
    """Run ``client(port)`` against a fresh server, then stop it gracefully."""

    async def main() -> None:
        stop = trio.Event()
        serve_options.setdefault("graceful_timeout_s", 2.0)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(
                    serve_http,
                    app if app is not None else new_app(),
                    "127.0.0.1",
                    0,
                    shutdown_trigger=stop.wait,
                    **serve_options,
                )
            )
            assert port > 0
            try:
                with trio.fail_after(60):
                    await client(port)
            finally:
                stop.set()
        # The nursery exited: the server returned on its own after the trigger.
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", port)

    trio.run(main)
    gc.collect()  # surface any unclosed socket (ResourceWarning is an error here) now


def post(
    conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn.request("POST", "/rpc", body=body, headers=headers if headers is not None else JSON)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


def get(conn: http.client.HTTPConnection, path: str) -> tuple[int, dict[str, str], bytes]:
    conn.request("GET", path)
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()


async def in_thread(fn: Callable[[], Any]) -> Any:
    return await trio.to_thread.run_sync(fn)


class RawClient:
    """A socket whose HTTP framing is done by h11, so the test controls every byte."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, event: Any) -> None:
        data = self.h11.send(event)
        if data:
            await self.stream.send_all(data)

    async def request_head(self, target: str, headers: list[tuple[str, str]]) -> None:
        all_headers = [("Host", "localhost"), *headers]
        await self.send(h11.Request(method="POST", target=target, headers=all_headers))

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        status = 0
        headers: dict[str, str] = {}
        body = b""
        while True:
            event = self.h11.next_event()
            if event is h11.NEED_DATA:
                self.h11.receive_data(await self.stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = {k.decode(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, body
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def closed_by_server(self) -> bool:
        """True once the server has closed (EOF or reset), reading whatever is left."""
        try:
            while await self.stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        return True

    async def aclose(self) -> None:
        await self.stream.aclose()


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
    reports: Iterator[dict[str, Any]] = iter([{"height": 7}, {"height": 8, "status": "x"}])
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
    app = new_app(call_timeout_s=0.2)

    async def client(port: int) -> None:
        def talk() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            started = time.monotonic()
            _, _, raw = post(
                conn, b'{"jsonrpc":"2.0","method":"sleep","params":{"ms":5000},"id":1}'
            )
            assert json.loads(raw)["error"] == {
                "code": -32005, "message": "sleep did not finish within 0.2 s"}  # fmt: skip
            assert time.monotonic() - started < 2
            # In a batch, a call that overruns does not take the others down with it,
            # and a method's own timeout_s overrides the server default.
            batch = [
                {"jsonrpc": "2.0", "method": "sleep", "params": {"ms": 5000}, "id": 1},
                {"jsonrpc": "2.0", "method": "noop", "id": 2},
                {"jsonrpc": "2.0", "method": "sleep", "params": {"ms": 50}, "id": 3},
                {"jsonrpc": "2.0", "method": "patient", "params": {"ms": 400}, "id": 4},
                {"jsonrpc": "2.0", "method": "sleep", "params": {"ms": 5000}, "id": 5},
            ]
            started = time.monotonic()
            _, _, raw = post(conn, json.dumps(batch).encode())
            responses = json.loads(raw)
            assert [r["id"] for r in responses] == [1, 2, 3, 4, 5]
            assert responses[0]["error"]["code"] == -32005
            assert responses[1]["result"] is None and responses[2]["result"] == 50
            assert responses[3]["result"] == 400
            assert responses[4]["error"]["code"] == -32005
            assert time.monotonic() - started < 3
            conn.close()

        await in_thread(talk)

    with_server(client, app)


# --- hostile or slow clients ----------------------------------------------------------


def test_giant_declared_body_is_refused_unread() -> None:
    app = new_app(limits=Limits(max_body_bytes=64 * 1024))

    async def client(port: int) -> None:
        raw = await RawClient.connect(port)
        await raw.request_head("/rpc", [("Content-Type", "application/json"),
                                        ("Content-Length", str(10**12))])  # fmt: skip
        await raw.send(h11.Data(data=b"[" * 1000))
        status, headers, body = await raw.response()
        assert status == 413 and headers["connection"] == "close"
        assert b"65536 bytes" in body
        # The server hangs up instead of reading on: sending the rest soon fails.
        sent = 0
        with pytest.raises((trio.BrokenResourceError, trio.ClosedResourceError)):
            while sent < 256 * 1024 * 1024:
                await raw.stream.send_all(b"x" * 65536)
                sent += 65536
        assert sent < 64 * 1024 * 1024
        await raw.aclose()

    with_server(client, app)


def test_giant_chunked_body_stops_at_the_cap() -> None:
    app = new_app(limits=Limits(max_body_bytes=64 * 1024))

    async def client(port: int) -> None:
        raw = await RawClient.connect(port)
        await raw.request_head("/rpc", [("Content-Type", "application/json"),
                                        ("Transfer-Encoding", "chunked")])  # fmt: skip
        sent = 0
        result: list[tuple[int, dict[str, str], bytes]] = []

        async def read_response() -> None:
            result.append(await raw.response())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_response)
            try:
                while not result and sent < 256 * 1024 * 1024:
                    await raw.stream.send_all(b"10000\r\n" + b" " * 65536 + b"\r\n")
                    sent += 65536
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        assert result[0][0] == 413
        assert sent < 64 * 1024 * 1024
        await raw.aclose()

    with_server(client, app)


def test_stalled_clients_do_not_block_others() -> None:
    app = new_app(body_timeout_s=0.5)

    async def client(port: int) -> None:
        # One client sends headers and part of the body, another half a request line.
        stalled = await RawClient.connect(port)
        await stalled.request_head("/rpc", [("Content-Type", "application/json"),
                                            ("Content-Length", "100")])  # fmt: skip
        await stalled.send(h11.Data(data=b'{"jsonrpc"'))
        half = await trio.open_tcp_stream("127.0.0.1", port)
        await half.send_all(b"POST /rpc HTTP/1.1\r\nHost: x\r\nContent-")

        def talk() -> float:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            started = time.monotonic()
            for _ in range(20):
                status, _, _ = post(conn, NOOP)
                assert status == 200
            conn.close()
            return time.monotonic() - started

        assert await in_thread(talk) < 0.5  # all twenty while the others stall

        # The stalled body gets 408 once its body deadline passes, then is closed.
        status, headers, body = await stalled.response()
        assert status == 408 and headers["connection"] == "close"
        assert await stalled.closed_by_server()
        await stalled.aclose()
        # The half request line is dropped by the keep-alive (idle) timeout.
        with trio.fail_after(5):
            while await half.receive_some(1024):
                pass
        await half.aclose()

    with_server(client, app, keep_alive_timeout_s=1.0)


def test_connections_are_served_concurrently() -> None:
    async def client(port: int) -> None:
        def one() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            _, _, raw = post(conn, b'{"jsonrpc":"2.0","method":"sleep","params":{"ms":300},"id":1}')
            assert json.loads(raw)["result"] == 300
            conn.close()

        started = trio.current_time()
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(in_thread, one)
        assert trio.current_time() - started < 1.5  # 8 x 300 ms would be 2.4 s in series

    with_server(client)


# --- lifecycle --------------------------------------------------------------------------


def test_graceful_shutdown_finishes_in_flight_calls() -> None:
    async def main() -> None:
        stop = trio.Event()
        results: list[Any] = []
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_http, new_app(), "127.0.0.1", 0, shutdown_trigger=stop.wait,
                        graceful_timeout_s=5.0)
            )  # fmt: skip

            async def slow_call() -> None:
                raw = await RawClient.connect(port)
                body = b'{"jsonrpc":"2.0","method":"sleep","params":{"ms":400},"id":1}'
                await raw.request_head("/rpc", [("Content-Type", "application/json"),
                                                ("Content-Length", str(len(body)))])  # fmt: skip
                await raw.send(h11.Data(data=body))
                await raw.send(h11.EndOfMessage())
                results.append(await raw.response())
                await raw.aclose()

            idle = await trio.open_tcp_stream("127.0.0.1", port)  # keep-alive, no request
            nursery.start_soon(slow_call)
            await trio.sleep(0.1)
            started = trio.current_time()
            stop.set()
        # Returned after the in-flight call finished, well before the 5 s deadline.
        assert 0.2 < trio.current_time() - started < 3
        status, _, body = results[0]
        assert status == 200 and json.loads(body)["result"] == 400
        assert await idle.receive_some(10) == b""  # the idle connection was closed
        await idle.aclose()

    trio.run(main)


def test_graceful_deadline_cancels_stuck_calls() -> None:
    async def main() -> None:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_http, new_app(), "127.0.0.1", 0, shutdown_trigger=stop.wait,
                        graceful_timeout_s=0.3)
            )  # fmt: skip
            stuck = await RawClient.connect(port)
            body = b'{"jsonrpc":"2.0","method":"sleep","params":{"ms":60000},"id":1}'
            await stuck.request_head("/rpc", [("Content-Type", "application/json"),
                                              ("Content-Length", str(len(body)))])  # fmt: skip
            await stuck.send(h11.Data(data=body))
            await trio.sleep(0.1)
            started = trio.current_time()
            stop.set()
        assert trio.current_time() - started < 2
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

    with caplog.at_level("WARNING", logger="node.http"):
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
