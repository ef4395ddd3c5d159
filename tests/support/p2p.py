"""Helpers for the p2p tests (tests/p2p): deterministic node keys, free ports, a mesh of
``P2PConfig``s, hosts run in one trio run, polling with a deadline, draining inbound
channels, and a ``tests/p2p/p2p_peer_proc.py`` child process.

Waits here never race the wall clock: ``wait_until`` polls a condition and fails with a
message naming what did not happen; its deadline is a bound on "never", not a speed
requirement, so callers give it room for a slow, shared machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from ledger.crypto import KeyPair
from p2p import P2PConfig, P2PHost

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seed_of(i: int) -> bytes:
    return hashlib.sha256(b"dvp p2p test node %d" % i).digest()


def key_of(i: int) -> bytes:
    return KeyPair.from_seed(seed_of(i)).public_key


async def wait_until(
    pred: Callable[[], bool], timeout_s: float, what: str | Callable[[], str]
) -> None:
    """Poll ``pred`` until true; fail after ``timeout_s`` naming ``what`` did not happen."""
    with trio.move_on_after(timeout_s):
        while not pred():
            await trio.sleep(0.02)
        return
    raise AssertionError(
        f"timed out after {timeout_s} s waiting for {what() if callable(what) else what}"
    )


def mesh_configs(n: int, **overrides: Any) -> list[P2PConfig]:
    ports = [free_port() for _ in range(n)]
    cfgs = []
    for i in range(n):
        peers = {key_of(j): f"127.0.0.1:{ports[j]}" for j in range(n) if j != i}
        cfgs.append(P2PConfig(seed=seed_of(i), listen_port=ports[i], peers=peers, **overrides))
    return cfgs


@asynccontextmanager
async def running(*hosts: P2PHost) -> Any:
    async with trio.open_nursery() as nursery:
        for h in hosts:
            await nursery.start(h.run)
        try:
            yield nursery
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def connected_pair() -> Any:
    """Two running hosts, connected to each other."""
    a, b = (P2PHost(cfg) for cfg in mesh_configs(2))
    async with running(a, b):
        await wait_until(
            lambda: a.connected_peers() == {b.public_key} and b.connected_peers() == {a.public_key},
            10,
            "connected",
        )
        yield a, b


def run_trio(fn: Callable[[], Awaitable[None]], timeout_s: float = 60.0) -> None:
    """Run ``fn`` in a fresh trio run; a hang fails the test after ``timeout_s``."""

    async def main() -> None:
        with trio.fail_after(timeout_s):
            await fn()

    trio.run(main)


async def drain(host: P2PHost, channel: str, n: int, timeout_s: float) -> list[tuple[bytes, bytes]]:
    """Up to ``n`` frames from ``host``'s inbound ``channel``: what arrived by ``timeout_s``."""
    got: list[tuple[bytes, bytes]] = []
    with trio.move_on_after(timeout_s):
        async for item in host.inbound(channel):
            got.append(item)
            if len(got) == n:
                break
    return got


async def gather(coros: list[Awaitable[bytes]]) -> list[bytes]:
    out: list[bytes] = [b""] * len(coros)

    async def one(i: int, c: Awaitable[bytes]) -> None:
        out[i] = await c

    async with trio.open_nursery() as nursery:
        for i, c in enumerate(coros):
            nursery.start_soon(one, i, c)
    return out


class PeerProcess:
    """``tests/p2p/p2p_peer_proc.py`` in a child process; ``stop()`` always reaps it. Its
    stdout goes to a file that ``ready()`` polls (no pipe, no reader thread)."""

    def __init__(self, doc: dict[str, Any], workdir: Path, name: str) -> None:
        self.doc = doc
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.out_path.write_bytes(b"")
        with open(self.out_path, "ab") as out, open(self.err_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.p2p.p2p_peer_proc", json.dumps(self.doc)],
                cwd=ROOT,
                stdout=out,
                stderr=err,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )

    async def ready(self, timeout_s: float) -> None:
        await wait_until(
            lambda: b"ready" in self.out_path.read_bytes(),
            timeout_s,
            lambda: f"{self.out_path.name} ready; stderr: {self.err_path.read_text()[-2000:]}",
        )

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)
