"""The node's ``Transport`` over libp2p (``p2p.P2PHost``).

Adapts the host's pull API (``inbound(channel)`` receive channels) to the node's push
callback (``Node.deliver``) with one pump task per channel, and maps request errors to
``TransportError``. Its hello announces the protocol versions this build speaks; a peer
is refused if its range misses the version the chain runs (``Node.peer_version_refusal``).
``run`` is started in the node's nursery before anything else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ledger.protocol import supported_versions
from node.transport import CONSENSUS, TXS, TransportError, TransportTimeout
from p2p import P2PConfig, P2PHost, RequestError, RequestTimeout
from p2p.runtime import TaskStatus

if TYPE_CHECKING:
    from node.node import Node


class Libp2pTransport:
    def __init__(self, node: Node, peers: dict[bytes, str]) -> None:
        cfg = node.config
        self.node = node
        self.host = P2PHost(
            P2PConfig(
                seed=node.key.seed,
                listen_host=cfg.p2p_listen.host,
                listen_port=cfg.p2p_listen.port,
                peers=peers,
                allowlist=None,
                penalty_strikes=cfg.p2p_penalty_strikes,
                ban_s=cfg.p2p_ban_s,
                versions=supported_versions(),
            )
        )
        self.host.set_request_handler(node.handle_request)
        self.host.set_version_check(node.peer_version_refusal)

    def send(self, peer: bytes, channel: str, payload: bytes) -> None:
        self.host.send(peer, channel, payload)

    def broadcast(self, channel: str, payload: bytes) -> None:
        self.host.broadcast(channel, payload)

    async def request(self, peer: bytes, payload: bytes, timeout_s: float) -> bytes:
        try:
            return await self.host.request(peer, payload, timeout_s)
        except RequestTimeout as exc:
            raise TransportTimeout(f"{type(exc).__name__}: {exc}") from None
        except RequestError as exc:
            raise TransportError(f"{type(exc).__name__}: {exc}") from None

    def connected_peers(self) -> set[bytes]:
        return self.host.connected_peers()

    def set_allowlist(self, keys: set[bytes]) -> None:
        self.host.set_allowlist(keys)

    def set_peers(self, peers: dict[bytes, str]) -> None:
        self.host.set_peers(peers)

    def penalize(self, peer: bytes, reason: str) -> None:
        self.host.penalize(peer, reason)

    @property
    def stats(self) -> object:
        return self.host.stats

    async def _pump(self, channel: str) -> None:
        deliver = self.node.deliver
        async for peer, payload in self.host.inbound(channel):
            deliver(channel, peer, payload)

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.host.run)
            nursery.start_soon(self._pump, CONSENSUS)
            nursery.start_soon(self._pump, TXS)
            task_status.started()


def libp2p_transport(node: Node, peers: dict[bytes, str]) -> Libp2pTransport:
    return Libp2pTransport(node, peers)
