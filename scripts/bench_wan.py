#!/usr/bin/env python3
"""Throughput and commit latency of a 4-validator devnet at real distances, beside the
same devnet on loopback, measured in one sitting.

Runs ``scripts/bench_node.py``'s load (its ``--worker``: pre-signed ATTEST batches to all
validators round-robin at ``--rate`` tx/s, a watcher timestamping each commit) twice on
fresh devnets of 4 validators and one observer: first with no added delay ("lan"), then
with every p2p link behind a delaying relay placed by ``--delays`` ("wan"; default
``hk-sz``: hkbank and cnix in Hong Kong, szcredit and webank in Shenzhen, 5-20 ms one way
between the cities and ~1 ms within one, the observer 150 ms one way from everyone; see
scripts/harness/delay.py for the relay and its limits: data is delayed per direction, the
TCP handshake and bandwidth are not). Reports committed tx/s and submit-to-commit latency
p50/p99 of both, how far behind the observer sees each block (first seen by polling
``status`` every 50 ms on the observer and on a validator), the relays' bytes and the
CPU of this process (which runs the relays and little else), and the raw ed25519 verify
rate before and after (a rate that moved by 5 % or more means other work shared the
machine). Ends with one JSON line: lan_tx_per_s, lan_commit_ms_p50, lan_commit_ms_p99,
wan_tx_per_s, wan_commit_ms_p50, wan_commit_ms_p99, wan_observer_lag_ms_p50,
wan_observer_lag_ms_p99, lan_observer_lag_ms_p99, offered_tx_per_s, relay_mb,
relay_cpu_s, ed25519_verify_per_s, ed25519_verify_per_s_after, and the topology.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cli import devnet  # noqa: E402
from cli.devnet_files import NodeEntry, create_devnet  # noqa: E402
from scripts.bench_node import ed25519_verify_rate, host_check, worker_argv  # noqa: E402
from scripts.harness.delay import TOPOLOGIES, Relays, Topology, route  # noqa: E402

PARAMS: dict[str, Any] = {  # bench_node.py's chain parameters
    "max_block_txs": 2000,
    "heartbeat_ms": 1000,
    "pipeline_window": 4,
    "view_timeout_ms": 4000,
    "tx_ttl_heights": 1000,
}


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


class BlockSightings:
    """When each height was first seen on a validator and on the observer (``status``
    polled every 50 ms): how far behind the observer follows, in time."""

    def __init__(self, validator: NodeEntry, observer: NodeEntry) -> None:
        self.nodes = {"validator": validator, "observer": observer}
        self.seen: dict[str, dict[int, float]] = {"validator": {}, "observer": {}}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BlockSightings:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        top = {k: -1 for k in self.nodes}
        while not self._stop.wait(0.05):
            for k, e in self.nodes.items():
                st = devnet.node_status(e, timeout_s=1.0)
                if st is None:
                    continue
                now = time.monotonic()
                for h in range(top[k] + 1, int(st["height"]) + 1):
                    # Heights skipped between polls are dated to this poll: a lag
                    # measured from them is at most one poll (50 ms) too long.
                    self.seen[k].setdefault(h, now)
                top[k] = max(top[k], int(st["height"]))

    def lags_ms(self, skip_first: int) -> list[float]:
        v, o = self.seen["validator"], self.seen["observer"]
        return [(o[h] - v[h]) * 1000 for h in v if h in o and h > skip_first]


def run_once(args: argparse.Namespace, topology: Topology | None) -> dict[str, Any]:
    """One devnet (with relays if ``topology``) under the load; its figures."""
    label = "wan" if topology else "lan"
    tmp = tempfile.TemporaryDirectory(prefix=f"bench_wan_{label}_")
    root = Path(tmp.name) / "net"
    relays: Relays | None = None
    try:
        entries = create_devnet(root, nodes=4, observers=1, params=PARAMS)
        if topology is not None:
            relays = Relays(args.seed)
            route(entries, topology, relays)
            relays.start()
        devnet.up(root, wait_s=120)
        validator = next(e for e in entries if e.role == "validator")
        observer = next(e for e in entries if e.role == "observer")
        start_height = int((devnet.node_status(validator) or {"height": 0})["height"])
        cpu0 = sum(os.times()[:2])
        with BlockSightings(validator, observer) as sightings:
            out = subprocess.run(
                worker_argv(root, args),
                capture_output=True,
                text=True,
                check=True,
            )
            # Let the observer catch up with the last block before stopping the watch.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and max(sightings.seen["validator"], default=0) > max(
                sightings.seen["observer"], default=0
            ):
                time.sleep(0.1)
        cpu = sum(os.times()[:2]) - cpu0
        sys.stderr.write(out.stderr)
        res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        res["observer_lag_ms"] = sightings.lags_ms(start_height + 2)
        res["driver_cpu_s"] = cpu
        res["relay_bytes"] = relays.bytes_forwarded if relays else 0
        heights = [
            (devnet.node_status(e) or {}).get("height") for e in entries if e.role == "validator"
        ]
        res["heights"] = heights
        return res
    finally:
        if (root / "devnet.json").exists():
            devnet.down(root)
        if relays is not None:
            relays.stop()
        tmp.cleanup()


def report(label: str, res: dict[str, Any]) -> None:
    lag = res["observer_lag_ms"]
    print(
        f"{label}: {res['committed_tx_per_s']:,.0f} committed tx/s over {res['window_s']:.0f} s "
        f"({res['submitted']:,} submitted, {res['committed']:,} committed, "
        f"{res['refused']:,} refused, backlog at end {res['backlog_at_end']:,}); "
        f"commit latency p50 {res['latency_ms_p50']:.0f} ms, p95 {res['latency_ms_p95']:.0f} "
        f"ms, p99 {res['latency_ms_p99']:.0f} ms; observer behind a validator by p50 "
        f"{pct(lag, 50):.0f} ms, p99 {pct(lag, 99):.0f} ms ({len(lag)} blocks); "
        f"final heights {res['heights']}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--delays", default="hk-sz", choices=sorted(TOPOLOGIES))
    ap.add_argument("--seconds", type=float, default=40.0, help="submission time per run")
    ap.add_argument("--rate", type=float, default=500.0, help="offered load, tx/s")
    ap.add_argument("--batch", type=int, default=100, help="transactions per RPC request")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--drain", type=float, default=15.0)
    ap.add_argument("--seed", type=int, default=1, help="seed of the relays' jitter")
    args = ap.parse_args()
    if args.seconds < args.warmup + 5:
        ap.error("--seconds must exceed --warmup by 5 s or more: figures come after the warm-up")
    topology = TOPOLOGIES[args.delays]

    verify = ed25519_verify_rate()
    print(f"ed25519 verify (raw libsodium): {verify:,.0f}/s")
    print(f"topology {topology.name}: {topology.describe()}")
    print(f"offered {args.rate:,.0f} tx/s for {args.seconds:.0f} s, batches of {args.batch}")
    lan = run_once(args, None)
    report("lan (loopback, no added delay)", lan)
    wan = run_once(args, topology)
    report(f"wan ({topology.name} relays)", wan)
    for name, res in (("lan", lan), ("wan", wan)):
        if res["latency_ms_p50"] != res["latency_ms_p50"]:  # NaN: no commit measured
            print(f"bench_wan: the {name} run measured no commits; run longer", file=sys.stderr)
            return 1
    verify_after = ed25519_verify_rate()
    print(
        f"relays forwarded {wan['relay_bytes'] / 1e6:.1f} MB; this process (the relays) used "
        f"{wan['driver_cpu_s']:.1f} s of CPU during the wan run (lan: "
        f"{lan['driver_cpu_s']:.1f} s, the status polls alone)"
    )
    print(host_check(verify, verify_after))
    print(
        json.dumps(
            {
                "topology": topology.name,
                "offered_tx_per_s": round(args.rate),
                "lan_tx_per_s": round(lan["committed_tx_per_s"]),
                "lan_commit_ms_p50": round(lan["latency_ms_p50"]),
                "lan_commit_ms_p99": round(lan["latency_ms_p99"]),
                "wan_tx_per_s": round(wan["committed_tx_per_s"]),
                "wan_commit_ms_p50": round(wan["latency_ms_p50"]),
                "wan_commit_ms_p99": round(wan["latency_ms_p99"]),
                "lan_observer_lag_ms_p99": round(pct(lan["observer_lag_ms"], 99)),
                "wan_observer_lag_ms_p50": round(pct(wan["observer_lag_ms"], 50)),
                "wan_observer_lag_ms_p99": round(pct(wan["observer_lag_ms"], 99)),
                "relay_mb": round(wan["relay_bytes"] / 1e6, 1),
                "relay_cpu_s": round(wan["driver_cpu_s"], 1),
                "ed25519_verify_per_s": round(verify),
                "ed25519_verify_per_s_after": round(verify_after),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
