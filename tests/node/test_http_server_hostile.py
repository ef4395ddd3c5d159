"""The RPC server against hostile or slow clients: giant declared or chunked bodies, stalled
clients, concurrent connections (helpers: tests/node/http_support.py).
"""

from __future__ import annotations

import http.client
import json
import time

import h11
import pytest
import trio

from node.rpc.jsonrpc import Limits
from tests.node.http_support import (
    NOOP,
    RawClient,
    in_thread,
    new_app,
    post,
    with_server,
)

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
