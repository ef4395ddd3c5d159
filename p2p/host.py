"""``P2PHost``: peers, channels and the app-facing API of the transport.

Owns:
- The allowlist (node public keys -> peer ids) and enforcing it: at the handshake (see
  ``libp2p_glue.AllowlistNoise``), on every inbound stream, and by closing connections of
  peers removed at runtime with ``set_allowlist``.
- A ``PeerLink`` per peer (p2p/peer_link.py): our reconnect loop (configured peers
  only), one long-lived outbound stream per channel (re-opened while connected), the
  send queues that survive stream re-opens, and the peer's pending requests.
- Inbound delivery into bounded app channels, with the per-channel overflow policy:
  txs are dropped when the app's queue is full; consensus waits at most
  ``consensus_backpressure_s``, then evicts the *oldest* queued message (a newer vote or
  proposal is worth more than a stale one; PBFT retransmits) and stays in that
  no-wait mode for ``CONGESTED_S`` so a stuck app never slows the stream's reader.

Rules:
- Every task runs under ``run()``'s nursery (links) or libp2p's (inbound stream
  handlers, which live inside ``run()`` too); cancelling ``run`` stops everything, closes
  every connection within ``shutdown_grace_s`` and closes any socket libp2p left open.
- ``send``/``broadcast``/``set_allowlist``/``set_peers`` never block; ``request`` is
  bounded by its timeout. A payload over ``max_frame_bytes`` is a caller bug
  (``ValueError``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import partial

import multiaddr
import trio
from libp2p.custom_types import TProtocol

from p2p.config import (
    CHANNELS,
    CONSENSUS,
    PROTOCOLS,
    PUSH_CHANNELS,
    SYNC,
    P2PConfig,
    P2PError,
    PeerUnavailable,
    RequestTimeout,
    parse_peer_address,
)
from p2p.framing import RPC_HEADER, RateLimiter, Stats, decode_hello
from p2p.libp2p_glue import (
    ID,
    ConnWatcher,
    IHost,
    INetConn,
    INetStream,
    SocketTracker,
    abandon_frame_writes,
    all_connections,
    build_libp2p_host,
    close_connections,
    connected_peer_ids,
    create_identity_from_seed,
    live_connections,
    peer_id_of,
    quiet_libp2p_logging,
    shielded,
)
from p2p.peer_link import PeerLink
from p2p.runtime import TaskStatus
from p2p.streams import Deliver, FramedStream, RequestHandler, RequestServer, log_fields

log = logging.getLogger("dvp.p2p")

CONGESTED_S = 1.0
REFUSAL_LOG_INTERVAL_S = 30.0
Inbound = tuple[bytes, bytes]  # (peer key, payload)
DeliverFn = Callable[[str, bytes, bytes], None]  # (channel, peer key, payload)
VersionCheck = Callable[[int, int], str | None]  # (lowest, highest) -> refusal or None


class P2PHost:
    """The transport of one node; see ``p2p/__init__.py`` for the API contract."""

    def __init__(self, config: P2PConfig) -> None:
        config.validate()
        self.config = config
        self.public_key = bytes(create_identity_from_seed(config.seed).public_key.to_bytes())
        self.peer_id = peer_id_of(self.public_key)
        self.stats = Stats()
        self.lib: IHost | None = None
        self.listen_addrs: list[multiaddr.Multiaddr] = []
        self._peers = self._parse_peers(config.peers)
        self._pids: dict[bytes, ID] = {}
        self._allow: set[bytes] = set()
        self._key_of: dict[ID, bytes] = {}
        self._links: dict[bytes, PeerLink] = {}
        self._handler: RequestHandler | None = None
        self._deliver: DeliverFn | None = None
        self._version_check: VersionCheck | None = None
        self._version_refused: dict[bytes, str] = {}  # the last refusal logged per peer
        self._ran = False
        self._nursery: trio.Nursery | None = None
        self._sockets = SocketTracker()
        self._refusal_logged: dict[ID, float] = {}
        # Penalties (``penalize``): recent offence times per peer, and banned peers with
        # the time their ban ends. ``_wanted`` is the allowlist the app asked for; the
        # effective one leaves out the banned.
        self._strikes: dict[bytes, list[float]] = {}
        self._banned: dict[bytes, float] = {}
        self._wanted: set[bytes] = set()
        self._send: dict[str, trio.MemorySendChannel[Inbound]] = {}
        self._recv: dict[str, trio.MemoryReceiveChannel[Inbound]] = {}
        self._evict: dict[str, trio.MemoryReceiveChannel[Inbound]] = {}
        self._congested_until: dict[str, float] = {}
        for ch in PUSH_CHANNELS:
            send, recv = trio.open_memory_channel[Inbound](config.inbound_queue[ch])
            self._send[ch], self._recv[ch] = send, recv
            self._evict[ch] = recv.clone()  # our handle for drop-oldest
            self._congested_until[ch] = -math.inf
        self.set_allowlist(config.effective_allowlist())

    # ------------------------------------------------------------------ identity

    def pid(self, key: bytes) -> ID:
        pid = self._pids.get(key)
        if pid is None:
            pid = self._pids[key] = peer_id_of(key)
        return pid

    def allows(self, peer_id: ID) -> bool:
        return peer_id in self._key_of

    def refused(self, peer_id: ID, direction: str) -> None:
        self.stats[f"refused_{direction}"] += 1
        now = trio.current_time()
        if now - self._refusal_logged.get(peer_id, -math.inf) >= REFUSAL_LOG_INTERVAL_S:
            if len(self._refusal_logged) > 1000:
                self._refusal_logged.clear()
            self._refusal_logged[peer_id] = now
            log.warning(
                "refused a peer that is not in the allowlist",
                extra=log_fields(peer_id=str(peer_id), direction=direction),
            )

    def set_allowlist(self, keys: Iterable[bytes]) -> None:
        """Who may connect (node public keys). Peers no longer allowed are disconnected
        now; configured peers that became allowed are dialled."""
        allow = {bytes(k) for k in keys}
        if any(len(k) != 32 for k in allow):
            raise ValueError("allowlist entries must be 32-byte Ed25519 public keys")
        allow.discard(self.public_key)
        self._wanted = set(allow)
        self._apply_allowlist(allow - set(self._banned))

    def set_peers(self, peers: Mapping[bytes, str]) -> None:
        """The configured peers' addresses by node key, anew: the app resolves its
        configured peers' keys from the chain, so a node-key rotation changes them. Keys
        new here are dialled once allowed (``set_allowlist``), and a link up already
        because that peer dialled us starts dialling it too."""
        self._peers = self._parse_peers(peers)
        for key, addr in self._peers.items():
            link = self._links.get(key)
            if link is not None:
                link.learn_address(addr)
            elif key in self._allow:
                self._add_link(key, addr)

    def _parse_peers(self, peers: Mapping[bytes, str]) -> dict[bytes, multiaddr.Multiaddr]:
        return {
            bytes(k): parse_peer_address(a) for k, a in peers.items() if bytes(k) != self.public_key
        }

    def _apply_allowlist(self, allow: set[bytes]) -> None:
        removed = self._allow - allow
        self._allow = allow
        self._key_of = {self.pid(k): k for k in allow}
        for key in [k for k in self._links if k not in allow]:
            self._links.pop(key).stop()
        if self.lib is not None:
            for pid in connected_peer_ids(self.lib):
                if pid not in self._key_of:
                    self._disconnect(pid)
        for key, addr in self._peers.items():
            if key in allow and key not in self._links:
                self._add_link(key, addr)
        if removed:
            log.info(
                "allowlist shrank; disconnecting removed peers",
                extra=log_fields(removed=len(removed), allowed=len(allow)),
            )

    def penalize(self, key: bytes, reason: str) -> bool:
        """Count one offence by ``key`` (a frame it sent did not decode, carried an invalid
        signature, ...). ``penalty_strikes`` offences within ``penalty_window_s`` ban it:
        its connections are closed and it is refused (both ways) for ``ban_s``, then
        re-admitted if still wanted. True if this offence started a ban."""
        cfg = self.config
        self.stats[f"offences.{reason}"] += 1
        if key in self._banned or key not in self._wanted:
            return False
        now = trio.current_time()
        recent = [t for t in self._strikes.get(key, ()) if now - t < cfg.penalty_window_s]
        recent.append(now)
        if len(recent) < cfg.penalty_strikes:
            self._strikes[key] = recent
            return False
        self._strikes.pop(key, None)
        self._banned[key] = now + cfg.ban_s
        self.stats["bans"] += 1
        log.warning(
            "peer banned for misbehaving: disconnected and refused for a while",
            extra=log_fields(
                peer=key,
                reason=reason,
                offences=len(recent),
                window_s=cfg.penalty_window_s,
                ban_s=cfg.ban_s,
            ),
        )
        self._apply_allowlist(self._wanted - set(self._banned))
        self._spawn(self._lift_ban, key)
        return True

    def banned(self) -> set[bytes]:
        """Peers refused now because of ``penalize``."""
        return set(self._banned)

    async def _lift_ban(self, key: bytes) -> None:
        await trio.sleep_until(self._banned[key])
        del self._banned[key]
        log.info("peer ban lifted", extra=log_fields(peer=key))
        self._apply_allowlist(self._wanted - set(self._banned))

    def _add_link(self, key: bytes, addr: multiaddr.Multiaddr | None) -> PeerLink:
        link = PeerLink(self, key, addr)
        self._links[key] = link
        if self._nursery is not None:
            self._nursery.start_soon(link.run)
        return link

    def _spawn(self, fn: object, *args: object) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)  # type: ignore[arg-type]

    def _disconnect(self, peer_id: ID) -> None:
        """Close the connections ``peer_id`` has now (it left the allowlist): gracefully,
        then their sockets. Only those: if it is re-admitted meanwhile, its new
        connections are not touched."""
        if self.lib is not None:
            conns = live_connections(self.lib, peer_id)
            if conns:
                self._spawn(close_connections, conns, self._sockets, self.config.shutdown_grace_s)

    def check_unresponsive(self, link: PeerLink, reason: str, conns: list[INetConn]) -> None:
        """A healthy peer sends a keepalive every ``keepalive_s``, reads what we send and
        accepts our streams; silence for ``idle_timeout_s``, a write stuck for
        ``write_timeout_s`` or a stream open stuck for ``stream_open_timeout_s`` means it
        is frozen or the path is half-open. Close its connections at once, sockets first,
        so ``connected_peers`` stops listing it and we redial. ``conns`` are all those it
        had when the stream (or the open) began: a frozen peer is frozen on every
        connection, and an idle duplicate from a mutual dial would otherwise keep it
        "connected"; a connection that appeared since is never touched."""
        if reason not in ("idle_timeout", "write_timeout", "open_timeout"):
            return
        live = [c for c in conns if not c.is_closed]
        if live:
            self.stats["unresponsive_disconnects"] += 1
            log.warning(
                "peer unresponsive; closing its connections",
                extra=log_fields(peer=link.key, reason=reason, connections=len(live)),
            )
            self._spawn(close_connections, live, self._sockets, 0)

    def _on_conn_change(self, peer_id: ID) -> None:
        key = self._key_of.get(peer_id)
        if key is None or self.lib is None:
            return
        link = self._links.get(key)
        if link is None:
            if not live_connections(self.lib, peer_id):
                return
            link = self._add_link(key, None)  # an allowed peer we do not dial (observer)
        link.refresh()

    # ------------------------------------------------------------------ app API

    def send(self, peer_key: bytes, channel: str, payload: bytes) -> bool:
        """Queue ``payload`` for ``peer_key`` on ``channel`` (``consensus`` or ``txs``).
        Never blocks; False (and counted in ``stats``) if the peer is not connected or
        its queue is full. Payloads are 1..``max_frame_bytes`` bytes."""
        if channel not in PUSH_CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        if not payload or len(payload) > self.config.max_frame_bytes:
            # The empty frame is the keepalive, so an empty payload cannot be sent.
            raise ValueError(f"payload must be 1..max_frame_bytes bytes, not {len(payload)}")
        link = self._links.get(peer_key)
        if link is None or not link.connected:
            self.stats.drop("not_connected", channel)
            return False
        ok, evicted = link.queues[channel].put(payload)
        self.stats.drop("send_queue_evicted", channel, evicted)
        if not ok:
            self.stats.drop("send_queue_full", channel)
        return ok

    def broadcast(self, channel: str, payload: bytes) -> int:
        """``send`` to every connected peer; returns how many accepted it."""
        return sum(
            self.send(key, channel, payload)
            for key, link in list(self._links.items())
            if link.connected
        )

    def inbound(self, channel: str) -> trio.MemoryReceiveChannel[Inbound]:
        """The app's receive end for ``channel``: ``(peer key, payload)`` in order per peer."""
        if channel not in PUSH_CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        return self._recv[channel]

    def set_deliver(self, deliver: DeliverFn | None) -> None:
        """Instead of ``inbound()``: call ``deliver(channel, peer key, payload)`` for every
        consensus/txs frame, synchronously on the stream's reader task (one task switch
        less per frame). It must not block and owns the overflow policy; an exception
        from it is logged and counted (``deliver_errors``), and the frame is lost."""
        self._deliver = deliver

    def set_version_check(self, check: VersionCheck | None) -> None:
        """``check(lowest, highest)``: why a peer speaking those protocol versions is
        refused, or None to accept it (None: accept every peer that sends a hello)."""
        self._version_check = check

    def _check_hello(self, key: bytes, channel: str, payload: bytes) -> str | None:
        versions = decode_hello(payload)
        reason: str | None
        if versions is None:
            reason = "it sent no protocol hello (a build without protocol versions)"
        else:
            check = self._version_check
            reason = check(*versions) if check is not None else None
        if reason is None:
            self._version_refused.pop(key, None)
            return None
        if self._version_refused.get(key) != reason:  # once per peer and reason
            self._version_refused[key] = reason
            log.warning(
                f"refused a peer: {reason}",
                extra=log_fields(peer=key, channel=channel, reason=reason),
            )
        return reason

    def set_request_handler(self, handler: RequestHandler | None) -> None:
        """``async handler(peer key, request) -> response`` for ``/dvp/sync/1``."""
        self._handler = handler

    async def request(self, peer_key: bytes, payload: bytes, timeout_s: float) -> bytes:
        """Ask ``peer_key`` and wait for its answer. Raises ``PeerUnavailable``,
        ``RequestTimeout`` or ``RemoteError`` (all ``RequestError``)."""
        if len(payload) + RPC_HEADER.size > self.config.max_frame_bytes:
            raise ValueError("request exceeds max_frame_bytes")
        link = self._links.get(peer_key)
        if link is None or not link.connected:
            self.stats["requests_unavailable"] += 1
            raise PeerUnavailable(f"peer {peer_key.hex()[:16]} is not connected")
        self.stats["requests_out"] += 1
        with trio.move_on_after(timeout_s):
            fs = await link.sync_stream()
            rid, pending = link.client.start(fs, payload)
            try:
                await pending.done.wait()
            finally:
                link.client.forget(rid)
            if pending.error is not None:
                self.stats["request_errors"] += 1
                raise pending.error
            return pending.body
        self.stats["request_timeouts"] += 1
        raise RequestTimeout(f"no answer from {peer_key.hex()[:16]} within {timeout_s} s")

    def connected_peers(self) -> set[bytes]:
        return {k for k, link in self._links.items() if link.connected}

    def queued(self, peer_key: bytes, channel: str) -> int:
        """Frames waiting in ``peer_key``'s send queue for ``channel`` (a gauge for
        metrics, and a way for a bulk sender to pace itself)."""
        link = self._links.get(peer_key)
        return len(link.queues[channel]) if link is not None else 0

    @property
    def listen_port(self) -> int:
        for ma in self.listen_addrs:
            return int(ma.value_for_protocol("tcp"))
        raise RuntimeError("the host is not listening")

    # ------------------------------------------------------------------ inbound

    async def _on_stream(self, channel: str, stream: INetStream) -> None:
        """libp2p's handler for an inbound stream of one of our protocols."""
        key = self._key_of.get(stream.muxed_conn.peer_id)
        if key is None or self.lib is None:  # allowlist changed under the connection
            self.stats["refused_streams"] += 1
            with trio.move_on_after(1.0):
                try:
                    await stream.reset()
                except Exception:
                    pass
            return
        link = self._links.get(key) or self._add_link(key, None)
        if channel == SYNC:  # the request server applies the limit (and says so)
            server = RequestServer(
                key, lambda: self._handler, self.config, self.stats, link.limiters[SYNC]
            )
            deliver: Deliver = server.deliver
            limiter: RateLimiter | None = None
        else:
            deliver = self._deliver_push
            limiter = link.limiters[channel]
        fs = FramedStream(
            stream,
            peer=key,
            channel=channel,
            direction="in",
            config=self.config,
            stats=self.stats,
            deliver=deliver,
            limiter=limiter,
            check_hello=partial(self._check_hello, key, channel),
        )
        old = link.inbound.get(channel)
        if old is not None:  # one inbound stream per peer and protocol: newest wins
            old.close("replaced")
        link.inbound[channel] = fs
        conns = live_connections(self.lib, link.peer_id)
        try:
            reason = await fs.run()
            if reason == "oversize":  # honest peers never send one: count it against them
                self.penalize(key, "oversize")
            self.check_unresponsive(link, reason, conns)
        finally:
            if link.inbound.get(channel) is fs:
                del link.inbound[channel]

    async def _deliver_push(self, fs: FramedStream, frames: list[bytes]) -> None:
        ch = fs.channel
        deliver = self._deliver
        if deliver is not None:
            for payload in frames:
                try:
                    deliver(ch, fs.peer, payload)
                except Exception:
                    # The app's callback, running on our reader: report, keep reading.
                    self.stats["deliver_errors"] += 1
                    log.exception(
                        "deliver callback failed", extra=log_fields(peer=fs.peer, channel=ch)
                    )
            return
        send = self._send[ch]
        deadline = trio.current_time() + self.config.consensus_backpressure_s
        for payload in frames:
            item = (fs.peer, payload)
            try:
                send.send_nowait(item)
                continue
            except trio.WouldBlock:
                pass
            if ch != CONSENSUS:
                self.stats.drop("inbound_full", ch)
                continue
            if trio.current_time() >= self._congested_until[ch]:
                with trio.move_on_at(deadline):
                    await send.send(item)
                    continue
                self._congested_until[ch] = trio.current_time() + CONGESTED_S
                log.warning(
                    "app is not draining consensus messages; dropping oldest",
                    extra=log_fields(queued=self.config.inbound_queue[ch]),
                )
            try:
                self._evict[ch].receive_nowait()
                self.stats.drop("inbound_evicted", ch)
            except trio.WouldBlock:
                pass
            try:
                send.send_nowait(item)
            except trio.WouldBlock:
                self.stats.drop("inbound_full", ch)

    async def _deliver_unexpected(self, fs: FramedStream, frames: list[bytes]) -> None:
        # Data on a stream we opened to push on: the protocol is one-way, so drop it.
        self.stats.drop("unexpected", fs.channel, len(frames))

    # ------------------------------------------------------------------ lifecycle

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, dial, serve until cancelled; then close every connection."""
        if self._ran:
            raise RuntimeError("P2PHost.run can run once; make a new host to restart")
        self._ran = True
        quiet_libp2p_logging()
        cfg = self.config
        proto = "ip6" if ":" in cfg.listen_host else "ip4"
        listen = multiaddr.Multiaddr(f"/{proto}/{cfg.listen_host}/tcp/{cfg.listen_port}")
        # One yamux frame gets as long as one of our writes (write_timeout_s): a frame
        # still stuck by then means a frozen peer, and its connection is closed.
        lib = build_libp2p_host(
            cfg.seed, listen, self, self._sockets, cfg.dial_timeout_s, cfg.write_timeout_s
        )
        for ch in CHANNELS:
            lib.set_stream_handler(TProtocol(PROTOCOLS[ch]), partial(self._on_stream, ch))
        lib.get_network().register_notifee(ConnWatcher(self._on_conn_change))
        self.lib = lib
        try:
            async with lib.run([listen]):
                try:
                    async with trio.open_nursery() as nursery:
                        self._nursery = nursery
                        self.listen_addrs = list(lib.get_transport_addrs())
                        if not self.listen_addrs:  # libp2p logs a failed bind and goes on
                            raise P2PError(
                                f"cannot listen on {cfg.listen_host}:{cfg.listen_port} "
                                "(address in use, or not an address of this host)"
                            )
                        for link in self._links.values():
                            if not link.started:
                                nursery.start_soon(link.run)
                        log.info(
                            "p2p host listening",
                            extra=log_fields(
                                addrs=[str(a) for a in self.listen_addrs],
                                peer_id=str(self.peer_id),
                                peers=len(self._peers),
                            ),
                        )
                        task_status.started()
                        try:
                            await trio.sleep_forever()
                        finally:
                            # Runs when we are cancelled, before the nursery waits for
                            # its tasks: a frame stuck on a frozen peer's full socket is
                            # shielded and would hold shutdown up to write_timeout_s.
                            abandon_frame_writes(lib)
                finally:
                    self._nursery = None
                    for link in self._links.values():
                        link.client.fail_all("host stopped")
                        link.connected = False
                    # libp2p closes connections under cancellation on its own exit path
                    # and can skip the socket close; close them first, shielded.
                    with shielded(cfg.shutdown_grace_s + 1.0):
                        await close_connections(
                            all_connections(lib), self._sockets, cfg.shutdown_grace_s
                        )
        finally:
            self.lib = None
            self.listen_addrs = []
            leaked = self._sockets.close_all()
            if leaked:
                log.debug("closed sockets libp2p left open", extra=log_fields(count=leaked))


@asynccontextmanager
async def open_p2p(config: P2PConfig) -> AsyncIterator[P2PHost]:
    """``async with open_p2p(cfg) as host:`` runs a host for the body's duration."""
    host = P2PHost(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(host.run)
        try:
            yield host
        finally:
            nursery.cancel_scope.cancel()
