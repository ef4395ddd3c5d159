"""Everything that depends on py-libp2p 0.8.1's construction and internals.

Owns:
- Identity: the node's 32-byte Ed25519 seed is its libp2p key (``create_identity_from_seed``),
  so ``peer_id_of(node public key)`` is the peer id that node presents in Noise.
- ``AllowlistNoise``: the *only* security transport offered (no TLS, SECIO or plaintext:
  over plaintext a client without a peer's key was accepted under that peer's id). It
  runs the Noise XX handshake and then refuses any remote peer id the ``Gate`` does not
  allow, in both directions, before a muxer or a connection record exists.
- ``build_libp2p_host``: a ``BasicHost`` with that security, yamux only (mplex deadlocks a
  stream read against a concurrent write) in its ping-less, whole-frame form
  (``QuietYamux``), TCP only, one attempt per dial, no auto-connector (we run our own
  reconnect loop; theirs dials every address in the peerstore on its own schedule), and a
  resource manager without the global circuit breaker. Its streams
  (``CreditBatchingYamuxStream``) return receive credit in half-window batches instead
  of a window update per read.
- Hygiene: ``quiet_libp2p_logging`` and ``SocketTracker`` (a shutdown backstop that
  closes any TCP socket libp2p forgot, instead of leaking a ``ResourceWarning``).

Rules: no other module imports libp2p internals beyond the public host/stream API; if a
libp2p upgrade changes behaviour, this is the file to revisit.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any, Protocol

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import (
    IHost,
    IMuxedConn,
    INetConn,
    INetStream,
    INetwork,
    INotifee,
    IRawConnection,
    ISecureConn,
)
from libp2p.crypto.ed25519 import Ed25519PublicKey
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.identity_utils import create_identity_from_seed
from libp2p.io.exceptions import ConnectionClosedError
from libp2p.network.auto_connector import AutoConnector
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.peer.id import ID
from libp2p.protocol_muxer.exceptions import MultiselectError
from libp2p.rcmgr import new_resource_manager
from libp2p.security.exceptions import HandshakeFailure
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream
from libp2p.stream_muxer.yamux import yamux as _yamux_module
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux, YamuxStream

__all__ = [
    "ID",
    "IHost",
    "INetConn",
    "INetStream",
    "abandon_frame_writes",
    "build_libp2p_host",
    "create_identity_from_seed",
    "key_of_peer_id",
    "peer_id_of",
]

log = logging.getLogger("dvp.p2p")

# TTL 0 is "permanent" in this peerstore; any later add with a TTL (identify, connect()
# use 120 s) overwrites it, so the dial loop re-adds its address before every dial.
PERMANENT_ADDR_TTL = 0
_LIBP2P_DIR = os.path.dirname(os.path.abspath(str(__import__("libp2p").__file__)))


def peer_id_of(node_public_key: bytes) -> ID:
    """The libp2p peer id of the node whose raw Ed25519 public key is given."""
    if len(node_public_key) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return ID.from_pubkey(Ed25519PublicKey.from_bytes(node_public_key))


def key_of_peer_id(peer_id: ID) -> bytes | None:
    """The raw Ed25519 key inside an identity-multihash peer id, or None (other types)."""
    try:
        pub = peer_id.extract_public_key()
    except Exception:  # malformed ids raise assorted errors; None is the answer
        return None
    if pub is None or not isinstance(pub, Ed25519PublicKey):
        return None
    return bytes(pub.to_bytes())


class Gate(Protocol):
    """Who may hold a connection; implemented by the host."""

    def allows(self, peer_id: ID) -> bool: ...

    def refused(self, peer_id: ID, direction: str) -> None: ...


class SocketTracker:
    """Remembers every TCP socket that reached the security handshake (and, once
    admitted, which secure connection runs on it) so that we can close sockets
    ourselves: one connection's, when its peer is frozen (libp2p's graceful close first
    writes a GO_AWAY that would wait behind a full socket), and all of them at shutdown
    (libp2p's close paths await under cancellation and can skip the socket close, which
    surfaces as a ``ResourceWarning``)."""

    def __init__(self) -> None:
        self._all: weakref.WeakSet[trio.SocketStream] = weakref.WeakSet()
        self._by_secure: weakref.WeakKeyDictionary[ISecureConn, trio.SocketStream] = (
            weakref.WeakKeyDictionary()
        )

    @staticmethod
    def _socket_of(conn: IRawConnection) -> trio.SocketStream | None:
        inner = getattr(getattr(conn, "stream", None), "stream", None)
        return inner if isinstance(inner, trio.SocketStream) else None

    def track(self, conn: IRawConnection) -> None:
        sock = self._socket_of(conn)
        if sock is not None:
            self._all.add(sock)

    def assign(self, secure: ISecureConn, conn: IRawConnection) -> None:
        sock = self._socket_of(conn)
        if sock is not None:
            self._by_secure[secure] = sock

    def close_conn(self, conn: INetConn) -> bool:
        """Close the socket under a swarm connection now (synchronously: every task
        blocked on it errors out)."""
        secure = getattr(getattr(conn, "muxed_conn", None), "secured_conn", None)
        return secure is not None and self.close_secure(secure)

    def close_secure(self, secure: ISecureConn) -> bool:
        """Close the socket under a secure connection now; False if unknown or closed."""
        sock = self._by_secure.get(secure)
        if sock is None or sock.socket.fileno() == -1:
            return False
        sock.socket.close()
        return True

    def close_all(self) -> int:
        closed = 0
        for s in list(self._all):
            if s.socket.fileno() != -1:
                s.socket.close()
                closed += 1
        return closed


class AllowlistNoise(NoiseTransport):
    """Noise XX, then the allowlist: a peer id the gate refuses gets its connection closed
    and a ``HandshakeFailure`` (so the swarm registers nothing for it)."""

    def __init__(self, key_pair: Any, gate: Gate, sockets: SocketTracker) -> None:
        super().__init__(key_pair, noise_privkey=create_x25519_key_pair().private_key)
        self.gate = gate
        self.sockets = sockets

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        self.sockets.track(conn)
        return await self._admit(conn, await super().secure_inbound(conn), "inbound")

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        self.sockets.track(conn)
        return await self._admit(conn, await super().secure_outbound(conn, peer_id), "outbound")

    async def _admit(self, raw: IRawConnection, secure: ISecureConn, direction: str) -> ISecureConn:
        remote = secure.get_remote_peer()
        if self.gate.allows(remote):
            self.sockets.assign(secure, raw)
            return secure
        self.gate.refused(remote, direction)
        with trio.move_on_after(1.0):
            try:
                await secure.close()
            except Exception:  # the refused peer may already be gone; nothing to do
                pass
        raise HandshakeFailure(f"peer {remote} is not in the allowlist")


class CreditBatchingYamuxStream(YamuxStream):
    """A yamux stream that returns receive credit in batches, as go-yamux does.

    py-libp2p 0.8.1 sends a WINDOW_UPDATE after every read of a stream that left the
    window short of its target at all (its "partial slack" branch), i.e. after nearly
    every read. Our readers read whatever is buffered, so that was one extra Noise
    message out -- and one more read, decrypt and header parse on the peer -- per data
    frame or less: under a 1,000 tx/s devnet load, 5,175 window updates against 991
    data frames received on one node in 30 s (84 % of the Noise messages it wrote).
    Here credit goes back once the consumed bytes reach half the target window (go-
    yamux's ``sendWindowUpdate`` hysteresis), which keeps a sender from ever waiting
    for it while its reader keeps up: it still has the other half of the window."""

    async def _auto_tune_and_send_window_update(self, *, bytes_read: int = 0) -> None:
        async with self.window_lock:
            buffered = len(self.conn.stream_buffers.get(self.stream_id, b""))
            consumed = self.target_recv_window - (self.recv_window + buffered)
            if consumed < self.target_recv_window // 2:
                return
            credit = self._grow_to_delta(buffered) + self._apply_autotune_epoch(buffered)
        if credit > 0:
            await self.send_window_update(credit, skip_lock=True)


# Yamux builds its streams from this module-level name (when it opens one and when the
# peer does); QuietYamux is the only muxer this process uses.
_yamux_module.YamuxStream = CreditBatchingYamuxStream  # type: ignore[misc]


class QuietYamux(Yamux):
    """Yamux without its RTT ping loop, and whose frames are never cut in half.

    Pings: py-libp2p's yamux answers a ping from its connection reader task under the
    connection's write lock. When both peers are writing faster than TCP drains (both
    broadcasting large batches), each side's writer holds the lock while blocked on a
    full socket, each reader then blocks on the pong, nobody reads TCP any more: a
    deadlock (seen in tests: writes stuck for good at the first ping, 0.5 s after
    connecting). Without pings the reader never needs the write lock except to ACK a
    new stream. The RTT only tunes window growth, which falls back to a default.

    Whole frames: a 64 KiB DATA frame goes out as two Noise messages, and the stock
    ``_write_frame`` can be cancelled between them (or inside a socket send) by whatever
    cancels the writing task -- a stream ended by its reader, a write deadline, a reset
    under a short deadline. The peer then takes our next frames for the rest of that
    one: the connection falls silent in that direction while both ends still count it as
    up (a flooding peer's stream reset by its victim wedged the link for 5 s until our
    stream-open timeout fired; docs/RELIABILITY.md 3.5 item 7). So a frame, once begun,
    is shielded from cancellation until it is fully written; a frame that still cannot
    finish by its caller's deadline (or ``frame_write_timeout_s``) closes the connection's
    socket at once -- the byte stream cannot be resynchronised -- so both ends see the
    connection drop and redial."""

    # Set per connection by ``_QuietMuxerMultistream``; these defaults keep the class
    # usable if libp2p ever builds one itself.
    sockets: SocketTracker | None = None
    frame_write_timeout_s: float = 10.0
    _frame_guard: trio.CancelScope | None = None

    async def _measure_rtt_loop(self) -> None:
        return None

    async def _write_frame(self, data: bytes) -> None:
        async with self._write_lock:
            # A caller cancelled before its frame begins gives it up whole (no byte sent).
            await trio.lowlevel.checkpoint_if_cancelled()
            deadline = min(
                trio.current_time() + self.frame_write_timeout_s, trio.current_effective_deadline()
            )
            with trio.CancelScope(deadline=deadline, shield=True) as guard:
                self._frame_guard = guard
                try:
                    await self.secured_conn.write(data)
                finally:
                    self._frame_guard = None
            if guard.cancelled_caught:
                await self._abort_cut_frame(len(data))
        # The stock method yields here too: a writer in a loop lets the reader run.
        await trio.lowlevel.checkpoint()

    def abandon_frame_write(self) -> None:
        """Give up the frame being written, if any (the connection is then closed):
        shutdown must not wait out a frame stuck on a full socket."""
        if self._frame_guard is not None:
            self._frame_guard.cancel()

    async def _abort_cut_frame(self, size: int) -> None:
        log.warning(
            "a yamux frame could not be written in time; closing the connection",
            extra={"fields": {"peer_id": str(self.peer_id), "frame_bytes": size}},
        )
        if self.sockets is None or not self.sockets.close_secure(self.secured_conn):
            with trio.CancelScope(deadline=trio.current_time() + 1.0, shield=True):
                try:
                    await self.secured_conn.close()
                except Exception:  # already broken: closed is what we want
                    pass
        raise ConnectionClosedError("yamux frame cut short; connection closed", transport="yamux")


class _QuietMuxerMultistream(MuxerMultistream):
    """Negotiates yamux only and builds ``QuietYamux`` (the stock class hard-codes
    ``Yamux`` for the yamux protocol id, so a muxer option alone cannot change it)."""

    sockets: SocketTracker | None = None
    frame_write_timeout_s: float = 10.0

    async def new_conn(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        protocol, _ = await self._selector.select(conn, conn.is_initiator, self.negotiate_timeout)
        if protocol != YAMUX_PROTOCOL_ID:
            raise MultiselectError(f"only yamux is supported, peer chose {protocol}")
        muxed = QuietYamux(conn, peer_id, is_initiator=conn.is_initiator)
        muxed.sockets = self.sockets
        muxed.frame_write_timeout_s = self.frame_write_timeout_s
        return self._annotate_connection(muxed, conn, protocol)


class _NoAutoConnect(AutoConnector):
    """libp2p's auto-connector, switched off: dvp dials only configured validators."""

    async def maybe_connect(self) -> None:
        return None

    async def run_background_task(self, nursery: trio.Nursery) -> None:
        return None


class ConnWatcher(INotifee):
    """Forwards connect/disconnect notifications to ``on_change(peer_id)`` (synchronous,
    so the swarm's notification path is never blocked by us)."""

    def __init__(self, on_change: Any) -> None:
        self.on_change = on_change

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self.on_change(conn.muxed_conn.peer_id)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.on_change(conn.muxed_conn.peer_id)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, maddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, maddr: multiaddr.Multiaddr) -> None:
        return None


def build_libp2p_host(
    seed: bytes,
    listen: multiaddr.Multiaddr,
    gate: Gate,
    sockets: SocketTracker,
    dial_timeout_s: float,
    frame_write_timeout_s: float,
) -> IHost:
    """A host with Noise(+allowlist) only, yamux only, TCP only; not yet listening.
    ``frame_write_timeout_s`` bounds one yamux frame's write (``QuietYamux``)."""
    key_pair = create_identity_from_seed(seed)
    conn_config = ConnectionConfig(dial_timeout=dial_timeout_s)
    # The default resource manager also has a *global* circuit breaker (5 failed
    # acquisitions deny every connection for 60 s) and "graceful degradation" (limits
    # shrink under load): either could lock validators out of each other because of
    # someone else's flood. Keep its connection/stream/memory limits and per-peer
    # connection rate limit (10/s), drop those two.
    resource_manager = new_resource_manager(
        enable_circuit_breaker=False, enable_graceful_degradation=False
    )
    host = new_host(
        key_pair=key_pair,
        resource_manager=resource_manager,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): AllowlistNoise(key_pair, gate, sockets)},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): QuietYamux},
        listen_addrs=[listen],
        connection_config=conn_config,
    )
    network: Any = host.get_network()
    network.auto_connector = _NoAutoConnect(network, conn_config.auto_connect_interval)
    # One attempt per dial: the host's reconnect loop owns retries and their backoff.
    network.retry_config = RetryConfig(max_retries=0)
    upgrader = network.upgrader
    muxers = _QuietMuxerMultistream(
        {TProtocol(YAMUX_PROTOCOL_ID): QuietYamux}, upgrader.muxer_multistream.negotiate_timeout
    )
    muxers.sockets = sockets
    muxers.frame_write_timeout_s = frame_write_timeout_s
    upgrader.muxer_multistream = muxers
    return host


def abandon_frame_writes(host: IHost) -> int:
    """Give up every yamux frame being written now (``QuietYamux.abandon_frame_write``);
    returns how many connections had one. For shutdown: a frame stuck on a frozen peer's
    full socket would otherwise hold it for up to ``frame_write_timeout_s``."""
    n = 0
    for c in all_connections(host):
        muxed = getattr(c, "muxed_conn", None)
        if isinstance(muxed, QuietYamux) and muxed._frame_guard is not None:
            muxed.abandon_frame_write()
            n += 1
    return n


def shielded(timeout_s: float) -> trio.CancelScope:
    """A cancel scope that ignores outer cancellation for at most ``timeout_s``: for
    cleanup that must happen during shutdown (closing connections, resetting streams)."""
    return trio.CancelScope(deadline=trio.current_time() + timeout_s, shield=True)


def live_connections(host: IHost, peer_id: ID) -> list[INetConn]:
    network: Any = host.get_network()
    return [c for c in network.get_connections(peer_id) if not c.is_closed]


def connected_peer_ids(host: IHost) -> list[ID]:
    network: Any = host.get_network()
    return [
        pid
        for pid, conns in list(network.connections.items())
        if any(not c.is_closed for c in conns)
    ]


async def close_connections(
    conns: list[INetConn], sockets: SocketTracker, graceful_s: float
) -> None:
    """Close ``conns`` concurrently: gracefully (yamux GO_AWAY) for up to ``graceful_s``
    (0 = not at all), then their sockets, then let libp2p drop its records (each libp2p
    close sleeps ~0.2 s, hence concurrently)."""

    async def close_one(c: INetConn) -> None:
        if graceful_s > 0:
            with trio.move_on_after(graceful_s):
                try:
                    await c.close()
                except Exception:  # a connection that is already broken
                    pass
        sockets.close_conn(c)
        if not c.is_closed:
            with trio.move_on_after(1.0):  # the socket is closed: this is quick
                try:
                    await c.close()
                except Exception:
                    pass

    async with trio.open_nursery() as nursery:
        for c in conns:
            nursery.start_soon(close_one, c)


def all_connections(host: IHost) -> list[INetConn]:
    network: Any = host.get_network()
    return [c for cs in list(network.connections.values()) for c in list(cs)]


class _DropLibp2pRootRecords(logging.Filter):
    """Some libp2p modules log through the *root* logger (``logging.warning(...)``);
    drop those records so expected churn (peers restarting) does not reach our logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            (record.pathname or "").startswith(_LIBP2P_DIR) and record.levelno < logging.CRITICAL
        )


def quiet_libp2p_logging() -> None:
    """libp2p logs every failed dial at ERROR; our reconnect loop fails dials routinely
    while a peer is down and reports what matters itself (``dvp.p2p``). Leave libp2p's
    logging alone when the operator asked for it with ``LIBP2P_DEBUG``."""
    if os.environ.get("LIBP2P_DEBUG"):
        return
    logging.getLogger("libp2p").setLevel(logging.CRITICAL)
    root = logging.getLogger()
    if not any(isinstance(f, _DropLibp2pRootRecords) for f in root.filters):
        root.addFilter(_DropLibp2pRootRecords())
