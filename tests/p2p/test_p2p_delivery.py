"""Delivery through the p2p transport, hosts in one trio run on 127.0.0.1: send,
broadcast and request intact and in order per peer, the deliver callback, the app-queue
overflow policies, and what ``send`` refuses."""

from __future__ import annotations

import hashlib
import logging
import os
import random

import pytest
import trio

from p2p import (
    CONSENSUS,
    SYNC,
    TXS,
    P2PConfig,
    P2PHost,
    PeerUnavailable,
    RemoteError,
    RequestTimeout,
)
from tests.support.p2p import (
    drain,
    gather,
    key_of,
    mesh_configs,
    run_trio,
    running,
    seed_of,
    wait_until,
)


def test_four_hosts_send_broadcast_request() -> None:
    async def scenario() -> None:
        hosts = [P2PHost(c) for c in mesh_configs(4)]
        keys = [h.public_key for h in hosts]

        async def handler(peer: bytes, req: bytes) -> bytes:
            if req == b"fail":
                raise RuntimeError("handler bug on purpose")
            if req == b"slow":
                await trio.sleep_forever()  # never answers: the caller's timeout decides
            return hashlib.sha256(peer + req).digest() + req

        for h in hosts:
            h.set_request_handler(handler)
        async with running(*hosts):
            await wait_until(
                lambda: all(len(h.connected_peers()) == 3 for h in hosts), 20, "full mesh"
            )
            rng = random.Random(7)
            sent: dict[int, list[bytes]] = {}
            for i, h in enumerate(hosts):
                sent[i] = []
                for seq in range(300):
                    body = rng.randbytes(rng.randint(1, 5000))
                    payload = b"%d:%d:" % (i, seq) + body
                    sent[i].append(payload)
                    assert h.broadcast(CONSENSUS, payload) == 3
                    if seq % 50 == 0:
                        await trio.sleep(0)  # a checkpoint, not a wait: writers may run
            for j, h in enumerate(hosts):
                got = await drain(h, CONSENSUS, 900, 20)
                assert len(got) == 900, f"host {j} got {len(got)} of 900: {dict(h.stats)}"
                by_sender: dict[bytes, list[bytes]] = {}
                for peer, payload in got:
                    by_sender.setdefault(peer, []).append(payload)
                for i in range(4):
                    if i != j:  # intact and in order per peer
                        assert by_sender[keys[i]] == sent[i]
            # Coalescing: far fewer write() calls than frames.
            st = hosts[0].stats
            assert st["writes.consensus"] < st["frames_out.consensus"] / 3, dict(st)

            # 64 KiB transaction batches to every peer, unicast and broadcast.
            batch = os.urandom(64 * 1024)
            for _ in range(10):
                hosts[0].broadcast(TXS, batch)
            assert hosts[1].send(keys[2], TXS, b"just for two")
            for j in (1, 3):
                got = await drain(hosts[j], TXS, 10, 20)
                assert [p for _, p in got] == [batch] * 10
            got = await drain(hosts[2], TXS, 11, 20)
            assert sorted(p for _, p in got) == sorted([batch] * 10 + [b"just for two"])

            # Request/response: answers, remote errors, timeouts, unknown peers.
            req = os.urandom(100_000)
            assert (
                await hosts[1].request(keys[2], req, 10)
                == hashlib.sha256(keys[1] + req).digest() + req
            )
            with pytest.raises(RemoteError, match="handler failed"):
                await hosts[1].request(keys[3], b"fail", 10)
            with pytest.raises(RequestTimeout):
                await hosts[1].request(keys[3], b"slow", 0.3)
            with pytest.raises(PeerUnavailable):
                await hosts[1].request(key_of(99), b"x", 1)
            answers = await gather([hosts[0].request(keys[k], b"q%d" % k, 10) for k in (1, 2, 3)])
            assert [a[32:] for a in answers] == [b"q1", b"q2", b"q3"]
            assert hosts[3].stats["late_responses"] == 0

    run_trio(scenario)


def test_app_queue_overflow_policies_never_stall_the_reader(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A's app reads nothing. Consensus gets ``consensus_backpressure_s`` of grace, then
    the reader evicts the oldest frame and stops waiting for a while (``CONGESTED_S``):
    it must not wait out the grace once per frame. Txs are dropped when full."""
    caplog.set_level(logging.WARNING, logger="dvp.p2p")
    not_draining = "app is not draining consensus messages"

    async def scenario() -> None:
        cfgs = mesh_configs(2)
        cfgs[0].inbound_queue = {CONSENSUS: 16, TXS: 4}
        a, b = P2PHost(cfgs[0]), P2PHost(cfgs[1])

        async def echo(peer: bytes, req: bytes) -> bytes:
            return req

        a.set_request_handler(echo)
        async with running(a, b):
            await wait_until(lambda: len(a.connected_peers()) == 1, 10, "connected")
            for i in range(500):  # A's app reads nothing
                b.send(a.public_key, CONSENSUS, b"c%03d" % i)
            for i in range(50):
                b.send(a.public_key, TXS, b"t%03d" % i)
            await wait_until(
                lambda: (
                    a.stats["dropped.inbound_evicted.consensus"] == 484
                    and a.stats["dropped.inbound_full.txs"] == 46
                ),
                20,
                lambda: f"overflow accounting {a.stats}",
            )
            assert a.stats["frames_in.consensus"] == 500 and a.stats["frames_in.txs"] == 50
            # The reader kept reading: it waited on the app (and warned) once per
            # congested spell, never once per evicted frame. A reader that waited out the
            # grace per frame would log 484 warnings (and take two minutes).
            waits = sum(not_draining in r.getMessage() for r in caplog.records)
            assert 1 <= waits <= 484 // 10, f"{waits} backpressure waits for 484 evictions"
            # Consensus keeps the newest, txs the oldest.
            assert [p for _, p in await drain(a, CONSENSUS, 16, 5)] == [
                b"c%03d" % i for i in range(484, 500)
            ]
            assert [p for _, p in await drain(a, TXS, 4, 5)] == [b"t%03d" % i for i in range(4)]
            assert await b.request(a.public_key, b"alive", 10) == b"alive"

    run_trio(scenario)


def test_deliver_callback_replaces_the_inbound_channels() -> None:
    async def scenario() -> None:
        a, b = (P2PHost(cfg) for cfg in mesh_configs(2))
        got: list[tuple[str, bytes, bytes]] = []

        def deliver(channel: str, peer: bytes, payload: bytes) -> None:
            if payload == b"boom":
                raise RuntimeError("app bug on purpose")
            got.append((channel, peer, payload))

        a.set_deliver(deliver)
        async with running(a, b):
            await wait_until(lambda: len(b.connected_peers()) == 1, 10, "connected")
            for i in range(100):
                b.send(a.public_key, CONSENSUS, b"c%d" % i)
            b.send(a.public_key, TXS, b"boom")
            b.send(a.public_key, TXS, b"batch")
            await wait_until(lambda: len(got) == 101, 10, lambda: f"delivered {len(got)}")
            assert [p for ch, _, p in got if ch == CONSENSUS] == [b"c%d" % i for i in range(100)]
            assert (TXS, b.public_key, b"batch") in got
            assert a.stats["deliver_errors"] == 1
            assert a.inbound(CONSENSUS).statistics().current_buffer_used == 0

    run_trio(scenario)


def test_sync_channel_name_is_not_pushable() -> None:
    host = P2PHost(P2PConfig(seed=seed_of(0)))
    with pytest.raises(ValueError):
        host.send(key_of(1), SYNC, b"x")
    with pytest.raises(ValueError):
        host.send(key_of(1), CONSENSUS, b"")
    assert not host.send(key_of(1), CONSENSUS, b"nobody connected")
    assert host.stats["dropped.not_connected.consensus"] == 1
