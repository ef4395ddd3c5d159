#!/usr/bin/env python
"""In-process PBFT throughput: committed heights/s and messages/s, consensus cost only.

    python scripts/bench_consensus.py [--heights 1500] [--window 4]

n replicas run in one process with a zero-latency FIFO "network", the fast fake
signature scheme (node/sim/pbft/crypto.py) and the in-memory App, so the numbers measure
the state machine (message handling, quorum tallying, certificates, checkpoints,
signing record), not Ed25519, disks or sockets. The block builder answers every
``RequestProposal`` at once, with empty blocks or blocks of 1,000 transaction ids.
Timers never fire (no faults). Ends with one JSON line:

    heights_per_s_n4, heights_per_s_n7, messages_per_s_n4, messages_per_s_n7,
    heights_per_s_n4_1000tx, heights_per_s_n7_1000tx
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import sys
import time
from collections import deque

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from consensus.api import (  # noqa: E402
    Applied,
    Broadcast,
    CommitBlock,
    Config,
    Event,
    MessageReceived,
    ProposalReady,
    RequestProposal,
    Send,
    Start,
)
from consensus.replica import Replica  # noqa: E402
from node.sim.pbft.app import GENESIS_ID, MemApp, make_payload  # noqa: E402
from node.sim.pbft.crypto import FakeCrypto, make_keys  # noqa: E402


def run(n: int, txs_per_block: int, heights: int, window: int) -> dict[str, float]:
    keys = make_keys(n)
    index = {k: i for i, k in enumerate(keys)}
    config = Config("bench-chain", GENESIS_ID, window=window, checkpoint_interval=16)
    apps = [MemApp(keys, range(n), change_delay=1_000_000) for _ in range(n)]
    replicas = [Replica(config, apps[i], FakeCrypto(keys[i])) for i in range(n)]
    rng = random.Random(n * 1000 + txs_per_block)
    queue: deque[tuple[int, Event]] = deque()
    messages = 0
    nonce = 0

    def execute(i: int, actions: list) -> None:  # type: ignore[type-arg]
        nonlocal messages, nonce
        for a in actions:
            kind = type(a)
            if kind is Broadcast:
                event = MessageReceived(a.message)
                for j in range(n):
                    if j != i:
                        queue.append((j, event))
                        messages += 1
            elif kind is Send:
                queue.append((index[a.to], MessageReceived(a.message)))
                messages += 1
            elif kind is RequestProposal:
                nonce += 1
                blob = rng.randbytes(32 * txs_per_block)
                txs = [blob[k : k + 32] for k in range(0, len(blob), 32)]
                payload = make_payload(a.height, a.parent_block_id, i, nonce, txs)
                queue.append((i, ProposalReady(a.height, a.view, payload)))
            elif kind is CommitBlock:
                queue.append((i, Applied(a.height, apps[i].apply(a.payload))))
            # Persist, PersistBlock, timers: durable storage and clocks are not measured.

    started = time.perf_counter()
    for i in range(n):
        execute(i, replicas[i].step(Start()))
    while min(r.committed for r in replicas) < heights:
        if not queue:
            raise RuntimeError("the benchmark cluster stalled (no messages in flight)")
        i, event = queue.popleft()
        execute(i, replicas[i].step(event))
    elapsed = time.perf_counter() - started
    return {
        "heights_per_s": heights / elapsed,
        "messages_per_s": messages / elapsed,
        "seconds": elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heights", type=int, default=1500)
    parser.add_argument("--window", type=int, default=4)
    args = parser.parse_args(argv)
    out: dict[str, float] = {}
    for n in (4, 7):
        for txs in (0, 1000):
            heights = args.heights if txs == 0 else max(100, args.heights // 3)
            r = run(n, txs, heights, args.window)
            print(
                f"n={n} txs/block={txs:5d}: {r['heights_per_s']:9.1f} heights/s "
                f"{r['messages_per_s']:10.0f} messages/s ({heights} heights in "
                f"{r['seconds']:.2f}s)"
            )
            suffix = f"n{n}" + ("_1000tx" if txs else "")
            out[f"heights_per_s_{suffix}"] = round(r["heights_per_s"], 1)
            if not txs:
                out[f"messages_per_s_n{n}"] = round(r["messages_per_s"], 1)
    keys = [
        "heights_per_s_n4",
        "heights_per_s_n7",
        "messages_per_s_n4",
        "messages_per_s_n7",
        "heights_per_s_n4_1000tx",
        "heights_per_s_n7_1000tx",
    ]
    print(json.dumps({k: out[k] for k in keys}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
