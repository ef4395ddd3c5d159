"""/livez, /readyz and /health tell the truth (node/health.py), and verifyAttestation
never answers from a head older than asked (node/methods_verify.py).

Four devnet nodes in one trio run over the in-memory transport, real HTTP to one of
them; the hub cuts its links as a partition would. The multi-process version of the
story (a revocation the cut-off node cannot see) is tests/system/test_stale_reads.py.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from node.node import Node
from tests.support.rpc_node import call, run_nodes

pytestmark = pytest.mark.timeout(120)


def get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


def poll(what: str, fn: Any, timeout_s: float = 30.0) -> Any:
    """``fn()`` until it returns something true; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = fn()
        if out:
            return out
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s:g} s: {what}")


def test_readiness_fails_while_cut_off_and_says_why(tmp_path: Path) -> None:
    def client(nodes: list[Node]) -> None:
        node = nodes[0]
        port = node.rpc_ports["rpc"]
        hub = node.transport.hub  # type: ignore[attr-defined]

        def on_trio(fn: Any) -> Any:
            return trio.from_thread.run_sync(fn)

        status, report = poll("/readyz 200", lambda: (r := get(port, "/readyz"))[0] == 200 and r)
        assert report["failing"] == [] and report["checks"]["peers"] == {
            "ok": True,
            "connected": 3,
            "needed": 2,
        }
        st = call(port, "status")["result"]
        assert st["ready"] is True and st["failing"] == [] and st["peers"] == 3
        assert 0 <= st["head_age_ms"] <= 30_000

        on_trio(lambda: hub.isolate(node.key.public_key))
        status, report = get(port, "/readyz")
        assert status == 503 and report["status"] == "unready"
        assert report["failing"] == ["peers"]
        assert report["checks"]["peers"] == {"ok": False, "connected": 0, "needed": 2}
        status, health = get(port, "/health")  # the same report (the head a moment older)
        assert status == 503 and health["failing"] == ["peers"]
        assert get(port, "/livez") == (200, {"status": "ok"}), "the process is fine"

        # its head only ages now: the node's own verdict refuses to judge by it
        poll(
            "the cut-off node's head older than 300 ms",
            lambda: call(port, "status")["result"]["head_age_ms"] > 300,
        )
        doc = hashlib.sha256(b"asked of a cut-off node").hexdigest()
        answer = call(port, "verifyAttestation", {"commitment": doc, "max_age_ms": 300})["result"]
        assert answer["status"] == "UNVERIFIABLE" and answer["reason"] == "state_too_old"
        assert answer["head_age_ms"] > 300 and answer["max_age_ms"] == 300
        other = nodes[1].rpc_ports["rpc"]
        answer = call(other, "verifyAttestation", {"commitment": doc})["result"]
        assert answer["status"] == "NOT_FOUND" and answer["max_age_ms"] == 30_000
        assert answer["height"] >= 1 and answer["head_age_ms"] <= 30_000

        # a store-integrity check that finds damage makes it unready too
        on_trio(lambda: setattr(node, "store_problem", "header 7: hash chain broken"))
        status, report = get(port, "/readyz")
        assert status == 503 and report["failing"] == ["peers", "store"]
        assert report["checks"]["store"] == {"ok": False, "error": "header 7: hash chain broken"}

        on_trio(lambda: setattr(node, "store_problem", None))
        on_trio(hub.heal)
        poll("/readyz 200 after the heal", lambda: get(port, "/readyz")[0] == 200)
        text = http_text(port, "/metrics")
        assert "dvp_ready 1.0" in text and "dvp_head_age_seconds " in text

    run_nodes(tmp_path / "net", client, nodes=4)


def http_text(port: int, path: str) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read().decode()
    finally:
        conn.close()
