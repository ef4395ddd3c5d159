"""Probes of real node processes on 127.0.0.1: status and metrics over HTTP, chain
comparison, process memory, bounded waits, config edits.

Used by the multi-process tests (tests/system/) and the harness (``cluster``).
Every wait here is bounded and raises ``AssertionError`` naming what did not happen.
"""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path
from typing import Any

from cli import devnet
from cli.devnet_files import NodeEntry, load_devnet
from cli.rpc_client import RpcClient

REPO = Path(__file__).resolve().parents[2]


def entries(root: Path) -> dict[str, NodeEntry]:
    return {e.name: e for e in load_devnet(root)}


def status(e: NodeEntry) -> dict[str, Any] | None:
    return devnet.node_status(e, timeout_s=2)


def heights(es: list[NodeEntry]) -> list[int | None]:
    return [(s or {}).get("height") for s in (status(e) for e in es)]


def wait_height(es: list[NodeEntry], height: int, timeout_s: float) -> float:
    """Seconds until every node in ``es`` is at ``height`` or above."""
    t0 = time.monotonic()
    hs: list[int | None] = []
    while time.monotonic() - t0 < timeout_s:
        hs = heights(es)
        if all(h is not None and h >= height for h in hs):
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(
        f"{[e.name for e in es]} did not all reach height {height} within "
        f"{timeout_s} s: heights {hs}"
    )


def block_ids(e: NodeEntry, top: int, bottom: int = 0) -> list[str]:
    c = RpcClient(e.rpc_url, timeout_s=10)
    try:
        return [c.call("getHeader", height=h)["block_id"] for h in range(bottom, top + 1)]
    finally:
        c.close()


def assert_same_chain(es: list[NodeEntry]) -> int:
    """Every node in ``es`` holds the same block ids at every shared height; returns
    the highest shared height."""
    top = min(h for h in heights(es) if h is not None)
    chains = {e.name: block_ids(e, top) for e in es}
    first_name, first = next(iter(chains.items()))
    for name, ids in chains.items():
        diverged = [h for h, (a, b) in enumerate(zip(ids, first, strict=True)) if a != b]
        assert not diverged, f"{name} and {first_name} differ from height {diverged[0]}"
    return top


def metrics(e: NodeEntry) -> dict[str, float]:
    """The node's Prometheus metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{e.rpc_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def metric(e: NodeEntry, name: str, **labels: str) -> float:
    key = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    return metrics(e).get(key, 0.0)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def set_config(config: Path, section: str, key: str, value: str) -> None:
    """Set ``key = value`` (TOML literal) in ``[section]`` of a devnet node config."""
    lines = config.read_text().splitlines()
    at = lines.index(f"[{section}]")
    lines.insert(at + 1, f"{key} = {value}")
    config.write_text("\n".join(lines) + "\n")
