"""The node's HTTP face: an ASGI app (JSON-RPC, /metrics, probes) served by hypercorn-trio.

Owns ``RpcApp`` (the ASGI callable), ``RpcMetrics`` (its Prometheus series), ``make_app``
(registry + credentials + metrics registry -> app) and ``serve_http`` (run hypercorn's
trio worker inside the caller's nursery). HTTP parsing is hypercorn's (h11/h2); this
module never parses HTTP itself.

Routes:
- ``POST /`` and ``POST /rpc``: JSON-RPC 2.0 (``Content-Type: application/json``, UTF-8).
  Always 200 with a JSON-RPC body, or 204 when every call was a notification.
- ``GET /metrics``: Prometheus text from the registry given to ``make_app``; with
  ``metrics_roles``, only for a caller whose API key has one of them (401/403 else).
- ``GET /livez``: 200 ``{"status": "ok"}`` whenever the process answers (Kubernetes'
  liveness probe: restart the process only if this fails).
- ``GET /readyz`` and ``GET /health``: the health callback's report (``node.health``:
  which checks fail and their figures), 200 if its ``status`` is "ok", else 503
  (Kubernetes' readiness probe: send no clients while it fails).
- ``GET /verify`` and ``GET /verify/...``: the verification page and its files, and the
  node's genesis as ``/verify/genesis.json`` (``node.rpc.static``: a fixed allow-list,
  strict Content-Security-Policy); only when ``make_app`` is given ``page``.
- anything else: 404 / 405 (with ``Allow``), JSON body ``{"error": ...}``.

Rules:
- The body is never buffered past the cap: a declared ``Content-Length`` over
  ``max_body_bytes`` gets 413 before a byte is read, a chunked body is read only until
  it crosses the cap. Either way the response says ``Connection: close`` and hypercorn
  drops the connection rather than reading the rest.
- A client that stalls mid-body gets 408 after ``body_timeout_s``; it holds only its own
  connection task, never another client's.
- Each call runs under a deadline (the method's ``timeout_s`` or ``call_timeout_s``);
  overrunning gives -32005, not a hung connection.
- Metrics go to the ``CollectorRegistry`` passed in, never the global one, so any
  number of apps (tests, a separate admin listener) can coexist.
- Graceful stop: ``shutdown_trigger`` returning stops accepting, lets in-flight
  requests finish for ``graceful_timeout_s``, then cancels them. Cancelling the
  enclosing scope stops at once.

An admin listener is a second ``serve_http`` of a second ``make_app`` (own method
registry, own credentials) on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, Final

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from node.rpc.auth import CredentialStore
from node.rpc.errors import Timeout, Unauthorised
from node.rpc.jsonrpc import Call, Dispatcher, Executor, JsonValue, Limits
from node.rpc.registry import MethodRegistry
from node.rpc.static import SECURITY_HEADERS, StaticSite
from p2p.runtime import TaskStatus

__all__ = ["RpcApp", "RpcMetrics", "make_app", "serve_http"]

log = logging.getLogger("dvp.http")  # dvp.*: the node's log prints it as a JSON line

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
HealthCheck = Callable[[], Mapping[str, Any]]

_JSON: Final = b"application/json"
_GET_ROUTES: Final = frozenset({"/metrics", "/livez", "/readyz", "/health"})
# Small bodies sent with a refused request are read and dropped so the connection can
# be reused; bigger ones are not worth reading, and the connection is closed instead.
_DRAIN_LIMIT_BYTES: Final = 64 * 1024
# Latency buckets (seconds) sized for a local RPC: 100 us to 10 s.
_BUCKETS_S: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                     0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip


class RpcMetrics:
    """Per-call and per-HTTP-request series on one registry.

    ``dvp_rpc_calls_total{method,outcome}``, ``dvp_rpc_call_duration_seconds{method}``,
    ``dvp_http_requests_total{path,status}``, ``dvp_http_request_duration_seconds{path}``.
    Label values are bounded: methods come from the registry (plus ``<unknown>``,
    ``<invalid>``), paths from the route table (plus ``other``).
    """

    def __init__(self, registry: CollectorRegistry, *, namespace: str = "dvp") -> None:
        self.calls = Counter(
            "rpc_calls", "JSON-RPC calls by method and outcome", ["method", "outcome"],
            namespace=namespace, registry=registry,
        )  # fmt: skip
        self.call_seconds = Histogram(
            "rpc_call_duration_seconds", "JSON-RPC call latency (validation + handler)",
            ["method"], namespace=namespace, registry=registry, buckets=_BUCKETS_S,
        )  # fmt: skip
        self.http_requests = Counter(
            "http_requests", "HTTP requests by route and status", ["path", "status"],
            namespace=namespace, registry=registry,
        )  # fmt: skip
        self.http_seconds = Histogram(
            "http_request_duration_seconds", "HTTP request latency, body read to response",
            ["path"], namespace=namespace, registry=registry, buckets=_BUCKETS_S,
        )  # fmt: skip
        # labels() costs a lock and a tuple build; cache the children (bounded sets).
        self._call_children: dict[tuple[str, str], Any] = {}
        self._call_hist: dict[str, Any] = {}
        self._http_children: dict[tuple[str, int], Any] = {}
        self._http_hist: dict[str, Any] = {}

    def observe_call(self, method: str, outcome: str, seconds: float) -> None:
        key = (method, outcome)
        counter = self._call_children.get(key)
        if counter is None:
            counter = self._call_children[key] = self.calls.labels(method, outcome)
        counter.inc()
        hist = self._call_hist.get(method)
        if hist is None:
            hist = self._call_hist[method] = self.call_seconds.labels(method)
        hist.observe(seconds)

    def observe_http(self, path: str, status: int, seconds: float) -> None:
        key = (path, status)
        counter = self._http_children.get(key)
        if counter is None:
            counter = self._http_children[key] = self.http_requests.labels(path, str(status))
        counter.inc()
        hist = self._http_hist.get(path)
        if hist is None:
            hist = self._http_hist[path] = self.http_seconds.labels(path)
        hist.observe(seconds)


def _deadline_executor(default_timeout_s: float) -> Executor:
    """An executor that runs calls in order, each under its deadline (-32005 on overrun).

    One cancel scope serves the whole body: its deadline is moved before each call.
    Entering a scope costs about as much as the rest of a no-op call, so a batch of 20
    pays once, not 20 times. A deadline that fires cancels that scope for good, so the
    remaining calls continue in a fresh one.
    """

    def deadline(call: Call) -> float:
        timeout_s = call.method.timeout_s
        return trio.current_time() + (default_timeout_s if timeout_s is None else timeout_s)

    async def execute(calls: list[Call]) -> None:
        i, n = 0, len(calls)
        while i < n:
            with trio.CancelScope(deadline=deadline(calls[i])) as scope:
                while True:
                    await calls[i].run()
                    i += 1
                    if i == n or scope.cancel_called:  # done, or fired as a handler returned
                        break
                    scope.deadline = deadline(calls[i])
            if scope.cancelled_caught:  # the deadline interrupted calls[i]
                method = calls[i].method
                timeout_s = default_timeout_s if method.timeout_s is None else method.timeout_s
                calls[i].fail(Timeout(f"{method.name} did not finish within {timeout_s:g} s"))
                i += 1

    return execute


def _json_body(obj: JsonValue) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class RpcApp:
    """The ASGI application. Build it with ``make_app``."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        metrics_registry: CollectorRegistry,
        metrics: RpcMetrics,
        *,
        body_timeout_s: float = 10.0,
        health: HealthCheck | None = None,
        metrics_roles: frozenset[str] | None = None,
        page: StaticSite | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.page = page
        self.metrics_roles = metrics_roles
        self.metrics_registry = metrics_registry
        self.metrics = metrics
        self.body_timeout_s = body_timeout_s
        self.max_body_bytes = dispatcher.limits.max_body_bytes
        self._health = health

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        # Anything else (websocket) returns unanswered: hypercorn refuses it.

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        verb: str = scope["method"]
        if path == "/metrics" and self.metrics_roles is not None:
            refused = await self._metrics_refusal(scope, receive, send)
            if refused:
                self.metrics.observe_http(path, refused, time.perf_counter() - started)
                return
        if path == "/" or path == "/rpc":
            route = "/rpc"
            if verb == "POST":
                status = await self._rpc(scope, receive, send)
            else:
                status = await self._refuse(scope, receive, send, 405, "use POST", b"POST")
        elif path in _GET_ROUTES:
            route = path
            if verb == "GET":
                if path == "/metrics":
                    status = await _respond(
                        send, 200, generate_latest(self.metrics_registry),
                        CONTENT_TYPE_LATEST.encode(),
                    )  # fmt: skip
                elif path == "/livez":
                    status = await _respond(send, 200, b'{"status":"ok"}')
                else:
                    status = await self._send_health(send)
            else:
                status = await self._refuse(scope, receive, send, 405, "use GET", b"GET")
        elif self.page is not None and self.page.owns(path):
            route = "/verify"
            if verb == "GET":
                status = await self._send_page_file(scope, send, self.page)
            else:
                status = await self._refuse(scope, receive, send, 405, "use GET", b"GET")
        else:
            route = "other"
            status = await self._refuse(scope, receive, send, 404, "not found")
        self.metrics.observe_http(route, status, time.perf_counter() - started)

    async def _rpc(self, scope: Scope, receive: Receive, send: Send) -> int:
        content_type = content_length = authorization = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                content_length = value
            elif name == b"authorization":
                authorization = value
        if not _is_json(content_type):
            return await self._refuse(
                scope, receive, send, 415, "Content-Type must be application/json (UTF-8)"
            )
        declared = _content_length(content_length)
        if declared < 0:
            return await self._refuse(scope, receive, send, 400, "bad Content-Length")
        if declared > self.max_body_bytes:
            # Answer from the header alone; hypercorn then closes instead of reading on.
            return await _too_large(send, self.max_body_bytes)
        body = await self._read_body(receive)
        if type(body) is int:
            if body == 413:
                return await _too_large(send, self.max_body_bytes)
            if body == 408:
                return await _respond(
                    send, 408, b'{"error":"request body not received in time"}',
                    close=True,
                )  # fmt: skip
            return 499  # the client went away; nothing to send
        assert isinstance(body, bytes)
        client = scope.get("client")
        response = await self.dispatcher.dispatch(
            body,
            authorization=None if authorization is None else authorization.decode("latin-1"),
            remote=None if not client else f"{client[0]}:{client[1]}",
        )
        if response is None:
            return await _respond(send, 204, b"")
        return await _respond(send, 200, response)

    async def _read_body(self, receive: Receive) -> bytes | int:
        """The whole body, or 413 (crossed the cap), 408 (too slow), 499 (client left)."""
        chunks: list[bytes] = []
        size = 0
        # Fast path. hypercorn-trio queues a small body as a data message then an end
        # message, with one scheduling point between them. If ``receive`` is a trio
        # channel's (as hypercorn-trio passes it), take what is queued without waiting,
        # allowing that one scheduling round, and skip the deadline: entering a cancel
        # scope costs as much as the rest of a no-op dispatch. Other servers, or a body
        # still on the wire, take the slow path.
        channel = getattr(receive, "__self__", None)
        if isinstance(channel, trio.MemoryReceiveChannel):
            rounds = 0
            while True:
                try:
                    message = channel.receive_nowait()
                except trio.WouldBlock:
                    if rounds:
                        break
                    rounds += 1
                    await trio.lowlevel.checkpoint()
                    continue
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    return 499
                if message["type"] != "http.request":
                    return 499
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    return 413
                if chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return await self._read_body_slowly(receive, chunks, size)

    async def _read_body_slowly(
        self, receive: Receive, chunks: list[bytes], size: int
    ) -> bytes | int:
        with trio.move_on_after(self.body_timeout_s):
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return 499
                chunk: bytes = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    return 413
                if chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return 408

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        status: int,
        message: str,
        allow: bytes | None = None,
    ) -> int:
        """Answer an error, first reading a small body so the connection stays usable."""
        declared = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = _content_length(value)
            elif name == b"transfer-encoding":
                chunked = True
        close = chunked or (declared is not None and not 0 <= declared <= _DRAIN_LIMIT_BYTES)
        if declared and not close:
            with trio.move_on_after(self.body_timeout_s) as scope_:
                while (await receive()).get("more_body", False):
                    pass
            close = scope_.cancelled_caught
        headers = [(b"allow", allow)] if allow is not None else []
        body = _json_body({"error": message})
        return await _respond(send, status, body, close=close, headers=headers)

    async def _metrics_refusal(self, scope: Scope, receive: Receive, send: Send) -> int:
        """401/403 if this request may not read the metrics, 0 if it may: the same
        bearer keys as the RPC (``CredentialStore``; open mode lets everyone in)."""
        header = next((v for n, v in scope["headers"] if n == b"authorization"), None)
        roles = " or ".join(sorted(self.metrics_roles or ()))
        try:
            who = self.dispatcher.credentials.authenticate(
                None if header is None else header.decode("latin-1")
            )
        except Unauthorised as exc:
            return await self._refuse(scope, receive, send, 401, str(exc))
        if who is None:
            need = f"metrics require an API key with role {roles} (Authorization: Bearer)"
            return await self._refuse(scope, receive, send, 401, need)
        if not who.has_any_role(self.metrics_roles or frozenset()):
            need = (
                f"metrics require role {roles}; {who.member_id} has {', '.join(sorted(who.roles))}"
            )
            return await self._refuse(scope, receive, send, 403, need)
        return 0

    async def _send_page_file(self, scope: Scope, send: Send, page: StaticSite) -> int:
        file = page.get(scope["path"])
        if file is None:
            body = _json_body({"error": "not found"})
            return await _respond(send, 404, body, headers=list(SECURITY_HEADERS))
        headers = [*SECURITY_HEADERS, (b"cache-control", b"no-cache"), (b"etag", file.etag)]
        if any(n == b"if-none-match" and file.etag in v for n, v in scope["headers"]):
            # No Content-Length: on a 304 it would have to be the full file's (RFC 9110 8.6).
            await send({"type": "http.response.start", "status": 304, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return 304
        return await _respond(send, 200, file.body, file.content_type, headers=headers)

    async def _send_health(self, send: Send) -> int:
        report: dict[str, Any] = {"status": "ok"}
        if self._health is not None:
            try:
                report.update(self._health())
            except Exception:
                log.exception("health check failed")
                report = {"status": "error"}
        status = 200 if report.get("status") == "ok" else 503
        return await _respond(send, status, _json_body(report))


def _content_length(value: bytes | None) -> int:
    """The declared body size, 0 if absent (chunked), -1 if malformed."""
    if value is None:
        return 0
    try:
        return int(value) if value.isdigit() else -1
    except ValueError:
        return -1


def _is_json(content_type: bytes | None) -> bool:
    if content_type is None:
        return False
    mime, _, params = content_type.partition(b";")
    if mime.strip().lower() != _JSON:
        return False
    params = params.strip().lower()
    # The only charset JSON may use on the wire is UTF-8 (RFC 8259 section 8.1).
    return not params or params.replace(b" ", b"") in (b"charset=utf-8", b'charset="utf-8"')


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes = _JSON,
    *,
    close: bool = False,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> int:
    head = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    if close:
        head.append((b"connection", b"close"))
    if headers:
        head.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
    return status


async def _too_large(send: Send, limit: int) -> int:
    body = _json_body({"error": f"request body larger than {limit} bytes"})
    return await _respond(send, 413, body, close=True)


def make_app(
    registry: MethodRegistry,
    credentials: CredentialStore,
    metrics_registry: CollectorRegistry,
    *,
    limits: Limits | None = None,
    call_timeout_s: float = 30.0,
    body_timeout_s: float = 10.0,
    health: HealthCheck | None = None,
    metrics_namespace: str = "dvp",
    metrics_roles: frozenset[str] | None = None,
    page: StaticSite | None = None,
) -> RpcApp:
    """An ASGI app serving ``registry`` to ``credentials``, metrics on ``metrics_registry``
    (to callers with one of ``metrics_roles`` if given, else to anyone), and the
    verification page if ``page`` is given.

    Two apps may share one metrics registry only with different ``metrics_namespace``
    (e.g. ``"dvp_admin"``); prometheus-client refuses duplicate series names.
    """
    metrics = RpcMetrics(metrics_registry, namespace=metrics_namespace)
    dispatcher = Dispatcher(
        registry,
        credentials,
        limits=limits,
        execute=_deadline_executor(call_timeout_s),
        observe=metrics.observe_call,
    )
    return RpcApp(
        dispatcher,
        metrics_registry,
        metrics,
        body_timeout_s=body_timeout_s,
        health=health,
        metrics_roles=metrics_roles,
        page=page,
    )


async def serve_http(
    app: Any,
    host: str,
    port: int,
    *,
    task_status: TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    shutdown_trigger: Callable[[], Awaitable[Any]] | None = None,
    graceful_timeout_s: float = 5.0,
    keep_alive_timeout_s: float = 30.0,
    keep_alive_max_requests: int = 10_000,
) -> None:
    """Serve ``app`` with hypercorn's trio worker until shut down.

    Use as ``port = await nursery.start(serve_http, app, "127.0.0.1", 0)``: it reports
    the port actually bound (so port 0 works). TLS is on when both ``tls_cert`` and
    ``tls_key`` (PEM paths) are given. See the module docstring for the two ways to
    stop it.
    """
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("TLS needs both tls_cert and tls_key")
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.certfile = tls_cert
    config.keyfile = tls_key
    config.graceful_timeout = graceful_timeout_s
    config.keep_alive_timeout = keep_alive_timeout_s
    config.keep_alive_max_requests = keep_alive_max_requests
    config.include_server_header = False  # no version banner for scanners
    config.accesslog = None  # per-request logs would dominate; metrics count requests
    config.errorlog = logging.getLogger("dvp.http.hypercorn")

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(hypercorn_serve, app, config, shutdown_trigger=shutdown_trigger, mode="asgi")
        )
        bound_port = int(binds[0].rsplit(":", 1)[1])
        log.info("serving HTTP%s on %s", "S" if tls_cert else "", ", ".join(binds))
        dispatcher = getattr(app, "dispatcher", None)
        if dispatcher is not None and dispatcher.credentials.open:
            log.warning(
                "RPC is in OPEN MODE: anyone who can reach it may call every method, "
                "including protected ones. For devnets only; configure api credentials.",
                extra={"fields": {"listen": f"{host}:{bound_port}"}},
            )
        task_status.started(bound_port)
