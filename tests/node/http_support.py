"""What the RPC server tests share: a small registry, ``with_server`` (serve, run the client
side, shut down gracefully), ``http.client`` helpers and ``RawClient`` (h11 over raw trio
sockets, for clients that misbehave on purpose).
"""

from __future__ import annotations

import gc
import http.client
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import h11
import pytest
import trio
from prometheus_client import CollectorRegistry

from node.rpc.auth import CredentialStore, generate_api_key
from node.rpc.http import RpcApp, make_app, serve_http
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
