"""A Byzantine validator process among honest devnet nodes: ``Adversary`` runs
``tests.system.adversary_proc`` under one member's keys (see its docstring) and
``devnet_with_adversary`` starts the honest rest around it. Used by
tests/system/test_byzantine_peer.py and tests/system/test_fuzz_p2p.py.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cli import devnet
from cli.devnet_files import NodeEntry, create_devnet
from scripts.harness.realnet import REPO, entries, set_config


class Adversary:
    """``tests.system.adversary_proc`` running as one devnet validator (see its docstring)."""

    def __init__(self, root: Path, e: NodeEntry, plan: dict[str, Any]) -> None:
        self.entry = e
        self.log = root / "data" / e.name / "adversary.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._err = open(self.log, "ab")  # noqa: SIM115 -- closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.system.adversary_proc", str(e.config), json.dumps(plan)],
            stdout=subprocess.PIPE,
            stderr=self._err,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            start_new_session=True,
        )
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
        raise AssertionError(
            f"the adversary did not finish phase {phase!r} within "
            f"{timeout_s} s (exit code {self.proc.poll()}); it said "
            f"{self.seen[-5:]}; log {self.log}"
        )

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
def devnet_with_adversary(
    root: Path,
    adversary: str,
    plan: dict[str, Any],
    p2p_settings: dict[str, str] | None = None,
) -> Iterator[Adversary]:
    """A 4-validator devnet (300 ms heartbeats, 1 s view timeout) where validator
    ``adversary`` is ``tests.system.adversary_proc`` with ``plan``; the honest nodes get
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
