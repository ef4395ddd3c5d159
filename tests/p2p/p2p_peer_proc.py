"""A p2p host in its own OS process, for tests and ``scripts/bench_p2p.py``.

Run as ``python -m tests.p2p.p2p_peer_proc '<json config>'`` from the repository root. The
config holds ``seed`` (hex), ``port``, ``peers`` ({key hex: "127.0.0.1:port"}) and
optional ``allowlist`` (list of key hex), ``rate_limits`` ({channel: [frames/s,
bytes/s]}), ``inbound_queue`` ({channel: frames}) and ``overrides`` (other ``P2PConfig``
fields by name). Once listening it prints ``{"ready": true, "port": N}`` on stdout.

Behaviour, all over the transport itself:
- requests: ``b"stats"`` answers the host's counters as JSON, plus ``consensus_count`` /
  ``txs_count`` (frames the app received); anything else is echoed as ``b"echo:" + req``.
- frames received on ``consensus``/``txs`` are counted; a consensus frame starting with
  ``b"echo "`` is sent back to its sender on ``consensus``.
"""

from __future__ import annotations

import json
import sys

import trio

from p2p import CONSENSUS, TXS, P2PConfig, RateLimit, open_p2p


def config_from_json(doc: dict) -> P2PConfig:  # type: ignore[type-arg]
    cfg = P2PConfig(
        seed=bytes.fromhex(doc["seed"]),
        listen_port=int(doc["port"]),
        peers={bytes.fromhex(k): v for k, v in doc.get("peers", {}).items()},
        allowlist=(
            {bytes.fromhex(k) for k in doc["allowlist"]}
            if doc.get("allowlist") is not None
            else None
        ),
    )
    for ch, (fps, bps) in doc.get("rate_limits", {}).items():
        cfg.rate_limits[ch] = RateLimit(frames_per_s=fps, bytes_per_s=bps)
    for ch, size in doc.get("inbound_queue", {}).items():
        cfg.inbound_queue[ch] = int(size)
    for name, value in doc.get("overrides", {}).items():  # e.g. keepalive_s
        setattr(cfg, name, value)
    return cfg


async def main(doc: dict) -> None:  # type: ignore[type-arg]
    counts = {CONSENSUS: 0, TXS: 0}
    async with open_p2p(config_from_json(doc)) as host, trio.open_nursery() as nursery:

        async def handler(peer: bytes, req: bytes) -> bytes:
            if req == b"stats":
                out = dict(host.stats)
                out.update({f"{ch}_count": n for ch, n in counts.items()})
                out["connected"] = len(host.connected_peers())
                return json.dumps(out).encode()
            return b"echo:" + req

        host.set_request_handler(handler)

        async def count(ch: str) -> None:
            async for peer, payload in host.inbound(ch):
                counts[ch] += 1
                if ch == CONSENSUS and payload.startswith(b"echo "):
                    host.send(peer, CONSENSUS, payload)

        nursery.start_soon(count, CONSENSUS)
        nursery.start_soon(count, TXS)
        print(json.dumps({"ready": True, "port": host.listen_port}), flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, json.loads(sys.argv[1]))
