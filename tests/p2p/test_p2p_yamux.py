"""The yamux layer under the p2p transport, as py-libp2p's stock code got it wrong: a
frame is never left half-written on a connection, and receive credit goes back in
batches rather than one window update per read. Two hosts in one trio run on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.io.trio import TrioTCPStream

from p2p import CONSENSUS
from p2p.framing import encode_frame
from p2p.libp2p_glue import CreditBatchingYamuxStream, live_connections
from tests.support.p2p import connected_pair, drain, run_trio, wait_until

WRITER_DEADLINE_S = 5.0


@pytest.mark.parametrize("how", ["cancelled", "stuck"])
def test_a_frame_is_never_left_half_written(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A yamux frame of 64 KiB goes out as two Noise messages. A writer cancelled between
    them (its stream ended by its reader, a deadline) used to leave the first one alone on
    the connection: the peer read our next frames as the rest of that frame and the
    connection went silent in that direction, both ends still "connected" (RELIABILITY
    3.5 item 7). ``cancelled``: the frame is finished first and the connection carries on.
    ``stuck``: the second half cannot go out within the writer's time (as with a full
    socket), so the connection is closed at once and redialled instead of going silent."""
    cut: dict[str, Any] = {}
    real_write = TrioTCPStream.write

    async def write(self: TrioTCPStream, data: bytes) -> None:
        me = trio.lowlevel.current_task()
        if cut.get("stall") is me:
            del cut["stall"]
            # A full socket that never drains: only the writer's deadline can end it.
            await trio.sleep_forever()
        await real_write(self, data)
        if cut.get("first") is me:  # the first Noise message of the frame is out
            del cut["first"]
            if how == "cancelled":
                cut["scope"].cancel()
            else:
                cut["stall"] = me

    monkeypatch.setattr(TrioTCPStream, "write", write)

    async def scenario() -> None:
        async with connected_pair() as (a, b):
            a.send(b.public_key, CONSENSUS, b"before")
            assert await drain(b, CONSENSUS, 1, 10) == [(a.public_key, b"before")]
            la, lb = a.lib, b.lib
            assert la is not None and lb is not None
            # Both dial at start-up; wait for the duplicate to go, so that the frame is cut
            # on the connection that carries the consensus stream.
            await wait_until(
                lambda: (
                    len(live_connections(la, b.peer_id))
                    == len(live_connections(lb, a.peer_id))
                    == 1
                ),
                10,
                "one connection",
            )
            conns = live_connections(la, b.peer_id) + live_connections(lb, a.peer_id)
            stream = await la.new_stream(b.peer_id, [TProtocol("/dvp/txs/1")])
            # The writer's deadline: ample for the first half to go out (asserted below),
            # and in "stuck" the only thing that ends the stalled second half.
            with trio.move_on_after(WRITER_DEADLINE_S) as scope:
                cut.update(first=trio.lowlevel.current_task(), scope=scope)
                try:
                    await stream.write(encode_frame(b"x" * 200_000))
                except Exception:  # "stuck": the connection was closed under the write
                    pass
            assert "first" not in cut, "the frame was not written in two parts"
            with trio.move_on_after(1):
                try:
                    await stream.reset()
                except Exception:
                    pass
            if how == "stuck":
                await wait_until(
                    lambda: all(c.is_closed for c in conns),
                    10,
                    "the connection with the cut frame closed at both ends",
                )
            await wait_until(lambda: b.public_key in a.connected_peers(), 15, "connected")
            a.send(b.public_key, CONSENSUS, b"after")
            assert await drain(b, CONSENSUS, 1, 10) == [(a.public_key, b"after")], (
                f"nothing arrived after the cut frame: a {dict(a.stats)} b {dict(b.stats)}"
            )
            if how == "cancelled":
                assert not any(c.is_closed for c in conns), "the connection was dropped"

    run_trio(scenario)


def test_receive_credit_goes_back_in_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """py-libp2p's yamux answered nearly every stream read with a WINDOW_UPDATE: one more
    Noise message each way per message received. Credit now goes back when half the
    window is consumed: hundreds of small messages cost no update at all, and a burst of
    many windows' worth still arrives whole (the credit does flow back)."""
    updates: list[int] = []
    real = CreditBatchingYamuxStream.send_window_update

    async def counting(
        self: CreditBatchingYamuxStream, increment: int, skip_lock: bool = False
    ) -> None:
        updates.append(increment)
        await real(self, increment, skip_lock)

    monkeypatch.setattr(CreditBatchingYamuxStream, "send_window_update", counting)

    async def scenario() -> None:
        async with connected_pair() as (a, b):
            for i in range(300):
                a.send(b.public_key, CONSENSUS, b"vote %d" % i)
                # Pacing, the scenario: each message a read of its own on b's side. On a
                # slow machine b reads several at once: fewer reads, fewer updates, so
                # this can only make the assert below easier, never flaky.
                await trio.sleep(0.001)
            assert len(await drain(b, CONSENSUS, 300, 20)) == 300
            assert len(updates) <= 1, f"{len(updates)} window updates for 300 small messages"
            before = len(updates)
            blob = b"b" * 60_000
            got: list[tuple[bytes, bytes]] = []

            async def receive() -> None:
                got.extend(await drain(b, CONSENSUS, 40, 40))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive)
                for _ in range(40):  # 2.4 MB: nine times the initial 256 KiB window
                    a.send(b.public_key, CONSENSUS, blob)
                    # Pacing only: the 32 MiB send queue holds the whole burst, so no
                    # blob can be dropped however the writer and this loop interleave.
                    await trio.sleep(0.005)
            assert len(got) == 40 and all(p == blob for _, p in got)
            assert len(updates) > before, "no credit went back, yet the burst got through?"

    run_trio(scenario, timeout_s=90)
