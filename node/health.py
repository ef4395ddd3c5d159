"""Whether a node can serve correct answers: ``/readyz``, ``/health``, the status RPC's
``ready``, the ``dvp_ready`` and ``dvp_head_age_seconds`` gauges, and the health log.

``readiness(node, now_ms)`` runs five checks and says which fail:

- ``started``: the node's tasks (transport, RPC, the drive loop) are running;
- ``synced``: a validator has caught up with its peers after a start and votes (the
  core starts its replica then: node/core_catchup.py); an observer always follows;
- ``peers``: a validator is connected to enough validators of the current set that,
  with its own vote, they make a quorum (2f of 3f+1); an observer to at least one;
- ``head_age``: the newest committed block is at most ``node.max_head_age_ms`` old by
  this node's clock (the verifiers' default limit, ``ledger.verify.DEFAULT_MAX_AGE_MS``:
  an idle chain commits a heartbeat block every ``heartbeat_ms``, 5 s by default);
- ``store``: no disk write is failing (``status.store_error``) and nothing has found the
  store damaged (``node.store_problem``: the hook a store-integrity check sets to a
  one-line reason, or back to None once repaired).

A node cut off from its peers fails ``peers`` at once and ``head_age`` once its head
ages past the limit; it keeps answering RPC (``/livez`` stays 200), but a load balancer
or Kubernetes stops sending it clients. ``watch_health`` logs each change of readiness
as it happens and a summary line (height, head age, peers) every ``HEALTH_LOG_S``.
"""

from __future__ import annotations

import time
from typing import Any, Final

import trio
from prometheus_client import Gauge

from node.logs import get_logger
from node.view import NodeView

__all__ = ["HEALTH_LOG_S", "readiness", "register_gauges", "watch_health"]

log = get_logger("node.health")

#: Seconds between the periodic "node health" log lines (changes are logged at once).
HEALTH_LOG_S: Final = 60.0
#: How often ``watch_health`` looks (and updates the peer gauge).
WATCH_S: Final = 1.0


def _now_ms() -> int:
    return int(time.time() * 1000)


def readiness(node: NodeView, now_ms: int) -> dict[str, Any]:
    """The readiness report: ``status`` "ok" or "unready", the names of the ``failing``
    checks, and each check's figures (the JSON body of /readyz and /health)."""
    head = node.ledger.head
    vset = head.validators_at(head.height + 1)
    keys = {v.node_key for v in vset.validators}
    me = node.crypto.public_key
    needed = vset.quorum - 1 if me in keys else 1
    connected = len(node.transport.connected_peers() & keys)
    age_ms = now_ms - head.time_ms
    store_error = node.status.store_error or node.store_problem
    checks: dict[str, dict[str, Any]] = {
        "started": {"ok": node.ready},
        "synced": {"ok": node.replica is not None or not node.config.is_validator},
        "peers": {"ok": connected >= needed, "connected": connected, "needed": needed},
        "head_age": {
            "ok": age_ms <= node.max_head_age_ms,
            "height": head.height,
            "block_time_ms": head.time_ms,
            "age_ms": age_ms,
            "max_ms": node.max_head_age_ms,
        },
        "store": {"ok": store_error is None, "error": store_error},
    }
    failing = [name for name, c in checks.items() if not c["ok"]]
    return {"status": "unready" if failing else "ok", "failing": failing, "checks": checks}


def status_fields(node: NodeView) -> dict[str, Any]:
    """What the ``status`` RPC adds: the head's age by this node's clock, and readiness."""
    report = readiness(node, _now_ms())
    return {
        "head_age_ms": report["checks"]["head_age"]["age_ms"],
        "ready": report["status"] == "ok",
        "failing": report["failing"],
    }


def register_gauges(node: NodeView) -> None:
    """``dvp_head_age_seconds`` and ``dvp_ready``, computed when scraped."""
    registry = node.metrics.registry
    Gauge(
        "dvp_head_age_seconds",
        "Age of the newest committed block by this node's clock",
        registry=registry,
    ).set_function(lambda: (_now_ms() - node.ledger.head.time_ms) / 1000)
    Gauge(
        "dvp_ready", "1 if /readyz answers 200 (every readiness check passes)", registry=registry
    ).set_function(lambda: 1.0 if readiness(node, _now_ms())["status"] == "ok" else 0.0)


async def watch_health(node: NodeView) -> None:
    """Forever: the peer gauge every second, a log line on each change of readiness,
    and the periodic summary (height, head age, peers) every ``HEALTH_LOG_S``."""
    failing: list[str] | None = None
    last_summary = trio.current_time()
    while True:
        node.metrics.peers.set(len(node.transport.connected_peers()))
        report = readiness(node, _now_ms())
        checks = report["checks"]
        fields = {
            "height": checks["head_age"]["height"],
            "head_age_ms": checks["head_age"]["age_ms"],
            "peers": checks["peers"]["connected"],
            "peers_needed": checks["peers"]["needed"],
        }
        if report["failing"] != failing:
            if not report["failing"]:
                log.info("node ready", **fields)
            elif failing is None:  # starting: peers connect and catch-up follow
                log.info("node not ready yet", failing=report["failing"], **fields)
            else:
                log.warning("node not ready", failing=report["failing"], **fields)
            failing = report["failing"]
        if trio.current_time() - last_summary >= HEALTH_LOG_S:
            last_summary = trio.current_time()
            log.info("node health", ready=not report["failing"], **fields)
        await trio.sleep(WATCH_S)
