"""dvp's peer-to-peer transport: opaque byte frames between permissioned nodes over py-libp2p.

The transport knows node public keys, channels and bytes; it knows nothing about
consensus or transactions.

Wire: TCP (``/ip4/<host>/tcp/<port>``), Noise only, yamux only. A node's libp2p identity is
its Ed25519 node key (``peer_id_of(public_key)`` is its peer id). A peer whose key is not
in the allowlist is refused right after the Noise handshake, inbound and outbound.

Channels (one long-lived outbound stream per peer and protocol, each way):

    ``consensus``  /dvp/consensus/1   one-way frames; inbound overflow -> drop oldest
    ``txs``        /dvp/txs/1         one-way frames (tx batches); overflow -> drop new
    ``sync``       /dvp/sync/1        request/response (catch-up)

Every stream opens with a hello frame carrying the protocol versions its opener speaks
(``P2PConfig.versions``); the accepting side asks the app's version check and resets the
stream, logging why once per peer, if the range will not do.

Frames are ``u32 length || payload`` (``p2p/framing.py``), at most ``max_frame_bytes``;
an oversize frame drops the stream. Each inbound stream is rate-limited per peer
(frames/s and bytes/s token buckets); the excess is dropped and counted.

API::

    cfg = P2PConfig(seed=seed32, listen_host="127.0.0.1", listen_port=7001,
                    peers={peer_pubkey: "127.0.0.1:7002", ...},   # dialled for ever
                    allowlist={pubkey, ...})                      # None = keys of peers
    async with open_p2p(cfg) as host:          # or: await nursery.start(P2PHost(cfg).run)
        host.send(peer_key, "consensus", payload)   # never blocks; False if dropped
        host.broadcast("txs", batch)                # to every connected peer
        async for peer_key, payload in host.inbound("consensus"): ...
        host.set_deliver(fn)     # or: fn(channel, peer_key, payload) on the reader task
        host.set_request_handler(handler)           # async (peer_key, req) -> resp
        resp = await host.request(peer_key, req, timeout_s=2.0)
            # raises PeerUnavailable / RequestTimeout / RemoteError (RequestError)
        host.set_version_check(fn)   # (lowest, highest) -> refusal reason or None
        host.set_allowlist(keys)     # at runtime; removed peers are disconnected
        host.connected_peers()       # set of node public keys
        host.queued(peer_key, "txs") # frames waiting in that peer's send queue
        host.stats                   # Counter: frames_in.<ch>, frames_out.<ch>,
                                     # writes.<ch>, dropped.<reason>.<ch>, reconnects,
                                     # dial_failures, refused_inbound/outbound, ...

``P2PHost`` can be constructed (and ``set_allowlist``/``set_request_handler`` called)
before ``run``; ``send`` before ``run`` drops (no peer is connected yet). ``run`` runs
once; cancelling it closes every connection within ``shutdown_grace_s``.

Modules: ``config`` (config, names, errors), ``framing`` (bytes on the wire, queues,
rate limits; no I/O), ``streams`` (one framed stream, request/response), ``host``
(peers, allowlist, inbound policies, app API), ``peer_link`` (one peer: reconnects,
outbound streams, send queues), ``runtime`` (``in_trio``), ``libp2p_glue`` (everything
specific to py-libp2p 0.8.1).
"""

from p2p.config import (
    CHANNELS,
    CONSENSUS,
    PROTOCOLS,
    SYNC,
    TXS,
    ConfigError,
    P2PConfig,
    P2PError,
    PeerUnavailable,
    RateLimit,
    RemoteError,
    RequestError,
    RequestTimeout,
    parse_peer_address,
)
from p2p.host import DeliverFn, P2PHost, VersionCheck, open_p2p
from p2p.libp2p_glue import peer_id_of
from p2p.streams import RequestHandler

__all__ = [
    "CHANNELS",
    "CONSENSUS",
    "PROTOCOLS",
    "SYNC",
    "TXS",
    "ConfigError",
    "DeliverFn",
    "P2PConfig",
    "P2PError",
    "P2PHost",
    "PeerUnavailable",
    "RateLimit",
    "RemoteError",
    "RequestError",
    "RequestHandler",
    "RequestTimeout",
    "VersionCheck",
    "open_p2p",
    "parse_peer_address",
    "peer_id_of",
]
