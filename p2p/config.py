"""Configuration, channel names, peer addresses and errors of the p2p transport.

Owns:
- ``P2PConfig``: everything a host needs, with defaults sized for a four-to-twenty
  validator consortium on one LAN/WAN; ``validate()`` rejects nonsense before any socket
  is opened.
- The channel names (``CONSENSUS``, ``TXS``, ``SYNC``) and their libp2p protocol ids.
- ``parse_peer_address``: ``"host:port"`` or ``/ip4/../tcp/..`` (optionally ending in
  ``/p2p/<id>``, which must then name the expected peer) to a dialable multiaddr.
- The exceptions the transport raises to its caller.

Rules:
- Only IPv4/IPv6 literal addresses over TCP are accepted: no DNS, no other transports, so
  a config file cannot make the node dial something surprising.
- Units are in the names (``_s``, ``_bytes``, ``_per_s``).
- Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

import multiaddr

CONSENSUS = "consensus"
TXS = "txs"
SYNC = "sync"
# One-way channels the app sends on with ``send``/``broadcast`` and reads with ``inbound``.
PUSH_CHANNELS: tuple[str, ...] = (CONSENSUS, TXS)
CHANNELS: tuple[str, ...] = (CONSENSUS, TXS, SYNC)
PROTOCOLS: dict[str, str] = {
    CONSENSUS: "/dvp/consensus/1",
    TXS: "/dvp/txs/1",
    SYNC: "/dvp/sync/1",
}
CHANNEL_OF_PROTOCOL: dict[str, str] = {v: k for k, v in PROTOCOLS.items()}

MiB = 1024 * 1024


class P2PError(Exception):
    """Base class of the transport's errors."""


class ConfigError(P2PError, ValueError):
    """A ``P2PConfig`` or a peer address is invalid."""


class RequestError(P2PError):
    """``request`` got no answer; the subclass says why."""


class PeerUnavailable(RequestError):
    """The peer is not connected (or not allowed) and cannot be asked right now."""


class RequestTimeout(RequestError):
    """No response arrived within the caller's timeout."""


class RemoteError(RequestError):
    """The peer answered with an error (no handler, handler failed, busy, too large)."""


@dataclass(frozen=True)
class RateLimit:
    """A token bucket pair: at most ``frames_per_s`` frames and ``bytes_per_s`` bytes per
    second on average, with bursts of ``burst_s`` seconds' worth of either."""

    frames_per_s: float
    bytes_per_s: float
    burst_s: float = 1.0

    def validate(self, name: str) -> None:
        if self.frames_per_s <= 0 or self.bytes_per_s <= 0 or self.burst_s <= 0:
            raise ConfigError(f"rate limit {name}: rates and burst must be positive")


def _default_limits() -> dict[str, RateLimit]:
    # Consensus: small votes, a few thousand a second at most from one honest peer even
    # during a view change with retransmission. Txs: the node gossips at most one batch
    # (<= 256 KiB) per 10 ms. Sync: requests are tiny; the cost is in the answers.
    return {
        CONSENSUS: RateLimit(frames_per_s=5_000, bytes_per_s=32 * MiB, burst_s=1.0),
        TXS: RateLimit(frames_per_s=1_000, bytes_per_s=64 * MiB, burst_s=1.0),
        SYNC: RateLimit(frames_per_s=200, bytes_per_s=4 * MiB, burst_s=1.0),
    }


@dataclass
class P2PConfig:
    """What a ``P2PHost`` needs. ``peers`` maps a node public key to its address; those
    peers are dialled and redialled for ever. ``allowlist`` (node public keys) says who
    may connect at all; ``None`` means "exactly the keys of ``peers``"."""

    seed: bytes
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    peers: Mapping[bytes, str] = field(default_factory=dict)
    allowlist: set[bytes] | None = None
    max_frame_bytes: int = 4 * MiB
    rate_limits: dict[str, RateLimit] = field(default_factory=_default_limits)
    # App-facing inbound queues (frames). Txs are dropped when full; consensus applies
    # ``consensus_backpressure_s`` of backpressure, then drops the oldest queued frame.
    inbound_queue: dict[str, int] = field(default_factory=lambda: {CONSENSUS: 4096, TXS: 256})
    consensus_backpressure_s: float = 0.25
    # Per peer and channel send queue: frames and bytes, whichever fills first.
    send_queue_frames: int = 4096
    send_queue_bytes: int = 32 * MiB
    # Upper bound of one coalesced write(); bigger batches are split.
    max_write_bytes: int = 1 * MiB
    reconnect_min_s: float = 0.1
    reconnect_max_s: float = 5.0
    dial_timeout_s: float = 5.0
    stream_open_timeout_s: float = 5.0
    # A write that cannot complete in this time (peer stopped reading) resets the stream.
    write_timeout_s: float = 10.0
    # Every stream sends an empty frame after this much silence; a stream that hears
    # nothing (not even that) for ``idle_timeout_s`` is presumed dead and reset.
    keepalive_s: float = 5.0
    idle_timeout_s: float = 20.0
    request_handler_timeout_s: float = 30.0
    max_inflight_requests: int = 8
    shutdown_grace_s: float = 3.0
    # Penalty for a peer that misbehaves (``P2PHost.penalize``: undecodable or oversize
    # frames, invalid signatures): ``penalty_strikes`` offences within
    # ``penalty_window_s`` disconnect it and refuse it for ``ban_s``. Honest peers never
    # commit an offence, so the threshold only needs to ignore a stray one.
    penalty_strikes: int = 20
    penalty_window_s: float = 10.0
    ban_s: float = 30.0
    # The protocol versions this node speaks (lowest, highest), sent in the hello that
    # opens each of its streams; whether a peer's range will do is the app's call
    # (``P2PHost.set_version_check``).
    versions: tuple[int, int] = (1, 1)

    def validate(self) -> None:
        """Raise ``ConfigError`` for anything that cannot work."""
        if len(self.seed) != 32:
            raise ConfigError("seed must be 32 bytes")
        try:
            ipaddress.ip_address(self.listen_host)
        except ValueError as exc:
            raise ConfigError(f"listen_host must be an IP literal: {self.listen_host!r}") from exc
        if not 0 <= self.listen_port <= 65535:
            raise ConfigError(f"listen_port out of range: {self.listen_port}")
        for key, addr in self.peers.items():
            if len(key) != 32:
                raise ConfigError("peer keys must be 32-byte Ed25519 public keys")
            parse_peer_address(addr)
        for key in self.allowlist or ():
            if len(key) != 32:
                raise ConfigError("allowlist keys must be 32-byte Ed25519 public keys")
        low, high = self.versions
        if not 1 <= low <= high <= 0xFFFF:
            raise ConfigError(f"versions must be 1 <= lowest <= highest <= 65535: {self.versions}")
        if not 1024 <= self.max_frame_bytes <= 256 * MiB:
            raise ConfigError("max_frame_bytes must be between 1 KiB and 256 MiB")
        for ch in CHANNELS:
            if ch not in self.rate_limits:
                raise ConfigError(f"rate_limits lacks channel {ch!r}")
            self.rate_limits[ch].validate(ch)
        for ch in PUSH_CHANNELS:
            if self.inbound_queue.get(ch, 0) < 1:
                raise ConfigError(f"inbound_queue[{ch!r}] must be >= 1")
        if self.send_queue_frames < 1 or self.send_queue_bytes < self.max_frame_bytes:
            raise ConfigError("send queue must hold at least one maximal frame")
        if self.max_write_bytes < 1:
            raise ConfigError("max_write_bytes must be positive")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ConfigError("need 0 < reconnect_min_s <= reconnect_max_s")
        if self.keepalive_s <= 0 or self.idle_timeout_s <= 2 * self.keepalive_s:
            raise ConfigError("idle_timeout_s must exceed twice keepalive_s")
        for name in (
            "dial_timeout_s",
            "stream_open_timeout_s",
            "write_timeout_s",
            "request_handler_timeout_s",
            "shutdown_grace_s",
            "consensus_backpressure_s",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.consensus_backpressure_s >= 1.0:
            raise ConfigError("consensus_backpressure_s must stay below 1 s")
        if self.max_inflight_requests < 1:
            raise ConfigError("max_inflight_requests must be >= 1")
        if self.penalty_strikes < 1 or self.penalty_window_s <= 0 or self.ban_s < 0:
            raise ConfigError("penalty_strikes must be >= 1, penalty_window_s > 0, ban_s >= 0")

    def effective_allowlist(self) -> set[bytes]:
        return set(self.peers) if self.allowlist is None else set(self.allowlist)


def parse_peer_address(addr: str) -> multiaddr.Multiaddr:
    """``"127.0.0.1:7001"``, ``"[::1]:7001"`` or ``"/ip4/127.0.0.1/tcp/7001"`` (optionally
    followed by ``/p2p/<peer id>``) -> ``/ip4|ip6/<ip>/tcp/<port>``. The ``/p2p`` part is
    dropped here: the peer id always comes from the configured key, never the address."""
    text = addr.strip()
    if text.startswith("/"):
        try:
            ma = multiaddr.Multiaddr(text)
            names = [p.name for p in ma.protocols()]
        except Exception as exc:  # multiaddr raises several unrelated types
            raise ConfigError(f"bad multiaddr {addr!r}: {exc}") from exc
        if names not in (
            ["ip4", "tcp"],
            ["ip6", "tcp"],
            ["ip4", "tcp", "p2p"],
            ["ip6", "tcp", "p2p"],
        ):
            raise ConfigError(f"only /ip4|ip6/<ip>/tcp/<port>[/p2p/<id>] is supported: {addr!r}")
        host = ma.value_for_protocol(names[0])
        port_text = ma.value_for_protocol("tcp")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise ConfigError(f"address needs host:port: {addr!r}")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip = ipaddress.ip_address(str(host))
        port = int(str(port_text))
    except ValueError as exc:
        raise ConfigError(f"address needs an IP literal and a port: {addr!r}") from exc
    if not 0 < port <= 65535:
        raise ConfigError(f"port out of range: {addr!r}")
    proto = "ip4" if ip.version == 4 else "ip6"
    return multiaddr.Multiaddr(f"/{proto}/{ip}/tcp/{port}")
