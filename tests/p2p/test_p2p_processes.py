"""The p2p transport against peers in real OS processes (``tests/p2p/p2p_peer_proc.py``):
reconnect after kill -9 + restart, and a frozen (SIGSTOP) peer dropped then redialled.
Every wait has a deadline and every process is killed in ``finally``."""

from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from p2p import CONSENSUS, P2PConfig, P2PHost
from tests.support.p2p import (
    PeerProcess,
    drain,
    free_port,
    key_of,
    run_trio,
    running,
    seed_of,
    wait_until,
)

RECONNECT_MAX_S = 0.4  # A's backoff cap, small so that the test reaches it


@pytest.mark.processes
def test_kill9_then_restart_reconnects(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """B never dials: after its restart only A's reconnect loop can bring it back, and
    it does so promptly because its backoff stops growing at ``reconnect_max_s``."""
    caplog.set_level(logging.DEBUG, logger="dvp.p2p")
    pa, pb, pc = free_port(), free_port(), free_port()
    ka, kb, kc = key_of(0), key_of(1), key_of(2)

    def doc(i: int, port: int, dials: bool) -> dict[str, Any]:
        return {
            "seed": seed_of(i).hex(),
            "port": port,
            "peers": {ka.hex(): f"127.0.0.1:{pa}"} if dials else {},
            "allowlist": [ka.hex(), kb.hex(), kc.hex()],
        }

    procs = [
        PeerProcess(doc(1, pb, False), tmp_path, "b"),
        PeerProcess(doc(2, pc, True), tmp_path, "c"),
    ]

    since_kill = [0]  # caplog records before the kill are start-up dials

    def backoffs_to_b() -> list[float]:
        """The backoff A announced after each failed redial of B since the kill."""
        return [
            float(r.fields["backoff_s"])  # type: ignore[attr-defined]
            for r in caplog.records[since_kill[0] :]
            if r.getMessage() == "dial failed; retrying with backoff" and r.fields["peer"] == kb  # type: ignore[attr-defined]
        ]

    async def scenario() -> None:
        a = P2PHost(
            P2PConfig(
                seed=seed_of(0),
                listen_port=pa,
                peers={kb: f"127.0.0.1:{pb}", kc: f"127.0.0.1:{pc}"},
                reconnect_max_s=RECONNECT_MAX_S,
            )
        )
        for p in procs:
            p.start()
        async with running(a):
            for p in procs:
                await p.ready(30)
            await wait_until(lambda: a.connected_peers() == {kb, kc}, 20, "both processes")
            assert await a.request(kb, b"hi", 10) == b"echo:hi"
            since_kill[0] = len(caplog.records)
            procs[0].kill9()
            await wait_until(lambda: kb not in a.connected_peers(), 15, "B seen down")
            # Seen from the socket the kernel closed, not by waiting out a timeout.
            assert a.stats["unresponsive_disconnects"] == 0
            # B stays down while A's redials fail and its backoff grows to the cap.
            await wait_until(
                lambda: len(backoffs_to_b()) >= 5,
                30,
                lambda: f"five failed redials of B: {backoffs_to_b()} {a.stats}",
            )
            backoffs = backoffs_to_b()
            assert backoffs == sorted(backoffs), f"backoff shrank while B was down: {backoffs}"
            assert backoffs[-1] == RECONNECT_MAX_S == max(backoffs), backoffs
            assert await a.request(kc, b"still", 10) == b"echo:still"  # C unaffected
            procs[0].start()
            await procs[0].ready(30)
            await wait_until(lambda: kb in a.connected_peers(), 30, "B reconnected")
            assert a.stats["reconnects"] >= 1
            # Frames flow again both ways: B echoes consensus frames back to A.
            await wait_until(lambda: a.send(kb, CONSENSUS, b"echo 1"), 10, "send queued")
            got = await drain(a, CONSENSUS, 1, 10)
            assert got == [(kb, b"echo 1")]
            stats = json.loads(await a.request(kb, b"stats", 10))
            assert stats["consensus_count"] == 1

    try:
        run_trio(scenario, timeout_s=180)
    finally:
        for p in procs:
            p.stop()


@pytest.mark.processes
def test_frozen_peer_is_dropped_then_redialled(tmp_path: Path) -> None:
    """SIGSTOP: the TCP connection stays up but the peer says nothing. Keepalives stop,
    the idle timeout ends its streams and the host closes the connection itself."""
    pa, pb = free_port(), free_port()
    ka, kb = key_of(0), key_of(1)
    fast = {"keepalive_s": 0.25, "idle_timeout_s": 1.0, "write_timeout_s": 1.0}
    proc = PeerProcess(
        {
            "seed": seed_of(1).hex(),
            "port": pb,
            "overrides": fast,
            "peers": {ka.hex(): f"127.0.0.1:{pa}"},
        },
        tmp_path,
        "b",
    )

    async def scenario() -> None:
        cfg = P2PConfig(seed=seed_of(0), listen_port=pa, peers={kb: f"127.0.0.1:{pb}"})
        for k, v in fast.items():
            setattr(cfg, k, v)
        a = P2PHost(cfg)
        proc.start()
        async with running(a):
            await proc.ready(30)
            await wait_until(lambda: a.connected_peers() == {kb}, 20, "connected")
            assert await a.request(kb, b"up", 10) == b"echo:up"  # streams are open
            assert proc.proc is not None
            os.kill(proc.proc.pid, signal.SIGSTOP)
            try:
                # Nothing but A's unresponsive-peer check can drop it: a stopped process
                # keeps its TCP connection up for as long as the kernel is asked to.
                await wait_until(
                    lambda: kb not in a.connected_peers(),
                    20,
                    lambda: f"frozen peer dropped {a.stats}",
                )
                assert a.stats["unresponsive_disconnects"] >= 1
            finally:
                os.kill(proc.proc.pid, signal.SIGCONT)
            await wait_until(lambda: kb in a.connected_peers(), 20, "thawed peer back")
            assert await a.request(kb, b"again", 10) == b"echo:again"

    try:
        run_trio(scenario, timeout_s=120)
    finally:
        proc.stop()
