"""Wire framing, the request/response envelope, rate limiting and send queues (no I/O).

Owns the byte layout of everything the dvp protocols put on a libp2p stream:

    frame    = length:u32 big-endian || payload        (length <= max_frame_bytes)
    keepalive = a frame with an empty payload (never delivered to the app)
    sync     = frame whose payload is kind:u8 || request id:u64 big-endian || body
               kind 0 = request, 1 = response, 2 = error (body = UTF-8 reason)
    hello    = the first frame of every stream: "dvp/hello" || lowest:u16 || highest:u16,
               the protocol versions the opener speaks (never delivered to the app)

Rules:
- ``FrameDecoder`` never buffers more than one maximal frame plus one read: a length
  above the limit raises ``FrameTooLarge`` as soon as the 4 header bytes are in, before
  the body arrives. After that the stream cannot be resynchronised and must be dropped.
- ``RateLimiter`` and ``OutQueue`` take the current time / sizes as arguments and never
  block, so they can be tested without trio and used from synchronous ``send()``.
- A payload is ``bytes``; nothing here interprets it.
"""

from __future__ import annotations

import struct
from collections import Counter, deque
from collections.abc import Iterable

import trio

from p2p.config import RateLimit

HEADER = struct.Struct(">I")
HEADER_BYTES = HEADER.size
KEEPALIVE = HEADER.pack(0)

RPC_HEADER = struct.Struct(">BQ")
RPC_REQUEST = 0
RPC_RESPONSE = 1
RPC_ERROR = 2
MAX_REQUEST_ID = 2**64 - 1

HELLO_MAGIC = b"dvp/hello"
HELLO_VERSIONS = struct.Struct(">HH")


def encode_hello(versions: tuple[int, int]) -> bytes:
    """The hello payload for the protocol versions ``(lowest, highest)``."""
    return HELLO_MAGIC + HELLO_VERSIONS.pack(*versions)


def decode_hello(payload: bytes) -> tuple[int, int] | None:
    """``(lowest, highest)`` from a hello payload; None if it is not one."""
    if len(payload) != len(HELLO_MAGIC) + HELLO_VERSIONS.size or not payload.startswith(
        HELLO_MAGIC
    ):
        return None
    low, high = HELLO_VERSIONS.unpack_from(payload, len(HELLO_MAGIC))
    return (low, high) if 1 <= low <= high else None


class FrameTooLarge(Exception):
    """The peer announced a frame longer than the limit; the stream is unusable."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the {limit}-byte limit")
        self.size = size
        self.limit = limit


class MalformedFrame(Exception):
    """A frame that does not parse as what its channel carries."""


def encode_frame(payload: bytes) -> bytes:
    return HEADER.pack(len(payload)) + payload


def encode_frames(payloads: Iterable[bytes]) -> bytes:
    """All payloads framed and concatenated: the body of one coalesced ``write()``."""
    parts: list[bytes] = []
    pack = HEADER.pack
    for p in payloads:
        parts.append(pack(len(p)))
        parts.append(p)
    return b"".join(parts)


class FrameDecoder:
    """Turns arbitrary read chunks back into frames (keepalives included, as ``b""``)."""

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Append ``data``; return every frame now complete, in order.

        Raises ``FrameTooLarge`` when a header announces more than ``max_frame_bytes``
        (frames completed before it in the same chunk are lost with the stream)."""
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        limit = self.max_frame_bytes
        view = memoryview(buf)  # slicing a view copies once (a bytearray slice twice)
        try:
            while n - pos >= HEADER_BYTES:
                (length,) = HEADER.unpack_from(buf, pos)
                if length > limit:
                    raise FrameTooLarge(length, limit)
                end = pos + HEADER_BYTES + length
                if end > n:
                    break
                out.append(view[pos + HEADER_BYTES : end].tobytes())
                pos = end
        finally:
            view.release()  # a bytearray with a live export cannot be resized
        if pos:
            del buf[:pos]
        return out


def encode_rpc(kind: int, request_id: int, body: bytes) -> bytes:
    return RPC_HEADER.pack(kind, request_id) + body


def decode_rpc(payload: bytes) -> tuple[int, int, bytes]:
    """``(kind, request id, body)``; ``MalformedFrame`` if too short or of unknown kind."""
    if len(payload) < RPC_HEADER.size:
        raise MalformedFrame("sync frame shorter than its header")
    kind, request_id = RPC_HEADER.unpack_from(payload)
    if kind not in (RPC_REQUEST, RPC_RESPONSE, RPC_ERROR):
        raise MalformedFrame(f"unknown sync frame kind {kind}")
    return kind, request_id, payload[RPC_HEADER.size :]


class TokenBucket:
    """Classic token bucket: ``rate_per_s`` tokens a second, at most ``capacity`` saved."""

    def __init__(self, rate_per_s: float, capacity: float, now: float) -> None:
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate_per_s)
        self.stamp = now

    def take(self, amount: float, now: float) -> bool:
        self.refill(now)
        if self.tokens >= amount:
            self.tokens -= amount
            return True
        return False


class RateLimiter:
    """Frames/s and bytes/s buckets of one peer on one channel; a frame passes only if
    both have room (and then is charged to both)."""

    def __init__(self, limit: RateLimit, max_frame_bytes: int, now: float) -> None:
        self.frames = TokenBucket(
            limit.frames_per_s, max(1.0, limit.frames_per_s * limit.burst_s), now
        )
        # Capacity of at least one maximal frame: a legal frame must be able to pass.
        self.bytes = TokenBucket(
            limit.bytes_per_s, max(float(max_frame_bytes), limit.bytes_per_s * limit.burst_s), now
        )

    def allow(self, size: int, now: float) -> bool:
        self.frames.refill(now)
        self.bytes.refill(now)
        if self.frames.tokens >= 1.0 and self.bytes.tokens >= size:
            self.frames.tokens -= 1.0
            self.bytes.tokens -= size
            return True
        return False


class OutQueue:
    """Bounded FIFO of payloads waiting for one stream's writer.

    Bounded by frame count and by bytes. When full, ``drop_oldest`` queues evict from
    the head (the stalest message) to make room; others refuse the new payload. ``put``
    sets ``wakeup``; the writer, and only the writer, replaces it with a fresh event
    right before it waits on an empty queue (so no wake-up can be lost). It then takes
    everything queued (up to a byte budget) at once: that is the coalescing.
    """

    def __init__(self, max_frames: int, max_bytes: int, drop_oldest: bool) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.drop_oldest = drop_oldest
        self._items: deque[bytes] = deque()
        self.bytes = 0
        self.wakeup = trio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, payload: bytes) -> tuple[bool, int]:
        """Queue ``payload``; return (accepted, number of older payloads evicted)."""
        size = len(payload)
        evicted = 0
        while self._items and (
            len(self._items) >= self.max_frames or self.bytes + size > self.max_bytes
        ):
            if not self.drop_oldest:
                return False, 0
            self.bytes -= len(self._items.popleft())
            evicted += 1
        if size > self.max_bytes:
            return False, evicted
        self._items.append(payload)
        self.bytes += size
        self.wakeup.set()
        return True, evicted

    def take(self, max_bytes: int) -> list[bytes]:
        """Pop queued payloads in order until ``max_bytes`` would be exceeded (always at
        least one if any is queued)."""
        out: list[bytes] = []
        total = 0
        items = self._items
        while items and (not out or total + len(items[0]) + HEADER_BYTES <= max_bytes):
            p = items.popleft()
            total += len(p) + HEADER_BYTES
            out.append(p)
        self.bytes -= total - HEADER_BYTES * len(out)
        return out

    def clear(self) -> int:
        n = len(self._items)
        self._items.clear()
        self.bytes = 0
        return n


class Stats(Counter[str]):
    """Monotonic counters for metrics; keys are ``name`` or ``name.channel``.

    ``dropped.<reason>.<channel>`` counts every frame the transport discarded, by why."""

    def drop(self, reason: str, channel: str, n: int = 1) -> None:
        if n:
            self[f"dropped.{reason}.{channel}"] += n

    def dropped_total(self) -> int:
        return sum(v for k, v in self.items() if k.startswith("dropped."))
