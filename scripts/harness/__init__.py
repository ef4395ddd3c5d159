"""Fault-injection harness for real node processes (tests/test_chaos_*.py, scripts/chaos.py).

- ``cluster.Cluster``: n validator processes from a devnet folder, on 127.0.0.1 or each in
  its own network namespace; kill -9 / SIGTERM / restart; isolate, split, heal, flap, shape.
- ``delay``: delaying TCP relays on loopback (distance without netem) and topologies.
- ``netns``: the namespaces, veths and bridges (and the probe that says whether the
  kernel allows them).
- ``load.Load``: signed ATTEST load that records what each node acknowledged as committed.
- ``verdict.ChainChecker``: nothing lost, never twice, no fork, certificates verify.
- ``staleness.stale_read``: a node cut off must never answer VALID for a document
  revoked since, and must fail ``/readyz`` until it has rejoined.
- ``drills.Drills``: governance changes under load (issuer key rotation, a validator
  added and one removed, a consensus key replaced), measured like a fault.

``Env`` bundles one cluster with its load and checker; ``open_env`` starts and always
tears it down; ``poll_until`` waits for a condition with a deadline; ``recover``
measures how long commits take to resume after a heal; ``signs_again`` says whether a
(restarted) validator's node key signs commit certificates again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.rpc_client import RpcCallError, RpcClient
from ledger.consortium import ValidatorSet
from ledger.types import CommitCertificate
from scripts.harness.cluster import Cluster
from scripts.harness.delay import Topology
from scripts.harness.load import Load
from scripts.harness.verdict import ChainChecker, Verdict

# Short consensus timers so that view changes and checkpoints happen within seconds
# (the chain parameters of the genesis; see ledger.types.ChainParams).
FAST_PARAMS: dict[str, Any] = {
    "heartbeat_ms": 500,
    "view_timeout_ms": 1000,
    "checkpoint_interval": 8,
    "pipeline_window": 4,
}


@dataclass
class Env:
    cluster: Cluster
    load: Load
    checker: ChainChecker

    def verdict(self, honest: list[str] | None = None, wait_s: float = 90.0) -> Verdict:
        v = self.checker.check(self.load.snapshot(), honest, wait_s=wait_s)
        print(v.summary())
        return v


@contextmanager
def open_env(
    root: Path,
    *,
    netns: bool,
    params: dict[str, Any] | None = None,
    n: int = 4,
    load_threads: int | None = None,
    delays: Topology | None = None,
) -> Iterator[Env]:
    """A started cluster under load; everything is stopped and removed on exit. With
    ``delays``, p2p links are slowed by relays and one observer follows (not loaded)."""
    cluster = Cluster(root, n=n, netns=netns, params=params or FAST_PARAMS, delays=delays)
    load: Load | None = None
    try:
        cluster.create()
        cluster.start()
        cluster.wait_height(1, timeout_s=90)
        urls = cluster.validator_urls
        load = Load(root, urls, cluster.chain_id, threads=load_threads).start()
        yield Env(cluster, load, ChainChecker(urls, root / "genesis.json"))
    finally:
        if load is not None:
            load.stop()
        cluster.close()


def poll_until(pred: Callable[[], bool], timeout_s: float, what: str | Callable[[], str]) -> None:
    """Poll ``pred`` until true; after ``timeout_s`` fail naming what did not happen."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s:.0f} s waiting for "
                f"{what() if callable(what) else what}"
            )
        time.sleep(0.2)


def recover(env: Env, since: float, via: str, honest: list[str], timeout_s: float = 90.0) -> float:
    """Seconds from ``since`` until a fresh transaction sent to ``via`` is acknowledged as
    committed and every honest node holds its block (commits resumed everywhere)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ids = env.load.submit(via, env.load.sign(1), wait_s=5)
        except (RpcCallError, OSError, ValueError):
            time.sleep(0.2)
            continue
        if ids:
            height = env.load.snapshot()[ids[0]].height
            env.cluster.wait_height(height, honest, timeout_s=max(1.0, deadline - time.monotonic()))
            return time.monotonic() - since
    raise AssertionError(
        f"no commit through {via} within {timeout_s:.0f} s after the heal; "
        f"heights {env.cluster.heights()}"
    )


def signs_again(env: Env, member: str, node_key: bytes, timeout_s: float = 60.0) -> bool:
    """Whether, within ``timeout_s``, a block committed after the call has a certificate
    holding ``node_key``'s signature while ``member``'s node runs: the validator votes.

    A certificate holds a quorum of the signatures, so the slowest node's is often not
    among them: every block since the call counts, not just the newest. Following the
    chain is not enough: a replica that moved to another view alone follows by block
    sync without ever voting (docs/RELIABILITY.md, drills)."""
    url = env.cluster.urls[next(n for n in env.cluster.names if n != member)]
    c = RpcClient(url, timeout_s=30)
    sets: dict[int, ValidatorSet] = {}

    def index_at(height: int) -> int | None:
        if height not in sets:
            doc = c.call("getValidators", height=height)
            sets[height] = ValidatorSet.decode(bytes.fromhex(doc["encoded"]))
        return sets[height].index_of(node_key)

    seen = [int(c.call("status")["height"])]

    def signed() -> bool:
        top = int(c.call("status")["height"])
        lo, seen[0] = seen[0], top + 1
        for start in range(lo, top + 1, 25):
            heights = range(start, min(start + 25, top + 1))
            docs = c.batch([("getBlock", {"height": h}) for h in heights])
            for h, doc in zip(heights, docs, strict=True):
                if isinstance(doc, Exception) or not doc.get("certificate"):
                    continue
                idx = index_at(h)
                cert = CommitCertificate.decode(bytes.fromhex(doc["certificate"]))
                if idx is not None and any(i == idx for i, _ in cert.signatures):
                    return (env.cluster.status(member) or {}).get("view") is not None
        return False

    try:
        poll_until(signed, timeout_s, f"a certificate signed by {member}'s node key")
    except AssertionError:
        return False
    finally:
        c.close()
    return True
