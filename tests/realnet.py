"""Helpers for tests against real node processes on 127.0.0.1: status and metrics over
HTTP, chain comparison, an adversary process, process memory, bounded waits.

Used by tests/test_byzantine_peer.py, tests/test_fuzz_*.py and tests/test_disk_*.py.
Every wait here is bounded and raises ``AssertionError`` naming what did not happen.
"""

from __future__ import annotations

import contextlib
import json
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cli import devnet
from cli.devnet_files import NodeEntry, create_devnet, load_devnet
from cli.rpc_client import RpcClient

REPO = Path(__file__).resolve().parent.parent


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
    raise AssertionError(f"{[e.name for e in es]} did not all reach height {height} within "
                         f"{timeout_s} s: heights {hs}")


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
    key = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
                  if labels else "")
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


class Adversary:
    """``tests.adversary_proc`` running as one devnet validator (see its docstring)."""

    def __init__(self, root: Path, e: NodeEntry, plan: dict[str, Any]) -> None:
        self.entry = e
        self.log = root / "data" / e.name / "adversary.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._err = open(self.log, "ab")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.adversary_proc", str(e.config), json.dumps(plan)],
            stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL, cwd=REPO,
            start_new_session=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                pass

    def wait_phase(self, phase: str, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                doc = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(doc)
            if doc.get("phase") == phase:
                return doc
        raise AssertionError(f"the adversary did not finish phase {phase!r} within "
                             f"{timeout_s} s (exit code {self.proc.poll()}); it said "
                             f"{self.seen[-5:]}; log {self.log}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._reader.join(timeout=5)
        self._err.close()


@contextlib.contextmanager
def devnet_with_adversary(root: Path, adversary: str, plan: dict[str, Any],
                          p2p_settings: dict[str, str] | None = None,
                          ) -> Iterator[Adversary]:
    """A 4-validator devnet (300 ms heartbeats, 1 s view timeout) where validator
    ``adversary`` is ``tests.adversary_proc`` with ``plan``; the honest nodes get
    ``p2p_settings`` in their ``[p2p]`` section. Everything is stopped on exit."""
    create_devnet(root, nodes=4, params={"heartbeat_ms": 300, "view_timeout_ms": 1000})
    es = entries(root)
    honest = [name for name in es if name != adversary]
    for name in honest:
        for key, value in (p2p_settings or {}).items():
            set_config(es[name].config, "p2p", key, value)
    adv: Adversary | None = None
    try:
        adv = Adversary(root, es[adversary], plan)
        devnet.up(root, only=honest, wait_s=60)
        yield adv
    finally:
        if adv is not None:
            adv.stop()
        devnet.down(root, grace_s=5)
