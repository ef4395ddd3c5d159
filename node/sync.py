"""Block sync: the request/response protocol that serves certified blocks for catch-up.

Requests and responses are canonical msgpack arrays (strictly decoded):

    ["status"]                 -> ["status", height, block_id]
    ["blocks", from_h, to_h]   -> ["blocks", [[block_bytes, certificate_bytes], ...]]
                                  or ["error", message] (e.g. those bodies are pruned)

A response holds consecutive heights from ``from_h``, at most ``MAX_BLOCKS`` of them
and about ``MAX_RESPONSE_BYTES``; the requester asks again for the rest. Nothing in a
response is trusted: every certificate is verified against the validator set in force
(``Ledger.commit`` for observers, the replica for validators).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger.codec import as_bytes, as_int, as_list, as_str, decode, encode, fields
from ledger.errors import DecodeError
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


def serve(store: Store, request: bytes) -> bytes:
    """Answer one request from the store (raises DecodeError on a malformed request)."""
    obj = decode(request, MAX_REQUEST_BYTES)
    if not isinstance(obj, list) or not obj:
        raise DecodeError("sync request: expected a non-empty array")
    kind = as_str(obj[0], "sync.kind", 16)
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
