"""The p2p transport's pure parts: framing, the sync envelope, token buckets, send
queues, config validation, addresses and the node-key -> peer-id mapping. No sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from libp2p.identity_utils import create_identity_from_seed
from libp2p.peer.id import ID

from ledger.crypto import KeyPair
from p2p import ConfigError, P2PConfig, RateLimit, parse_peer_address, peer_id_of
from p2p.framing import (
    HEADER,
    KEEPALIVE,
    RPC_ERROR,
    RPC_REQUEST,
    RPC_RESPONSE,
    FrameDecoder,
    FrameTooLarge,
    MalformedFrame,
    OutQueue,
    RateLimiter,
    TokenBucket,
    decode_rpc,
    encode_frame,
    encode_frames,
    encode_rpc,
)
from p2p.libp2p_glue import key_of_peer_id

payloads = st.lists(st.binary(min_size=0, max_size=3000), max_size=40)


@settings(max_examples=200, deadline=None)
@given(payloads, st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=50))
def test_any_chunking_yields_the_same_frames(frames: list[bytes], cuts: list[int]) -> None:
    wire = encode_frames(frames)
    assert wire == b"".join(encode_frame(f) for f in frames)
    dec = FrameDecoder(4096)
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(wire):
        step = cuts[i % len(cuts)]
        out += dec.feed(wire[pos : pos + step])
        pos += step
        i += 1
    assert out == frames
    assert dec.buffered_bytes == 0


def test_oversize_is_refused_from_the_header_alone() -> None:
    dec = FrameDecoder(1024)
    assert dec.feed(encode_frame(b"ok") + HEADER.pack(1024)) == [b"ok"]  # limit is inclusive
    dec2 = FrameDecoder(1024)
    with pytest.raises(FrameTooLarge) as exc:
        dec2.feed(HEADER.pack(1025))  # body never sent: refused before buffering it
    assert exc.value.size == 1025 and exc.value.limit == 1024
    with pytest.raises(FrameTooLarge):
        FrameDecoder(1 << 20).feed(b"\xff\xff\xff\xff")


def test_keepalive_is_the_empty_frame() -> None:
    assert KEEPALIVE == encode_frame(b"")
    assert FrameDecoder(10).feed(KEEPALIVE * 3 + b"\x00\x00") == [b"", b"", b""]


def test_rpc_envelope_round_trip_and_garbage() -> None:
    for kind in (RPC_REQUEST, RPC_RESPONSE, RPC_ERROR):
        assert decode_rpc(encode_rpc(kind, 2**64 - 1, b"body")) == (kind, 2**64 - 1, b"body")
    assert decode_rpc(encode_rpc(RPC_REQUEST, 1, b"")) == (RPC_REQUEST, 1, b"")
    for bad in (b"", b"\x00" * 8, b"\x03" + b"\x00" * 8, b"\xff" * 20):
        with pytest.raises(MalformedFrame):
            decode_rpc(bad)


def test_token_bucket_refills_at_its_rate_and_caps_at_capacity() -> None:
    b = TokenBucket(rate_per_s=4, capacity=5, now=100.0)
    assert all(b.take(1, 100.0) for _ in range(5))
    assert not b.take(1, 100.0)
    assert b.take(1, 100.25)  # 0.25 s * 4/s = one token
    assert not b.take(1, 100.25)
    b.refill(1000.0)
    assert b.tokens == 5


def test_rate_limiter_needs_both_budgets_and_admits_one_maximal_frame() -> None:
    lim = RateLimiter(RateLimit(frames_per_s=100, bytes_per_s=1000), max_frame_bytes=4096, now=0.0)
    assert lim.allow(4096, 0.0)  # byte capacity is at least one maximal frame
    assert not lim.allow(1, 0.0)  # byte bucket empty now
    lim2 = RateLimiter(RateLimit(frames_per_s=2, bytes_per_s=1e9), max_frame_bytes=1024, now=0.0)
    assert lim2.allow(1, 0.0) and lim2.allow(1, 0.0) and not lim2.allow(1, 0.0)
    assert lim2.allow(1, 0.5)


def test_out_queue_policies() -> None:
    q = OutQueue(max_frames=3, max_bytes=100, drop_oldest=False)
    assert [q.put(b"a"), q.put(b"b"), q.put(b"c")] == [(True, 0)] * 3
    assert q.put(b"d") == (False, 0)  # drop-newest: refused
    assert q.take(1 << 20) == [b"a", b"b", b"c"] and q.bytes == 0 and len(q) == 0
    o = OutQueue(max_frames=3, max_bytes=100, drop_oldest=True)
    for p in (b"a", b"b", b"c"):
        o.put(p)
    assert o.put(b"d") == (True, 1)  # drop-oldest: "a" evicted
    assert o.put(b"x" * 99) == (True, 2)  # evicts "b", "c" until 1 + 99 bytes fit
    assert o.take(1000) == [b"d", b"x" * 99]
    assert o.put(b"y" * 101) == (False, 0)  # never fits
    # Coalescing budget: whole frames up to max_bytes (header included), at least one.
    for p in (b"1" * 10, b"2" * 10, b"3" * 10):
        o.put(p)
    assert o.take(28) == [b"1" * 10, b"2" * 10]
    assert o.take(1) == [b"3" * 10]
    assert o.clear() == 0


def test_peer_id_is_derived_from_the_node_key() -> None:
    seed = bytes(range(32))
    node_key = KeyPair.from_seed(seed).public_key
    libp2p_key = create_identity_from_seed(seed).public_key
    assert libp2p_key.to_bytes() == node_key
    pid = peer_id_of(node_key)
    assert pid == ID.from_pubkey(libp2p_key)
    assert key_of_peer_id(pid) == node_key
    assert peer_id_of(KeyPair.from_seed(b"\x01" * 32).public_key) != pid
    with pytest.raises(ValueError):
        peer_id_of(b"short")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("127.0.0.1:7001", "/ip4/127.0.0.1/tcp/7001"),
        (" 127.0.0.1:7001 ", "/ip4/127.0.0.1/tcp/7001"),
        ("[::1]:7001", "/ip6/::1/tcp/7001"),
        ("/ip4/127.0.0.1/tcp/7001", "/ip4/127.0.0.1/tcp/7001"),
        (
            "/ip4/127.0.0.1/tcp/7001/p2p/12D3KooWMbbPVGsZYh3ChQjue712NHHGNybRRXwnuSpezYjGbCDS",
            "/ip4/127.0.0.1/tcp/7001",
        ),
    ],
)
def test_peer_addresses(text: str, expected: str) -> None:
    assert str(parse_peer_address(text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "localhost:7001",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        "/dns4/x/tcp/1",
        "/ip4/127.0.0.1/udp/7001/quic-v1",
        "/ip4/127.0.0.1",
        "not an address",
        "/garbage",
    ],
)
def test_bad_peer_addresses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_peer_address(text)


def test_config_validation() -> None:
    seed = b"\x07" * 32
    P2PConfig(seed=seed).validate()
    assert P2PConfig(seed=seed, peers={b"k" * 32: "127.0.0.1:1"}).effective_allowlist() == {
        b"k" * 32
    }
    assert P2PConfig(seed=seed, allowlist=set()).effective_allowlist() == set()
    bad: list[dict[str, object]] = [
        {"seed": b"short"},
        {"listen_host": "localhost"},
        {"listen_port": 70000},
        {"peers": {b"short": "127.0.0.1:1"}},
        {"peers": {b"k" * 32: "nowhere"}},
        {"allowlist": {b"short"}},
        {"max_frame_bytes": 10},
        {"rate_limits": {}},
        {"inbound_queue": {"consensus": 0, "txs": 1}},
        {"send_queue_bytes": 1},
        {"reconnect_min_s": 10.0, "reconnect_max_s": 1.0},
        {"keepalive_s": 5.0, "idle_timeout_s": 6.0},
        {"consensus_backpressure_s": 1.5},
        {"write_timeout_s": 0},
        {"max_inflight_requests": 0},
    ]
    for kw in bad:
        cfg = P2PConfig(seed=seed)
        for k, v in kw.items():
            setattr(cfg, k, v)
        with pytest.raises(ConfigError):
            cfg.validate()
    with pytest.raises(ConfigError):
        RateLimit(0, 1).validate("x")
