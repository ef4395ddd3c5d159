"""An allowed peer that misbehaves: malformed, oversize, unknown-protocol and flood input
is dropped and counted, the rate limits hold, and the host stays healthy for everyone.
Hosts in one trio run on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
from libp2p.custom_types import TProtocol

from p2p import CONSENSUS, SYNC, P2PHost, RateLimit, RemoteError
from p2p.framing import HEADER, RPC_HEADER, encode_frame, encode_frames, encode_hello
from tests.support.p2p import drain, mesh_configs, run_trio, running, wait_until

CONSENSUS_FPS = 200  # frames/s, with the default burst of 1 s
SYNC_FPS = 20


def test_malformed_oversize_unknown_and_flood_are_dropped_and_counted() -> None:
    async def scenario() -> None:
        cfgs = mesh_configs(3, max_frame_bytes=64 * 1024)
        cfgs[0].rate_limits[CONSENSUS] = RateLimit(frames_per_s=CONSENSUS_FPS, bytes_per_s=1 << 20)
        cfgs[0].rate_limits[SYNC] = RateLimit(frames_per_s=SYNC_FPS, bytes_per_s=1 << 20)
        a, b, m = (P2PHost(cfg) for cfg in cfgs)  # m: an allowed peer that misbehaves

        async def echo(peer: bytes, req: bytes) -> bytes:
            return req

        a.set_request_handler(echo)
        async with running(a, b, m):
            await wait_until(lambda: len(a.connected_peers()) == 2, 10, "mesh")
            lib = m.lib
            assert lib is not None

            async def raw(protocol: str, data: bytes, until: Callable[[], bool], what: str) -> None:
                """Write ``data`` on a fresh stream (after the hello every stream opens
                with), keep the stream until A has handled it (``until``), then reset it."""
                assert lib is not None
                stream = await lib.new_stream(a.peer_id, [TProtocol(protocol)])
                try:
                    await stream.write(encode_frame(encode_hello((1, 1))) + data)
                    await wait_until(until, 20, lambda: f"{what}: {a.stats}")
                finally:
                    await stream.reset()

            # A header announcing 1 MiB (limit 64 KiB): the stream is dropped at once.
            await raw(
                "/dvp/consensus/1",
                HEADER.pack(1 << 20) + b"x" * 100,
                lambda: a.stats["dropped.oversize.consensus"] == 1,
                "oversize",
            )
            # Sync frames too short for their header, and of an unknown kind.
            await raw(
                "/dvp/sync/1",
                encode_frames([b"abc", RPC_HEADER.pack(9, 1) + b"?"]),
                lambda: a.stats["dropped.malformed.sync"] == 2,
                "malformed",
            )
            # A response nobody asked for, and random garbage on the txs protocol.
            await raw(
                "/dvp/sync/1",
                encode_frame(RPC_HEADER.pack(1, 77) + b"unasked"),
                lambda: a.stats["dropped.unexpected.sync"] == 1,
                "unexpected",
            )
            await raw(
                "/dvp/txs/1",
                b"\xff" * 5000,
                lambda: a.stats["dropped.oversize.txs"] == 1,
                "garbage on txs",
            )
            # An unknown protocol is refused by negotiation.
            with pytest.raises(Exception):  # noqa: B017 - libp2p raises assorted types
                await raw("/dvp/unknown/1", b"hello", lambda: True, "unknown")
            # A flood: 5,000 frames in one burst. The bucket admits at most its burst
            # plus the rate times the (trio) time the flood took, however slow the
            # machine: a bound in the limiter's own terms, not a race with the clock.
            before = a.stats["frames_in.consensus"]
            t0 = trio.current_time()
            await raw(
                "/dvp/consensus/1",
                encode_frames([b"flood %d" % i for i in range(5000)]),
                lambda: (
                    a.stats["frames_in.consensus"] + a.stats["dropped.rate_limited.consensus"]
                    >= before + 5000
                ),
                "flood",
            )
            elapsed = trio.current_time() - t0
            admitted = a.stats["frames_in.consensus"] - before
            assert admitted + a.stats["dropped.rate_limited.consensus"] == 5000
            assert CONSENSUS_FPS <= admitted <= CONSENSUS_FPS * (1 + elapsed) + 1, (
                f"{admitted} flood frames admitted in {elapsed:.2f} s"
            )
            # A request flood is answered "rate limited" (callers get an answer, no
            # request is left to time out).
            outcomes: list[str] = []

            async def ask(i: int) -> None:
                try:
                    await m.request(a.public_key, b"q%d" % i, 30)
                    outcomes.append("ok")
                except RemoteError as exc:
                    outcomes.append(str(exc))

            t0 = trio.current_time()
            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(ask, i)
            elapsed = trio.current_time() - t0
            # 20/s with a 1 s burst admits ~20 (at least 18: the sync frames above did not
            # pass the limiter); at most 8 of those run at once, the rest of the admitted
            # ones are answered "busy".
            admitted = outcomes.count("ok") + outcomes.count("busy")
            assert outcomes.count("ok") >= 8, outcomes
            assert 18 <= admitted <= SYNC_FPS * (1 + elapsed) + 1, (
                f"{admitted} requests admitted in {elapsed:.2f} s: {outcomes}"
            )
            assert set(outcomes) <= {"ok", "rate limited", "busy"}
            assert a.stats["dropped.rate_limited.sync"] == outcomes.count("rate limited")
            # Still healthy: honest traffic flows, requests answered, nobody disconnected.
            while True:  # drain what the flood left in A's queue
                try:
                    a.inbound(CONSENSUS).receive_nowait()
                except trio.WouldBlock:
                    break
            b.send(a.public_key, CONSENSUS, b"honest")
            assert await drain(a, CONSENSUS, 1, 10) == [(b.public_key, b"honest")]
            assert await b.request(a.public_key, b"ping", 10) == b"ping"
            # M's own request budget refills: poll until it is admitted again.
            answer: list[bytes] = []

            async def m_ping() -> None:
                while not answer:
                    try:
                        answer.append(await m.request(a.public_key, b"ping", 10))
                    except RemoteError as exc:
                        assert str(exc) == "rate limited", exc
                        await trio.sleep(0.1)

            with trio.move_on_after(20):
                await m_ping()
            assert answer == [b"ping"], "M's requests still refused after its bucket refilled"
            assert a.connected_peers() == {b.public_key, m.public_key}

    run_trio(scenario)
