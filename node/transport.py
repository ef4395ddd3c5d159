"""What the node needs from the network, and an in-memory implementation for tests.

The node talks to peers through ``Transport``: fire-and-forget frames on named
channels (``consensus``, ``txs``) and request/response for block sync. Inbound frames
are pushed into the node through the ``deliver`` callback it registers, which must
never block (the node drops and counts when its bounded queues are full). The real
implementation is libp2p (``p2p/``); ``MemoryHub`` connects nodes inside one trio run
with the same semantics, including loss when a peer is cut off.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from p2p.config import CONSENSUS, TXS

# The channel names are the p2p layer's (one definition); re-exported for the node.
__all__ = [
    "CONSENSUS",
    "TXS",
    "Deliver",
    "MemoryHub",
    "MemoryTransport",
    "RequestHandler",
    "Transport",
    "TransportError",
    "TransportTimeout",
]

Deliver = Callable[[str, bytes, bytes], None]  # (channel, peer key, payload)
RequestHandler = Callable[[bytes, bytes], Awaitable[bytes]]  # (peer key, request) -> response


class TransportError(Exception):
    """A request could not be answered (peer unreachable, timed out, refused)."""


class TransportTimeout(TransportError):
    """The peer did not answer within the time allowed (slow link, busy or hung peer)."""


class Transport(Protocol):
    def send(self, peer: bytes, channel: str, payload: bytes) -> None: ...

    def broadcast(self, channel: str, payload: bytes) -> None: ...

    async def request(self, peer: bytes, payload: bytes, timeout_s: float) -> bytes: ...

    def connected_peers(self) -> set[bytes]: ...

    def set_allowlist(self, keys: set[bytes]) -> None: ...

    def set_peers(self, peers: dict[bytes, str]) -> None:
        """The configured peers' addresses by key, as resolved from the chain anew (a
        node key rotated): peers new here are dialled."""
        ...

    def penalize(self, peer: bytes, reason: str) -> None:
        """Count an offence by ``peer`` (it sent something an honest node never sends);
        enough of them in a short time disconnect and refuse it for a while."""
        ...


class MemoryHub:
    """Connects ``MemoryTransport``s by node key; ``cut``/``heal`` simulate partitions."""

    def __init__(self) -> None:
        self.endpoints: dict[bytes, MemoryTransport] = {}
        self.cut_links: set[frozenset[bytes]] = set()

    def transport(self, key: bytes) -> MemoryTransport:
        t = MemoryTransport(self, key)
        self.endpoints[key] = t
        return t

    def linked(self, a: bytes, b: bytes) -> bool:
        return (
            frozenset((a, b)) not in self.cut_links
            and a in self.endpoints
            and b in self.endpoints
            and self.endpoints[a].up
            and self.endpoints[b].up
        )

    def isolate(self, key: bytes) -> None:
        for other in self.endpoints:
            if other != key:
                self.cut_links.add(frozenset((key, other)))

    def heal(self) -> None:
        self.cut_links.clear()


class MemoryTransport:
    def __init__(self, hub: MemoryHub, key: bytes) -> None:
        self.hub = hub
        self.key = key
        self.deliver: Deliver | None = None
        self.handler: RequestHandler | None = None
        self.allow: set[bytes] | None = None
        self.up = True
        self.offences: dict[tuple[bytes, str], int] = {}  # counted only: no bans in memory

    def _allowed(self, peer: bytes) -> bool:
        return self.allow is None or peer in self.allow

    def send(self, peer: bytes, channel: str, payload: bytes) -> None:
        target = self.hub.endpoints.get(peer)
        if target is None or not self.hub.linked(self.key, peer) or target.deliver is None:
            return
        if not target._allowed(self.key):
            return
        target.deliver(channel, self.key, payload)

    def broadcast(self, channel: str, payload: bytes) -> None:
        for peer in list(self.hub.endpoints):
            if peer != self.key:
                self.send(peer, channel, payload)

    async def request(self, peer: bytes, payload: bytes, timeout_s: float) -> bytes:
        target = self.hub.endpoints.get(peer)
        if (
            target is None
            or not self.hub.linked(self.key, peer)
            or target.handler is None
            or not target._allowed(self.key)
        ):
            raise TransportError("peer unreachable")
        with trio.move_on_after(timeout_s) as scope:
            await trio.sleep(0)
            return await target.handler(self.key, payload)
        assert scope.cancelled_caught
        raise TransportTimeout("request timed out")

    def connected_peers(self) -> set[bytes]:
        return {k for k in self.hub.endpoints if k != self.key and self.hub.linked(self.key, k)}

    def set_allowlist(self, keys: set[bytes]) -> None:
        self.allow = set(keys)

    def set_peers(self, peers: dict[bytes, str]) -> None:
        pass  # every endpoint on the hub reaches every other: there is nothing to dial

    def penalize(self, peer: bytes, reason: str) -> None:
        self.offences[(peer, reason)] = self.offences.get((peer, reason), 0) + 1
