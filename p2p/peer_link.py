"""``PeerLink``: our side of one allowed peer, owned by ``P2PHost`` (p2p/host.py).

This module owns what the host keeps per peer: the reconnect loop (configured peers
only, with jittered backoff), one long-lived outbound stream per channel (re-opened while
connected), the send queues that survive stream re-opens, and the peer's pending
requests. Every task it starts runs under the host's nursery; the host's rules (p2p/host.py
docstring) hold here too.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any, Protocol

import multiaddr
import trio
from libp2p.custom_types import TProtocol

from p2p.config import (
    CHANNELS,
    CONSENSUS,
    PROTOCOLS,
    SYNC,
    TXS,
    P2PConfig,
    PeerUnavailable,
)
from p2p.framing import OutQueue, RateLimiter, Stats, encode_hello
from p2p.libp2p_glue import (
    ID,
    PERMANENT_ADDR_TTL,
    IHost,
    INetConn,
    INetStream,
    live_connections,
)
from p2p.runtime import in_trio
from p2p.streams import FramedStream, RequestClient, log_fields


class LinkHost(Protocol):
    """What a ``PeerLink`` uses of its host (``p2p.host.P2PHost``), declared here so this
    module need not import the host module that imports it."""

    config: P2PConfig
    public_key: bytes
    stats: Stats
    lib: IHost | None

    def pid(self, key: bytes) -> ID: ...

    def check_unresponsive(self, link: PeerLink, reason: str, conns: list[INetConn]) -> None: ...

    async def _deliver_unexpected(self, fs: FramedStream, frames: list[bytes]) -> None: ...


log = logging.getLogger("dvp.p2p")

STREAM_RETRY_MIN_S = 0.05


class PeerLink:
    """Our side of one allowed peer: dialling (if we know its address), outbound
    streams, send queues and pending requests."""

    def __init__(self, host: LinkHost, key: bytes, addr: multiaddr.Multiaddr | None) -> None:
        cfg = host.config
        self.host = host
        self.key = key
        self.peer_id = host.pid(key)
        self.addr = addr
        self.queues = {
            CONSENSUS: OutQueue(cfg.send_queue_frames, cfg.send_queue_bytes, drop_oldest=True),
            TXS: OutQueue(cfg.send_queue_frames, cfg.send_queue_bytes, drop_oldest=False),
            SYNC: OutQueue(cfg.send_queue_frames, cfg.send_queue_bytes, drop_oldest=False),
        }
        self.out: dict[str, FramedStream | None] = {ch: None for ch in CHANNELS}
        self.inbound: dict[str, FramedStream] = {}
        self.client = RequestClient(host.stats)
        now = trio.current_time() if in_trio() else 0.0
        self.limiters = {
            ch: RateLimiter(cfg.rate_limits[ch], cfg.max_frame_bytes, now) for ch in CHANNELS
        }
        self.connected = False
        self.ever_connected = False
        self.started = False
        self.scope = trio.CancelScope()
        self._nursery: trio.Nursery | None = None
        self._changed = trio.Event()

    def _notify(self) -> None:
        ev, self._changed = self._changed, trio.Event()
        ev.set()

    async def _wait_changed(self, timeout_s: float = math.inf) -> None:
        with trio.move_on_after(timeout_s):
            await self._changed.wait()

    def refresh(self) -> None:
        lib = self.host.lib
        self.set_connected(lib is not None and bool(live_connections(lib, self.peer_id)))

    def set_connected(self, up: bool) -> None:
        if up == self.connected:
            return
        self.connected = up
        stats = self.host.stats
        if up:
            stats["connects"] += 1
            if self.ever_connected:
                stats["reconnects"] += 1
            self.ever_connected = True
            log.info("peer connected", extra=log_fields(peer=self.key))
        else:
            stats["disconnects"] += 1
            for ch, q in self.queues.items():
                stats.drop("disconnected", ch, q.clear())
            log.info("peer disconnected", extra=log_fields(peer=self.key))
        self._notify()

    def stop(self) -> None:
        self.scope.cancel()
        for fs in list(self.inbound.values()):
            fs.close("peer_removed")
        self.client.fail_all("peer removed from the allowlist")

    async def run(self) -> None:
        self.started = True
        with self.scope:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.addr is not None:
                    nursery.start_soon(self._dial_loop)
                for ch in CHANNELS:
                    nursery.start_soon(self._keep_stream, ch)

    def learn_address(self, addr: multiaddr.Multiaddr) -> None:
        """Start dialling ``addr``: a peer that dialled us under a key the configured
        peers did not resolve to yet (its node key rotated) is now one of them. A link
        that dials already keeps its address (configured addresses do not change while
        the node runs)."""
        if self.addr is not None:
            return
        self.addr = addr
        if self._nursery is not None:
            self._nursery.start_soon(self._dial_loop)

    async def sync_stream(self) -> FramedStream:
        """The live outbound sync stream; waits for it, ``PeerUnavailable`` when down."""
        while True:
            if not self.connected:
                raise PeerUnavailable(f"peer {self.key.hex()[:16]} disconnected")
            fs = self.out[SYNC]
            if fs is not None and fs.alive:
                return fs
            await self._wait_changed()

    async def _dial_loop(self) -> None:
        """Keep a connection to this peer: dial, back off exponentially (with jitter) up
        to ``reconnect_max_s``, dial again. The swarm blocks redials of a failed peer for
        60 s and ``connect()`` stores addresses with a 120 s TTL: we undo both first."""
        host, cfg, addr = self.host, self.host.config, self.addr
        assert addr is not None and host.lib is not None
        lib = host.lib
        network: Any = lib.get_network()  # the Swarm: unblock_peer is not on the interface
        # Both sides dial each other at start-up; the higher key waits a moment so the
        # usual outcome is one connection rather than two.
        if host.public_key > self.key:
            await self._wait_changed(random.uniform(0.2, 0.5))
        backoff = cfg.reconnect_min_s
        failures = 0
        while True:
            self.refresh()
            if self.connected:
                failures = 0
                backoff = cfg.reconnect_min_s
                await self._wait_changed(1.0)
                continue
            network.unblock_peer(self.peer_id)
            lib.get_peerstore().add_addrs(self.peer_id, [addr], PERMANENT_ADDR_TTL)
            host.stats["dials"] += 1
            error = ""
            with trio.move_on_after(cfg.dial_timeout_s):
                try:
                    await network.dial_peer(self.peer_id)
                except Exception as exc:  # refused, unreachable, handshake failed...
                    error = repr(exc)
            self.refresh()
            if self.connected:
                continue
            host.stats["dial_failures"] += 1
            failures += 1
            level = logging.INFO if failures == 1 else logging.DEBUG
            log.log(
                level,
                "dial failed; retrying with backoff",
                extra=log_fields(
                    peer=self.key,
                    addr=str(addr),
                    backoff_s=round(backoff, 2),
                    error=error or "timeout",
                ),
            )
            await trio.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, cfg.reconnect_max_s)

    async def _keep_stream(self, ch: str) -> None:
        """Keep one outbound stream for ``ch`` open while the peer is connected."""
        host, cfg = self.host, self.host.config
        backoff = STREAM_RETRY_MIN_S
        while True:
            while not self.connected:
                await self._wait_changed(1.0)
                self.refresh()
            lib = host.lib
            assert lib is not None
            stream: INetStream | None = None
            candidates = live_connections(lib, self.peer_id)
            with trio.move_on_after(cfg.stream_open_timeout_s) as slow:
                try:
                    stream = await lib.new_stream(self.peer_id, [TProtocol(PROTOCOLS[ch])])
                except Exception as exc:  # connection went away, protocol refused...
                    log.debug(
                        "stream open failed",
                        extra=log_fields(peer=self.key, channel=ch, error=repr(exc)),
                    )
            if slow.cancelled_caught:
                host.check_unresponsive(self, "open_timeout", candidates)
            if stream is None:
                host.stats[f"stream_open_failures.{ch}"] += 1
                await trio.sleep(backoff)
                backoff = min(backoff * 2, cfg.reconnect_max_s)
                self.refresh()
                continue
            deliver = self.client.deliver if ch == SYNC else host._deliver_unexpected
            fs = FramedStream(
                stream,
                peer=self.key,
                channel=ch,
                direction="out",
                config=cfg,
                stats=host.stats,
                deliver=deliver,
                limiter=None,
                queue=self.queues[ch],
                hello=encode_hello(cfg.versions),
            )
            self.out[ch] = fs
            self._notify()
            opened = trio.current_time()
            conns = live_connections(lib, self.peer_id)
            try:
                host.check_unresponsive(self, await fs.run(), conns)
            finally:
                self.out[ch] = None
                if ch == SYNC:
                    host.stats.drop("stream_closed", SYNC, self.queues[SYNC].clear())
                    self.client.fail_all("stream closed")
                self._notify()
            if trio.current_time() - opened > 5.0:
                backoff = STREAM_RETRY_MIN_S
            await trio.sleep(backoff)
            backoff = min(backoff * 2, cfg.reconnect_max_s)
            self.refresh()
