"""Block sync: what a server answers, and how a requester paces itself over a slow link."""

from __future__ import annotations

import pytest

from ledger.codec import encode
from ledger.errors import DecodeError
from node import sync
from node.sync import FETCH_TIMEOUT_S, MAX_BLOCKS, MAX_FETCH_TIMEOUT_S, FetchPacer


class _Store:
    """The reads ``sync.serve`` makes, over ``n`` blocks of ``size`` bytes (an archive:
    ``bodies_from`` 0)."""

    def __init__(self, n: int, size: int = 100) -> None:
        self.height = n
        self.size = size
        self.bodies_from = 0

    def get_block_bytes(self, h: int) -> bytes | None:
        return bytes([h % 256]) * self.size if 1 <= h <= self.height else None

    def get_certificate_bytes(self, h: int) -> bytes | None:
        return b"c" * 10 if 1 <= h <= self.height else None

    def get_block_id(self, h: int) -> bytes | None:
        return bytes(32) if h else None


def test_serve_answers_consecutive_heights_up_to_the_limits() -> None:
    store = _Store(200)
    blocks = sync.parse_blocks(sync.serve(store, sync.blocks_request(5, 7)))  # type: ignore[arg-type]
    assert [b[0][0] for b in blocks] == [5, 6, 7]
    many = sync.parse_blocks(sync.serve(store, sync.blocks_request(1, 10_000)))  # type: ignore[arg-type]
    assert len(many) == MAX_BLOCKS
    past = sync.parse_blocks(sync.serve(store, sync.blocks_request(199, 300)))  # type: ignore[arg-type]
    assert len(past) == 2
    assert sync.parse_status(sync.serve(store, sync.status_request()))[0] == 200  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "request_obj",
    [[], ["blocks", 1], ["blocks", 1, 2, 3], ["nope"], ["blocks", -1, 2], ["status", 1], "blocks"],
)
def test_serve_refuses_malformed_requests(request_obj: object) -> None:
    with pytest.raises(DecodeError):
        sync.serve(_Store(3), encode(request_obj))  # type: ignore[arg-type]


def test_pacer_halves_the_span_then_stretches_the_wait_on_a_slow_link() -> None:
    p = FetchPacer()
    assert p.range(10, 1000) == (10, 10 + MAX_BLOCKS - 1)
    spans = []
    for _ in range(7):
        p.timed_out()
        spans.append(p.span)
    assert spans == [32, 16, 8, 4, 2, 1, 1]
    assert p.timeout_s == 2 * FETCH_TIMEOUT_S
    for _ in range(10):
        p.timed_out()
    assert p.span == 1 and p.timeout_s == MAX_FETCH_TIMEOUT_S
    assert p.range(10, 1000) == (10, 10)


def test_pacer_recovers_after_fast_answers_and_never_asks_past_hi() -> None:
    p = FetchPacer()
    for _ in range(8):
        p.timed_out()
    p.answered(p.timeout_s)  # a slow answer changes nothing
    assert (p.span, p.timeout_s) == (1, 4 * FETCH_TIMEOUT_S)
    while p.timeout_s > FETCH_TIMEOUT_S:
        p.answered(0.01)  # the wait shrinks back first ...
    assert p.span == 1
    for _ in range(10):
        p.answered(0.01)  # ... then the span grows back to the cap
    assert p.span == MAX_BLOCKS
    assert p.range(7, 9) == (7, 9) and p.range(7, 7) == (7, 7)
