"""A damaged store on a real devnet: refused at start, rebuilt from peers over libp2p.

Four ``dvp node run`` processes on 127.0.0.1. One replica is stopped and a byte of its
ledger's log is flipped: ``dvp node run`` refuses it (exit 4, one line naming the
database and the fix); ``dvp store check`` reports it (exit 1); ``dvp store resync``
rebuilds it from the three running peers over the node's own libp2p block sync,
verifying every certificate; the check then passes, and the node restarts, catches up
and holds the same chain as the others.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import devnet
from scripts.harness.realnet import REPO, assert_same_chain, entries, status, wait_height

pytestmark = [pytest.mark.processes, pytest.mark.timeout(240)]

VICTIM = "webank"  # a replica (the primary of view 0 is cnix)


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "net"
    try:
        devnet.up(root, nodes=4, wait_s=60, min_height=3, params={"heartbeat_ms": 200})
        yield root
    finally:
        devnet.down(root, grace_s=5)


def _dvp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_damaged_store_is_refused_then_resynced_from_peers(net: Path) -> None:
    es = entries(net)
    victim = es[VICTIM]
    others = [e for name, e in es.items() if name != VICTIM]
    wait_height(list(es.values()), 4, 30)
    pid = devnet.running_pid(net, victim)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    devnet.reap(pid)
    datadir = net / "data" / VICTIM
    log = max((datadir / "ledger").glob("*.log"), key=lambda p: p.stat().st_size)
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0x5A
    log.write_bytes(bytes(data))

    run = _dvp("node", "run", "--config", str(victim.config))
    # (the node's JSON log lines may precede it, e.g. a "gc pause" on a loaded machine)
    lines = [x for x in run.stderr.strip().splitlines() if not x.startswith("{")]
    assert run.returncode == 4, run.stderr
    assert len(lines) == 1 and "Traceback" not in run.stderr, run.stderr
    assert str(datadir / "ledger") in lines[0] and "dvp store resync --config" in lines[0]

    check = _dvp("store", "check", "--datadir", str(datadir))
    assert check.returncode == 1, check.stdout + check.stderr
    assert check.stdout.startswith("DAMAGED: "), check.stdout

    resync = _dvp("store", "resync", "--config", str(victim.config), "--timeout", "60")
    assert resync.returncode == 0, resync.stdout + resync.stderr
    assert resync.stdout.startswith(f"rebuilt {datadir / 'ledger'} from its peers"), resync.stdout
    assert list(datadir.glob("ledger.damaged-*")), list(datadir.iterdir())

    check = _dvp("store", "check", "--datadir", str(datadir))
    assert check.returncode == 0, check.stdout + check.stderr

    devnet.up(net, only=[VICTIM], wait_s=60)
    top = max((status(e) or {}).get("height", 0) for e in others)
    wait_height([victim], top, 60)
    assert_same_chain(list(es.values()))
    print(f"\n{lines[0]}\n{resync.stdout.strip()}")
