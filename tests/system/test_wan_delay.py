"""Distance by delaying relays (scripts/harness/delay.py): what they promise, and a
devnet that stays safe and live behind them.

The relay: bytes arrive whole and in order in both directions, no earlier than the
configured one-way delay per direction (an echo through the relay costs at least two),
and a seed replays its draws. The devnet: 4 validators placed Hong Kong / Shenzhen
(``delay.HK_SZ``: 5-20 ms one way between the cities) and an observer 150 ms away, under
load; it commits, every acknowledged transaction is in the chain exactly once, no fork
(``verdict``), and the observer follows. Speed is measured in scripts/bench_wan.py, not
here: these tests bound delays from below only.
"""

from __future__ import annotations

import hashlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.harness import FAST_PARAMS, open_env, poll_until, realnet
from scripts.harness.delay import HK_SZ, Delay, Relays

pytestmark = [pytest.mark.processes, pytest.mark.timeout(300)]


class EchoServer:
    """A loopback TCP echo server (one thread per connection)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = conn.recv(min(65536, n - len(out)))
        if not chunk:
            raise AssertionError(f"connection closed after {len(out)} of {n} bytes")
        out += chunk
    return bytes(out)


def test_relay_keeps_byte_order_and_adds_at_least_the_delay(echo: EchoServer) -> None:
    delay = Delay(30.0, 60.0)
    relays = Relays(seed=7)
    link = relays.add("client->echo", echo.port, delay)
    with relays, socket.create_connection(("127.0.0.1", link.listen_port), timeout=20) as conn:
        # Round trips of one small message: each pays the delay both ways.
        for i in range(5):
            t0 = time.monotonic()
            conn.sendall(b"ping %d" % i)
            assert _recv_exactly(conn, len(b"ping %d" % i)) == b"ping %d" % i
            rtt_ms = (time.monotonic() - t0) * 1000
            assert rtt_ms >= 2 * delay.lo_ms, rtt_ms
        # A stream of many chunks written back to back, each drawing its own delay
        # between 30 and 60 ms: a later chunk with a shorter draw must not overtake.
        payload = b"".join(hashlib.sha256(b"%d" % i).digest() * 64 for i in range(400))
        reader_out: list[bytes] = []
        reader = threading.Thread(
            target=lambda: reader_out.append(_recv_exactly(conn, len(payload))), daemon=True
        )
        reader.start()
        rng = random.Random(1)
        at = 0
        while at < len(payload):
            step = rng.randint(1, 9000)
            conn.sendall(payload[at : at + step])
            at += step
            if rng.random() < 0.2:
                time.sleep(0.002)  # chunks read separately by the relay
        reader.join(timeout=60)
        assert reader_out and reader_out[0] == payload
    assert link.connections == 1
    assert link.bytes_forwarded == 2 * (len(payload) + sum(len(b"ping %d" % i) for i in range(5)))


def test_relay_passes_end_of_stream_and_refuses_when_target_is_down(echo: EchoServer) -> None:
    relays = Relays(seed=1)
    up = relays.add("to-echo", echo.port, Delay(5.0, 5.0))
    dead_sock = socket.create_server(("127.0.0.1", 0))
    dead_port = dead_sock.getsockname()[1]
    dead_sock.close()  # nothing listens there now
    down = relays.add("to-nowhere", dead_port, Delay(5.0, 5.0))
    with relays:
        with socket.create_connection(("127.0.0.1", up.listen_port), timeout=20) as conn:
            conn.sendall(b"last words")
            conn.shutdown(socket.SHUT_WR)  # the echo sees EOF after the data, and closes
            assert _recv_exactly(conn, 10) == b"last words"
            assert conn.recv(100) == b""
        with socket.create_connection(("127.0.0.1", down.listen_port), timeout=20) as conn:
            conn.settimeout(20)
            try:
                got = conn.recv(100)
            except ConnectionResetError:
                got = b""
            assert got == b""


def test_jitter_draws_replay_for_a_seed() -> None:
    d = Delay(5.0, 20.0)
    a = [d.draw_s(random.Random(42)) for _ in range(3)]
    b = [d.draw_s(random.Random(42)) for _ in range(3)]
    assert a == b
    draws = [d.draw_s(r) for r in [random.Random(3)] for _ in range(1000)]
    assert min(draws) >= 0.005 and max(draws) <= 0.020
    assert max(draws) - min(draws) > 0.010  # jitter, not a constant
    with pytest.raises(ValueError):
        Delay(10.0, 5.0)


def test_devnet_behind_hk_sz_relays_commits_every_acknowledged_transaction(
    tmp_path: Path,
) -> None:
    with open_env(tmp_path / "net", netns=False, params=FAST_PARAMS, delays=HK_SZ) as env:
        relays = env.cluster.relays
        assert relays is not None
        # 4 validators dial 3 peers each, the observer dials all 4: 16 delayed links.
        assert len(relays.links) == 16
        cross = [link for link in relays.links if link.delay == HK_SZ.delay("hk", "sz")]
        assert len(cross) == 8
        poll_until(
            lambda: len(env.load.snapshot()) >= 100,
            120,
            lambda: f"100 acknowledged transactions (have {len(env.load.snapshot())})",
        )
        # Each pair of nodes talks through its relays (either one: when both dial, one
        # connection of the two may stay idle), so no link bypasses its delay.
        used = {link.name: link.bytes_forwarded for link in relays.links}
        for link in relays.links:
            a, b = link.name.split("->")
            assert used[link.name] + used.get(f"{b}->{a}", 0) > 0, used
        env.load.pause()
        top = max(a.height for a in env.load.snapshot().values())
        # The observer, 150 ms from everyone, follows the chain too.
        env.cluster.wait_height(top, timeout_s=90)
        observer = env.cluster.observers[0]
        env.cluster.wait_height(top, [observer], timeout_s=90)
        env.verdict().assert_ok()
        assert realnet.assert_same_chain(list(env.cluster.entries.values())) >= top
