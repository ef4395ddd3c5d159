"""A validator cut off from its peers never answers VALID for a document revoked after
the cut, and its /readyz says it is not ready until it has rejoined (issue 16).

Four validator processes on 127.0.0.1 (scripts/harness: one is cut off by restarting it
with no peers on a new p2p port, as a node restarted during a partition). The scenario
itself is ``scripts.harness.staleness.stale_read``, which scripts/chaos.py also runs as
its ``cut-off`` fault; here every observation is asserted one by one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from scripts.harness import FAST_PARAMS, poll_until
from scripts.harness.cluster import REPO, Cluster
from scripts.harness.staleness import stale_read

pytestmark = [pytest.mark.processes, pytest.mark.timeout(240)]

#: The short freshness limit the bank uses here, so the test need not wait the default
#: 30 s; FAST_PARAMS' 500 ms heartbeat keeps a connected node's head well within it.
MAX_AGE_S = 2.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cl = Cluster(tmp_path_factory.mktemp("stale") / "net", n=4, params=FAST_PARAMS)
    try:
        cl.create()
        cl.start()
        cl.wait_height(1, timeout_s=90)
        yield cl
    finally:
        cl.close()


def test_a_cut_off_validator_answers_unverifiable_never_valid(cluster: Cluster) -> None:
    victim, via = "hkbank", "szcredit"
    seen = stale_read(cluster, victim, via, max_age_s=MAX_AGE_S)
    print(seen.summary())
    assert seen.before["status"] == "VALID", "it held the attestation before the cut"

    # cut off, after the limit: dvp verify says UNVERIFIABLE (exit 8), never VALID
    assert seen.cut_off_exit == 8, seen.cut_off
    assert seen.cut_off["status"] == "UNVERIFIABLE"
    assert seen.cut_off["reason"] == "state_too_old"
    assert seen.cut_off["head_age_ms"] > MAX_AGE_S * 1000
    assert seen.cut_off["height"] < seen.via_answer["revoked_height"], "its head is older"
    # ... and so does the node's own verdict over RPC
    assert seen.cut_off_rpc["status"] == "UNVERIFIABLE"
    assert seen.cut_off_rpc["reason"] == "state_too_old"
    # a connected node, with the default limit, knows of the revocation
    assert seen.via_exit == 5 and seen.via_answer["status"] == "REVOKED"

    # the operator's view: alive, not ready, because of its peers
    assert seen.livez_cut_off == 200
    code, report = seen.readyz_cut_off
    assert code == 503 and "peers" in report["failing"]
    assert report["checks"]["peers"]["connected"] == 0

    # rejoined: ready again, and it says REVOKED too
    assert seen.readyz_rejoined == 200
    assert seen.after["status"] == "REVOKED"
    assert seen.problems() == []


def test_devnet_status_shows_head_age_peers_and_readiness(cluster: Cluster) -> None:
    def status() -> list[dict[str, Any]]:
        out = subprocess.run(
            [sys.executable, "-m", "cli.main", "devnet", "status", "--dir", str(cluster.root)]
            + ["--json"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert out.returncode == 0, out.stderr
        rows: list[dict[str, Any]] = json.loads(out.stdout)
        return rows

    poll_until(
        lambda: all(r["ready"] and r["peers"] == 3 for r in status()),
        60,
        lambda: f"every node ready with 3 peers: {status()}",
    )
    for r in status():
        assert 0 <= r["head_age_ms"] < 30_000 and r["failing"] == [], r
