"""Block sync: the request/response protocol that serves certified blocks for catch-up.

Requests and responses are canonical msgpack arrays (strictly decoded):

    ["status"]                 -> ["status", height, block_id]
    ["blocks", from_h, to_h]   -> ["blocks", [[block_bytes, certificate_bytes], ...]]
                                  or ["error", message] (e.g. those bodies are pruned)

State sync (``node.state_sync``; the chunks are ``ledger.state_snapshot``'s):

    ["snapshot"]                          -> ["snapshot", s]  (s: this node's head)
    ["snap_headers", first, last]         -> ["headers", first, [[header, cert, meta]...]]
    ["snap_leaves", s, after, limit]      -> ["leaves", [[key, value], ...], done]
                                             (after: b"" for the first page)
    ["snap_bodies", first, last]          -> ["bodies", first, [block, ...]]
                                             or ["error", message] for each of them

Serving a snapshot at s asks the node to keep state version s while the joiner pages
through its leaves (``pin_version``; the node lets go after a quiet while).

A response holds consecutive heights from ``from_h``, at most ``MAX_BLOCKS`` of them
and about ``MAX_RESPONSE_BYTES``; the requester asks again for the rest. Nothing in a
response is trusted: every certificate is verified against the validator set in force
(``Ledger.commit`` for observers, the replica for validators).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger import state_snapshot
from ledger.codec import as_bytes, as_int, as_list, as_str, decode, encode, fields
from ledger.errors import DecodeError
from ledger.smt import MissingNodeError
from ledger.store import Store
from ledger.types import MAX_BLOCK_BYTES

MAX_BLOCKS = 64
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_REQUEST_BYTES = 256
# The requester's wait for one answer, and how far a slow link may stretch it.
FETCH_TIMEOUT_S = 5.0
MAX_FETCH_TIMEOUT_S = 20.0


def status_request() -> bytes:
    return encode(["status"])


def blocks_request(from_h: int, to_h: int) -> bytes:
    return encode(["blocks", from_h, to_h])


def snapshot_request() -> bytes:
    return encode(["snapshot"])


def snap_headers_request(first: int, last: int) -> bytes:
    return encode(["snap_headers", first, last])


def snap_leaves_request(version: int, after: bytes | None, limit: int) -> bytes:
    return encode(["snap_leaves", version, after or b"", limit])


def snap_bodies_request(first: int, last: int) -> bytes:
    return encode(["snap_bodies", first, last])


def _request(request: bytes) -> tuple[str, list[Any]]:
    obj = decode(request, MAX_REQUEST_BYTES)
    if not isinstance(obj, list) or not obj:
        raise DecodeError("sync request: expected a non-empty array")
    return as_str(obj[0], "sync.kind", 16), obj


def pin_version(store: Store, request: bytes) -> int | None:
    """The state version serving ``request`` needs kept (a snapshot's), else None."""
    kind, obj = _request(request)
    if kind == "snapshot":
        return store.height
    if kind == "snap_leaves":
        version = as_int(fields(obj, 4, "snap_leaves request")[1], "version")
        # Only a version still kept: a pin never holds back pruning of older ones.
        if store.state_pruned_below <= version <= store.height:
            return version
    return None


def _serve_snapshot(store: Store, kind: str, obj: list[Any]) -> bytes:
    try:
        if kind == "snapshot":
            fields(obj, 1, "snapshot request")
            if store.height < 1:
                return encode(["error", "this node holds only the genesis block"])
            return encode(["snapshot", store.height])
        if kind == "snap_leaves":
            f = fields(obj, 4, "snap_leaves request")
            after = as_bytes(f[2], "after", max_size=32)
            if after and len(after) != 32:
                raise DecodeError("snap_leaves: after must be a 32-byte key or empty")
            limit = min(as_int(f[3], "limit", 1), state_snapshot.LEAVES_PER_CHUNK)
            return state_snapshot.leaves_chunk(store, as_int(f[1], "version"), after or None, limit)
        f = fields(obj, 3, f"{kind} request")
        lo, hi = as_int(f[1], "first"), as_int(f[2], "last")
        if kind == "snap_headers":
            return state_snapshot.headers_chunk(store, lo, hi)
        return state_snapshot.bodies_chunk(store, lo, hi)
    except (state_snapshot.SnapshotError, MissingNodeError) as exc:
        # (MissingNodeError: the version was pruned while the joiner paged through it)
        return encode(["error", f"cannot serve that snapshot: {str(exc)[:400]}"])


def serve(store: Store, request: bytes) -> bytes:
    """Answer one request from the store (raises DecodeError on a malformed request)."""
    kind, obj = _request(request)
    if kind in ("snapshot", "snap_headers", "snap_leaves", "snap_bodies"):
        return _serve_snapshot(store, kind, obj)
    if kind == "status":
        fields(obj, 1, "status request")
        h = store.height
        return encode(["status", h, store.get_block_id(h) or b""])
    if kind == "blocks":
        f = fields(obj, 3, "blocks request")
        lo, hi = as_int(f[1], "from_height", 1), as_int(f[2], "to_height", 1)
        if lo < store.bodies_from and lo <= store.height:
            return encode(["error", pruned_message(lo, store.bodies_from)])
        out: list[list[bytes]] = []
        size = 0
        for h in range(lo, min(hi, store.height, lo + MAX_BLOCKS - 1) + 1):
            block, cert = store.get_block_bytes(h), store.get_certificate_bytes(h)
            if block is None or cert is None:
                break
            out.append([block, cert])
            size += len(block)
            if size >= MAX_RESPONSE_BYTES:
                break
        return encode(["blocks", out])
    raise DecodeError(f"sync request: unknown kind {kind!r}")


def pruned_message(height: int, bodies_from: int) -> str:
    return (
        f"block {height}'s body is pruned on this node (bodies kept from height "
        f"{bodies_from}); ask an archive peer"
    )


def parse_status(data: bytes) -> tuple[int, bytes]:
    f = fields(decode(data, 256), 3, "status response")
    if f[0] != "status":
        raise DecodeError("not a status response")
    return as_int(f[1], "height", 0), as_bytes(f[2], "block_id", max_size=32)


def parse_blocks(data: bytes) -> list[tuple[bytes, bytes]]:
    f = fields(decode(data, MAX_RESPONSE_BYTES + MAX_BLOCK_BYTES), 2, "blocks response")
    if f[0] == "error":
        raise DecodeError(f"the peer refused: {as_str(f[1], 'error', 256)}")
    if f[0] != "blocks":
        raise DecodeError("not a blocks response")
    out: list[tuple[bytes, bytes]] = []
    for item in as_list(f[1], "blocks", MAX_BLOCKS):
        pair: Any = fields(item, 2, "certified block")
        out.append(
            (
                as_bytes(pair[0], "block", max_size=MAX_BLOCK_BYTES),
                as_bytes(pair[1], "certificate", max_size=64 * 1024),
            )
        )
    return out


@dataclass
class FetchPacer:
    """How many blocks to ask for, and how long to wait, over a link of unknown speed.

    A fixed 64-block request that cannot cross a slow link within the timeout is asked
    again and again and never arrives: a node behind a narrow link would never catch up
    (measured: a replica on a 512 kbit/s link timed out every fetch for 90 s while the
    others committed 2,000 heights). After a timeout the span halves, and once it is one
    block the wait doubles (up to ``MAX_FETCH_TIMEOUT_S``); answers that come back within
    a quarter of the wait grow the span again. ``busy`` keeps one request in flight: a
    second one would share the same link and make both late.
    """

    span: int = MAX_BLOCKS
    timeout_s: float = FETCH_TIMEOUT_S
    busy: bool = False

    def range(self, lo: int, hi: int) -> tuple[int, int]:
        """The part of ``lo..hi`` to ask for now."""
        return lo, max(lo, min(hi, lo + self.span - 1))

    def answered(self, elapsed_s: float) -> None:
        if elapsed_s < self.timeout_s / 4:
            if self.timeout_s > FETCH_TIMEOUT_S:
                self.timeout_s = max(FETCH_TIMEOUT_S, self.timeout_s / 2)
            else:
                self.span = min(MAX_BLOCKS, self.span * 2)

    def timed_out(self) -> None:
        if self.span > 1:
            self.span //= 2
        else:
            self.timeout_s = min(MAX_FETCH_TIMEOUT_S, self.timeout_s * 2)
