"""Benchmark the p2p transport with separate OS processes on 127.0.0.1.

    python scripts/bench_p2p.py [--duration-s 10]

Starts three receiver processes and one driver process (each a ``P2PHost``; this script
only coordinates) and measures, from the driver:

1. one-way throughput of 1 KiB frames on ``/dvp/consensus/1`` to one receiver, with
   coalescing (everything queued goes in one ``write()``), and once with one frame per
   ``write()`` for comparison; frames/s at the receiver and CPU time per frame on each
   side (``time.process_time`` deltas inside each process);
2. request/response on ``/dvp/sync/1``: sequential round trips/s with median and p99
   latency, and round trips/s with 8 requests in flight;
3. 64 KiB transaction batches broadcast to all three receivers on ``/dvp/txs/1``:
   batches/s delivered per receiver and MB/s in total.

Rate limits are raised for the run (the defaults would cap one peer's consensus traffic
at 5,000 frames/s). The last line of output is one JSON object with every figure; the
load average is included because the absolute rates depend on what else runs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from p2p import CONSENSUS, TXS, P2PConfig, P2PHost, RateLimit, open_p2p  # noqa: E402

UNLIMITED = RateLimit(frames_per_s=1e9, bytes_per_s=1e12)
KiB = 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(doc: dict[str, Any]) -> P2PConfig:
    cfg = P2PConfig(
        seed=bytes.fromhex(doc["seed"]),
        listen_port=doc["port"],
        peers={bytes.fromhex(k): v for k, v in doc["peers"].items()},
        allowlist={bytes.fromhex(k) for k in doc["allow"]},
    )
    cfg.rate_limits = {ch: UNLIMITED for ch in cfg.rate_limits}
    cfg.inbound_queue = {CONSENSUS: 65536, TXS: 4096}
    return cfg


# ---------------------------------------------------------------------- receiver


async def receiver(doc: dict[str, Any]) -> None:
    counts = {CONSENSUS: 0, TXS: 0}
    first = {CONSENSUS: 0.0, TXS: 0.0}
    last = {CONSENSUS: 0.0, TXS: 0.0}

    async def handler(peer: bytes, req: bytes) -> bytes:
        if req == b"stats":
            return json.dumps(
                {"counts": counts, "first": first, "last": last, "cpu_s": time.process_time()}
            ).encode()
        if req == b"reset":
            for ch in counts:
                counts[ch] = 0
                first[ch] = last[ch] = 0.0
            return b"ok"
        return req

    async def count(host: P2PHost, ch: str) -> None:
        async for _peer, _payload in host.inbound(ch):
            now = time.monotonic()
            if counts[ch] == 0:
                first[ch] = now
            counts[ch] += 1
            last[ch] = now

    async with open_p2p(make_config(doc)) as host, trio.open_nursery() as nursery:
        host.set_request_handler(handler)
        nursery.start_soon(count, host, CONSENSUS)
        nursery.start_soon(count, host, TXS)
        print(json.dumps({"ready": True}), flush=True)
        await trio.sleep_forever()


# ---------------------------------------------------------------------- driver


async def stats_of(host: P2PHost, peer: bytes) -> dict[str, Any]:
    return json.loads(await host.request(peer, b"stats", 10))  # type: ignore[no-any-return]


async def one_way(
    host: P2PHost, peer: bytes, duration_s: float, size: int, max_write_bytes: int
) -> dict[str, float]:
    saved = host.config.max_write_bytes
    host.config.max_write_bytes = max_write_bytes
    try:
        return await _one_way(host, peer, duration_s, size)
    finally:
        host.config.max_write_bytes = saved


async def _one_way(host: P2PHost, peer: bytes, duration_s: float, size: int) -> dict[str, float]:
    await host.request(peer, b"reset", 10)
    before = await stats_of(host, peer)
    payload = os.urandom(size)
    sent = 0
    cpu0 = time.process_time()
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        # Keep the queue fed but bounded (consensus queues drop the oldest when full).
        while host.queued(peer, CONSENSUS) < 2048:
            host.send(peer, CONSENSUS, payload)
            sent += 1
        await trio.sleep(0.001)  # the queue holds ~100 ms of frames: no need to spin
    while host.queued(peer, CONSENSUS):
        await trio.sleep(0.001)
    cpu_sender = time.process_time() - cpu0
    with trio.fail_after(60):
        while True:
            after = await stats_of(host, peer)
            if after["counts"][CONSENSUS] >= sent:
                break
            await trio.sleep(0.05)
    n = after["counts"][CONSENSUS]
    span = after["last"][CONSENSUS] - after["first"][CONSENSUS]
    return {
        "frames": n,
        "frames_per_s": round(n / span) if span > 0 else 0.0,
        "sender_cpu_us_per_frame": round(cpu_sender / sent * 1e6, 1),
        "receiver_cpu_us_per_frame": round((after["cpu_s"] - before["cpu_s"]) / n * 1e6, 1),
    }


async def round_trips(host: P2PHost, peer: bytes, duration_s: float) -> dict[str, float]:
    payload = os.urandom(100)
    lat: list[float] = []
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        t = time.perf_counter()
        await host.request(peer, payload, 5)
        lat.append(time.perf_counter() - t)
    lat.sort()
    done = 0
    end = time.monotonic() + duration_s / 2

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < end:
            await host.request(peer, payload, 5)
            done += 1

    t0 = time.monotonic()
    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(worker)
    return {
        "sequential_per_s": round(len(lat) / sum(lat)),
        "latency_ms_p50": round(statistics.median(lat) * 1e3, 3),
        "latency_ms_p99": round(lat[int(len(lat) * 0.99)] * 1e3, 3),
        "concurrent8_per_s": round(done / (time.monotonic() - t0)),
    }


async def tx_batches(host: P2PHost, peers: list[bytes], duration_s: float) -> dict[str, Any]:
    for p in peers:
        await host.request(p, b"reset", 10)
    batch = os.urandom(64 * KiB)
    sent = 0
    cpu0 = time.process_time()
    end = time.monotonic() + duration_s
    while time.monotonic() < end:
        if max(host.queued(p, TXS) for p in peers) < 32:
            host.broadcast(TXS, batch)
            sent += 1
        else:
            await trio.sleep(0.001)
    cpu_sender = time.process_time() - cpu0
    with trio.fail_after(60):
        while True:
            stats = [await stats_of(host, p) for p in peers]
            if all(s["counts"][TXS] >= sent for s in stats):
                break
            await trio.sleep(0.05)
    rates = [s["counts"][TXS] / (s["last"][TXS] - s["first"][TXS]) for s in stats]
    return {
        "batches_sent": sent,
        "per_peer_batches_per_s": [round(r) for r in rates],
        "total_mb_per_s": round(sum(rates) * 64 * KiB / 1e6, 1),
        "sender_cpu_ms_per_batch_3_peers": round(cpu_sender / sent * 1e3, 3),
    }


async def driver(doc: dict[str, Any], duration_s: float) -> None:
    peers = [bytes.fromhex(k) for k in doc["peers"]]
    async with open_p2p(make_config(doc)) as host:
        with trio.fail_after(30):
            while host.connected_peers() != set(peers):
                await trio.sleep(0.05)
        await trio.sleep(0.5)  # let every outbound stream open
        out: dict[str, Any] = {}
        out["consensus_1k_coalesced"] = await one_way(host, peers[0], duration_s, KiB, 1 << 20)
        out["consensus_1k_one_per_write"] = await one_way(host, peers[0], duration_s / 2, KiB, 1)
        out["request_response"] = await round_trips(host, peers[0], duration_s)
        out["txs_64k_to_3"] = await tx_batches(host, peers, duration_s)
        out["driver_writes_consensus"] = host.stats["writes.consensus"]
        out["driver_frames_out_consensus"] = host.stats["frames_out.consensus"]
        print(json.dumps(out), flush=True)


# ---------------------------------------------------------------------- coordinator


def coordinate(duration_s: float) -> dict[str, Any]:
    seeds = [hashlib.sha256(b"bench p2p %d" % i).digest() for i in range(4)]
    from ledger.crypto import KeyPair

    keys = [KeyPair.from_seed(s).public_key.hex() for s in seeds]
    ports = [free_port() for _ in seeds]
    addr = [f"127.0.0.1:{p}" for p in ports]
    docs = [
        {
            "seed": seeds[i].hex(),
            "port": ports[i],
            "allow": keys,
            "peers": ({keys[j]: addr[j] for j in (1, 2, 3)} if i == 0 else {keys[0]: addr[0]}),
        }
        for i in range(4)
    ]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in (1, 2, 3):
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--role", "receiver", "--doc", json.dumps(docs[i])],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
            )
        for p in procs:
            assert p.stdout is not None
            assert b"ready" in p.stdout.readline()
        drv = subprocess.run(
            [
                sys.executable,
                __file__,
                "--role",
                "driver",
                "--doc",
                json.dumps(docs[0]),
                "--duration-s",
                str(duration_s),
            ],
            capture_output=True,
            timeout=duration_s * 10 + 120,
            check=True,
        )
        result: dict[str, Any] = json.loads(drv.stdout.decode().strip().splitlines()[-1])
    finally:
        for p in procs:
            p.kill()
            p.wait(timeout=10)
            if p.stdout is not None:
                p.stdout.close()
    result["duration_s"] = duration_s
    result["cpus"] = os.cpu_count()
    result["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=10.0, help="length of each phase")
    ap.add_argument("--role", choices=["receiver", "driver"], help=argparse.SUPPRESS)
    ap.add_argument("--doc", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "receiver":
        trio.run(receiver, json.loads(args.doc))
        return
    if args.role == "driver":
        trio.run(driver, json.loads(args.doc), args.duration_s)
        return
    result = coordinate(args.duration_s)
    c, u = result["consensus_1k_coalesced"], result["consensus_1k_one_per_write"]
    r, t = result["request_response"], result["txs_64k_to_3"]
    print(
        f"consensus 1 KiB coalesced : {c['frames_per_s']:>8} frames/s, "
        f"CPU {c['sender_cpu_us_per_frame']} us/frame sender, "
        f"{c['receiver_cpu_us_per_frame']} us/frame receiver"
    )
    print(
        f"consensus 1 KiB 1/write   : {u['frames_per_s']:>8} frames/s, "
        f"CPU {u['sender_cpu_us_per_frame']} us/frame sender, "
        f"{u['receiver_cpu_us_per_frame']} us/frame receiver"
    )
    print(
        f"request/response          : {r['sequential_per_s']:>8} round trips/s sequential "
        f"(p50 {r['latency_ms_p50']} ms, p99 {r['latency_ms_p99']} ms), "
        f"{r['concurrent8_per_s']}/s with 8 in flight"
    )
    print(
        f"txs 64 KiB to 3 peers     : {t['per_peer_batches_per_s']} batches/s per peer, "
        f"{t['total_mb_per_s']} MB/s total"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
