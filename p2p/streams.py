"""One framed libp2p stream, and request/response on top of it.

Owns:
- ``FramedStream``: a reader task and a writer task for one libp2p stream. The reader
  drains ``stream.read(65536)`` into a ``FrameDecoder`` without pause, applies the peer's
  rate limit and hands complete frames to a ``deliver`` callback; the writer drains an
  ``OutQueue`` and sends everything queued in one ``write()`` (coalescing), or a
  keepalive after ``keepalive_s`` of silence.
- ``RequestServer``: answers requests arriving on an inbound ``/dvp/sync/1`` stream with
  the app's handler, with bounded concurrency and a deadline per request.
- ``RequestClient``: the pending-request table of one peer's outbound sync stream.

Rules:
- Every await on the peer is bounded: reads by ``idle_timeout_s`` (keepalives keep a
  healthy stream under it), writes by ``write_timeout_s``. On any I/O error, oversize
  frame or timeout the stream ends: it is reset, counted, and ``run()`` returns a reason.
  Ending a stream cancels its tasks; the muxer never lets that cut a yamux frame in half
  on the shared connection (``libp2p_glue.QuietYamux``).
- Errors from libp2p I/O are caught *only* around the I/O calls: a peer can end its own
  stream but cannot raise into the app; a bug of ours in ``deliver`` still propagates.
- ``deliver`` must bound its own waiting (it runs on the reader task).
- The opener's first frame is its hello (``framing.encode_hello``: the protocol versions
  it speaks); an inbound stream hands the first frame to ``check_hello`` and ends
  (``version_refused``) if that returns a reason. The hello is never delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio
from libp2p.abc import INetStream

from p2p.config import SYNC, P2PConfig, RemoteError, RequestError
from p2p.framing import (
    KEEPALIVE,
    RPC_ERROR,
    RPC_REQUEST,
    RPC_RESPONSE,
    FrameDecoder,
    FrameTooLarge,
    MalformedFrame,
    OutQueue,
    RateLimiter,
    Stats,
    decode_rpc,
    encode_frame,
    encode_frames,
    encode_rpc,
)
from p2p.libp2p_glue import shielded

log = logging.getLogger("dvp.p2p")

READ_BYTES = 65536
RESET_TIMEOUT_S = 0.5

Deliver = Callable[["FramedStream", list[bytes]], Awaitable[None]]
RequestHandler = Callable[[bytes, bytes], Awaitable[bytes]]  # (peer key, request) -> response


def log_fields(**fields: object) -> dict[str, object]:
    """``extra=`` for the node's JSON log formatter (it prints ``record.fields``)."""
    return {"fields": fields}


class FramedStream:
    """Reader + writer of one stream. ``queue`` may be shared with the owner (outbound
    streams: the peer link keeps queued frames across stream re-opens), and so is
    ``limiter`` (inbound streams: one budget per peer and channel)."""

    def __init__(
        self,
        stream: INetStream,
        *,
        peer: bytes,
        channel: str,
        direction: str,
        config: P2PConfig,
        stats: Stats,
        deliver: Deliver,
        limiter: RateLimiter | None,
        queue: OutQueue | None = None,
        hello: bytes | None = None,
        check_hello: Callable[[bytes], str | None] | None = None,
    ) -> None:
        self.stream = stream
        self.hello = hello  # written first (streams we open)
        self.check_hello = check_hello  # applied to the first frame (streams we accept)
        self.peer = peer
        self.channel = channel
        self.direction = direction
        self.config = config
        self.stats = stats
        self.deliver = deliver
        self.queue = (
            queue
            if queue is not None
            else OutQueue(config.send_queue_frames, config.send_queue_bytes, drop_oldest=False)
        )
        self.decoder = FrameDecoder(config.max_frame_bytes)
        # Owned by the peer link so that re-opening a stream does not refill the bucket;
        # None on streams we opened (the peer only answers what we asked, or nothing).
        self.limiter = limiter
        self.nursery: trio.Nursery | None = None
        self.reason = ""
        self.alive = True
        self._rate_warned = False

    def send(self, payload: bytes) -> bool:
        """Queue one payload for this stream's writer; False (and counted) when full."""
        ok, evicted = self.queue.put(payload)
        self.stats.drop("send_queue_evicted", self.channel, evicted)
        if not ok:
            self.stats.drop("send_queue_full", self.channel)
        return ok

    def close(self, reason: str) -> None:
        """End the stream from outside (replaced, peer removed); ``run`` then returns."""
        self._end(reason)

    def _end(self, reason: str) -> None:
        if not self.reason:
            self.reason = reason
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()
        self.alive = False

    async def run(self) -> str:
        """Serve the stream until it ends; always resets it on the way out."""
        try:
            if self.alive:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    nursery.start_soon(self._read_loop)
                    nursery.start_soon(self._write_loop)
        finally:
            self.alive = False
            self.nursery = None
            if self.reason not in ("", "eof"):
                self.stats[f"streams_ended.{self.reason}"] += 1
            # Reset (not close): the peer must stop writing to us now, and a shutdown
            # must not wait on a graceful close handshake.
            with shielded(RESET_TIMEOUT_S):
                try:
                    await self.stream.reset()
                except Exception:  # the stream/connection may already be gone
                    pass
        return self.reason or "closed"

    # ------------------------------------------------------------------ reading

    async def _read_loop(self) -> None:
        ch = self.channel
        stats = self.stats
        while True:
            data = b""
            with trio.move_on_after(self.config.idle_timeout_s) as idle:
                try:
                    data = await self.stream.read(READ_BYTES)
                except EOFError:  # libp2p's StreamEOF subclasses EOFError
                    self._end("eof")
                    return
                except Exception as exc:  # reset, connection gone, muxer errors
                    log.debug(
                        "stream read failed",
                        extra=log_fields(peer=self.peer, channel=ch, error=repr(exc)),
                    )
                    self._end("read_error")
                    return
            if idle.cancelled_caught:
                self._end("idle_timeout")
                return
            if not data:
                self._end("eof")
                return
            stats[f"bytes_in.{ch}"] += len(data)
            try:
                frames = self.decoder.feed(data)
            except FrameTooLarge as exc:
                stats.drop("oversize", ch)
                log.warning(
                    "peer sent an oversize frame; dropping the stream",
                    extra=log_fields(peer=self.peer, channel=ch, size=exc.size, limit=exc.limit),
                )
                self._end("oversize")
                return
            if frames:
                await self._accept(frames)

    async def _accept(self, frames: list[bytes]) -> None:
        ch = self.channel
        stats = self.stats
        now = trio.current_time()
        accepted: list[bytes] = []
        limited = 0
        limiter = self.limiter
        if self.check_hello is not None:
            first = next((i for i, f in enumerate(frames) if f), None)
            if first is not None:
                refusal = self.check_hello(frames[first])
                self.check_hello = None
                if refusal is not None:
                    stats["refused_version"] += 1
                    self._end("version_refused")
                    return
                frames = frames[:first] + frames[first + 1 :]
        for f in frames:
            if not f:
                stats["keepalives_in"] += 1
            elif limiter is None or limiter.allow(len(f), now):
                accepted.append(f)
            else:
                limited += 1
        if limited:
            stats.drop("rate_limited", ch, limited)
            if not self._rate_warned:
                self._rate_warned = True
                log.warning(
                    "peer exceeds its rate limit; dropping the excess",
                    extra=log_fields(peer=self.peer, channel=ch),
                )
        if accepted:
            stats[f"frames_in.{ch}"] += len(accepted)
            await self.deliver(self, accepted)

    # ------------------------------------------------------------------ writing

    async def _write_loop(self) -> None:
        q = self.queue
        ch = self.channel
        if self.hello is not None and not await self._write(encode_frame(self.hello), -1):
            return
        while True:
            while not len(q):
                q.wakeup = trio.Event()
                with trio.move_on_after(self.config.keepalive_s) as quiet:
                    await q.wakeup.wait()
                if quiet.cancelled_caught and not await self._write(KEEPALIVE, 0):
                    return
            batch = q.take(self.config.max_write_bytes)
            if not await self._write(encode_frames(batch), len(batch)):
                self.stats.drop("write_failed", ch, len(batch))
                return

    async def _write(self, data: bytes, frames: int) -> bool:
        """``frames``: how many app frames ``data`` holds (0: a keepalive, -1: the hello)."""
        failed: Exception | None = None
        with trio.move_on_after(self.config.write_timeout_s) as slow:
            try:
                await self.stream.write(data)
            except Exception as exc:  # reset, closed, connection gone
                failed = exc
        # The muxer finishes a frame it has begun even past our deadline, or, if it
        # cannot, closes the connection and raises (libp2p_glue.QuietYamux): a write
        # that failed at our deadline is a timeout as much as one we cancelled.
        if slow.cancelled_caught or (failed is not None and trio.current_time() >= slow.deadline):
            log.info(
                "peer stopped reading; resetting the stream",
                extra=log_fields(peer=self.peer, channel=self.channel),
            )
            self._end("write_timeout")
            return False
        if failed is not None:
            log.debug(
                "stream write failed",
                extra=log_fields(peer=self.peer, channel=self.channel, error=repr(failed)),
            )
            self._end("write_error")
            return False
        s = self.stats
        if frames > 0:
            s[f"frames_out.{self.channel}"] += frames
            s[f"writes.{self.channel}"] += 1
            s[f"bytes_out.{self.channel}"] += len(data)
        elif frames < 0:
            s["hellos_out"] += 1
        else:
            s["keepalives_out"] += 1
        return True


class _Pending:
    __slots__ = ("done", "body", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.body = b""
        self.error: RequestError | None = None


class RequestClient:
    """Request ids and waiters for one peer; responses arrive on our outbound stream."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self._pending: dict[int, _Pending] = {}
        self._next_id = 1

    def start(self, stream: FramedStream, payload: bytes) -> tuple[int, _Pending]:
        """Queue a request on ``stream``; raises ``RequestError`` if its queue is full."""
        rid = self._next_id
        self._next_id += 1
        if not stream.send(encode_rpc(RPC_REQUEST, rid, payload)):
            raise RequestError("the peer's request queue is full")
        p = _Pending()
        self._pending[rid] = p
        return rid, p

    def forget(self, rid: int) -> None:
        self._pending.pop(rid, None)

    def fail_all(self, reason: str) -> None:
        for p in self._pending.values():
            p.error = RequestError(reason)
            p.done.set()
        self._pending.clear()

    async def deliver(self, stream: FramedStream, frames: list[bytes]) -> None:
        for f in frames:
            try:
                kind, rid, body = decode_rpc(f)
            except MalformedFrame:
                self.stats.drop("malformed", SYNC)
                continue
            if kind == RPC_REQUEST:  # requests belong on the peer's own stream
                self.stats.drop("unexpected", SYNC)
                continue
            p = self._pending.pop(rid, None)
            if p is None:
                self.stats["late_responses"] += 1
                continue
            if kind == RPC_ERROR:
                p.error = RemoteError(body[:200].decode("utf-8", "replace"))
            else:
                p.body = body
            p.done.set()


class RequestServer:
    """Runs the app's handler for requests from one peer, at most
    ``max_inflight_requests`` at a time, each bounded by ``request_handler_timeout_s``.
    Requests over that concurrency or over the peer's rate limit are answered with an
    error at once (a tiny frame, and the caller fails fast instead of timing out);
    reading never stops."""

    def __init__(
        self,
        peer: bytes,
        handler: Callable[[], RequestHandler | None],
        config: P2PConfig,
        stats: Stats,
        limiter: RateLimiter,
    ) -> None:
        self.peer = peer
        self.handler = handler
        self.config = config
        self.stats = stats
        self.limiter = limiter
        self.inflight = 0

    async def deliver(self, stream: FramedStream, frames: list[bytes]) -> None:
        now = trio.current_time()
        for f in frames:
            try:
                kind, rid, body = decode_rpc(f)
            except MalformedFrame:
                self.stats.drop("malformed", SYNC)
                continue
            if kind != RPC_REQUEST:
                self.stats.drop("unexpected", SYNC)
                continue
            self.stats["requests_in"] += 1
            if not self.limiter.allow(len(f), now):
                self.stats.drop("rate_limited", SYNC)
                self._reply(stream, RPC_ERROR, rid, b"rate limited")
                continue
            handler = self.handler()
            if handler is None:
                self._reply(stream, RPC_ERROR, rid, b"no request handler")
            elif self.inflight >= self.config.max_inflight_requests:
                self.stats["requests_busy"] += 1
                self._reply(stream, RPC_ERROR, rid, b"busy")
            elif stream.nursery is not None:
                self.inflight += 1
                stream.nursery.start_soon(self._serve, stream, handler, rid, body)

    async def _serve(
        self, stream: FramedStream, handler: RequestHandler, rid: int, body: bytes
    ) -> None:
        try:
            response: bytes | None = None
            with trio.move_on_after(self.config.request_handler_timeout_s):
                try:
                    response = bytes(await handler(self.peer, body))
                except Exception:
                    # The request came from a peer: a handler that chokes on it must
                    # not take the transport down. The app sees the traceback here.
                    log.exception("request handler failed", extra=log_fields(peer=self.peer))
                    self._reply(stream, RPC_ERROR, rid, b"handler failed")
                    return
            if response is None:
                self.stats["request_handler_timeouts"] += 1
                self._reply(stream, RPC_ERROR, rid, b"handler timed out")
            elif len(response) + 9 > self.config.max_frame_bytes:
                self.stats["responses_too_large"] += 1
                self._reply(stream, RPC_ERROR, rid, b"response too large")
            else:
                self._reply(stream, RPC_RESPONSE, rid, response)
        finally:
            self.inflight -= 1

    def _reply(self, stream: FramedStream, kind: int, rid: int, body: bytes) -> None:
        stream.send(encode_rpc(kind, rid, body))
