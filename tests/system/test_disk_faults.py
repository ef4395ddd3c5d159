"""Disks that fill up or rot under a real node (issue 6, part 5).

- A replica whose data directory is a small tmpfs that fills up: it stops committing
  with a clear error (a log line, ``status.store_error``, ``dvp_store_ok 0``) while the
  other three go on; once space is freed it reopens its databases, catches up and holds
  the same chain as the others, nothing lost; a restart afterwards opens cleanly.
  Skipped, saying why, only where mounting a tmpfs is not permitted.
- A damaged ledger database (bytes flipped in a table file, a truncated table file, a
  missing ``CURRENT``) is refused by ``dvp node run`` with a one-line message naming
  the database and the fix (``dvp store resync``), and exit status 4.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import plyvel
import pytest

from cli import devnet
from cli.devnet_files import create_devnet
from scripts.harness.realnet import (
    REPO,
    assert_same_chain,
    block_ids,
    entries,
    metric,
    status,
    wait_height,
)

pytestmark = [pytest.mark.processes, pytest.mark.timeout(240)]

MiB = 1024 * 1024
VICTIM = "webank"  # a replica (the primary of view 0 is cnix)


def _mount_tmpfs(path: Path, size_mib: int) -> str | None:
    """Mount a tmpfs at ``path``; the reason it could not, or None."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mib}M", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run mount: {exc}"
    if done.returncode != 0:
        return f"mount -t tmpfs refused here: {done.stderr.strip()}"
    return None


def _fill(path: Path) -> Path:
    """Write a filler file until the file system reports ENOSPC."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as fh:
        for chunk in (MiB, 64 * 1024, 4096, 512):
            try:
                while True:
                    fh.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
    return filler


@pytest.fixture(scope="module")
def full_disk_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("diskfull")
    disk = root / "disk"
    why = _mount_tmpfs(disk, 48)
    if why is not None:
        pytest.skip(why)
    try:
        create_devnet(root, nodes=4, params={"heartbeat_ms": 300, "view_timeout_ms": 1000})
        cfg = entries(root)[VICTIM].config
        text = cfg.read_text().replace(
            f'data_dir = "../data/{VICTIM}"', f'data_dir = "{disk / "data"}"'
        )
        assert str(disk) in text
        cfg.write_text(text)
        devnet.up(root, wait_s=60, min_height=2)
        yield root, disk
    finally:
        if (root / "devnet.json").exists():
            devnet.down(root, grace_s=5)
        subprocess.run(["umount", str(disk)], capture_output=True, timeout=30)


def test_full_disk_stops_commits_then_resumes_with_nothing_lost(
    full_disk_net: tuple[Path, Path],
) -> None:
    root, disk = full_disk_net
    es = entries(root)
    victim = es[VICTIM]
    others = [e for name, e in es.items() if name != VICTIM]
    wait_height(list(es.values()), 3, 30)

    filler = _fill(disk)
    t_full = time.monotonic()
    stopped = None
    while time.monotonic() - t_full < 30:
        stopped = status(victim)
        if stopped is not None and stopped["store_error"]:
            break
        time.sleep(0.2)
    assert stopped is not None and stopped["store_error"], "no store error reported"
    assert "space" in stopped["store_error"].lower(), stopped["store_error"]
    h_stop = stopped["height"]
    kept = block_ids(victim, h_stop)  # what it had committed when the disk filled
    assert metric(victim, "dvp_store_ok") == 0
    assert metric(victim, "dvp_store_write_failures_total") >= 1
    log = (root / "data" / VICTIM / "node.log").read_text()
    assert "disk write failed: stopped committing" in log

    # The other three go on; the victim commits nothing while the disk is full.
    wait_height(others, h_stop + 6, 30)
    st = status(victim)
    assert st is not None and st["height"] == h_stop and st["store_error"]

    filler.unlink()
    caught_up = wait_height([victim], max(s["height"] for s in map(status, others)), 60)
    st = status(victim)
    assert st is not None and st["store_error"] is None, st
    assert metric(victim, "dvp_store_ok") == 1
    assert block_ids(victim, h_stop) == kept
    assert_same_chain(list(es.values()))

    # A restart opens the databases the failure left behind cleanly.
    pid = devnet.running_pid(root, victim)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # a graceful stop of just this node
    devnet.reap(pid)
    devnet.up(root, only=[VICTIM], wait_s=60)
    wait_height([victim], max(s["height"] for s in map(status, others)), 60)
    assert_same_chain(list(es.values()))
    print(f"\nvictim stopped at height {h_stop}; caught up {caught_up:.1f} s after space was freed")


# --- a damaged database is refused at start -------------------------------------


@pytest.fixture(scope="module")
def stopped_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-validator devnet that committed a few blocks and was stopped, with its
    LevelDB logs compacted into table files (what a long-running node has)."""
    root = tmp_path_factory.mktemp("corrupt")
    try:
        devnet.up(root, nodes=1, wait_s=60, min_height=4, params={"heartbeat_ms": 200})
    finally:
        devnet.down(root, grace_s=5)
    ledger = root / "data" / "cnix" / "ledger"
    plyvel.DB(str(ledger)).close()  # reopening moves the log into an .ldb table
    assert list(ledger.glob("*.ldb")), list(ledger.iterdir())
    return root


def _run_node(root: Path, data: Path) -> subprocess.CompletedProcess[str]:
    cfg = entries(root)["cnix"].config
    text = cfg.read_text().replace('data_dir = "../data/cnix"', f'data_dir = "{data}"')
    damaged_cfg = cfg.with_name("damaged.toml")
    damaged_cfg.write_text(text)
    try:
        return subprocess.run(
            [sys.executable, "-m", "cli.main", "node", "run", "--config", str(damaged_cfg)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=REPO,
        )
    except subprocess.TimeoutExpired as exc:  # it started on a damaged store
        raise AssertionError(
            f"dvp node run did not refuse the damaged store: {exc.stderr}"
        ) from None


def _damage(ledger: Path, how: str) -> None:
    tables = sorted(ledger.glob("*.ldb"), key=lambda p: p.stat().st_size)
    if how == "flip":
        table = tables[-1]
        data = bytearray(table.read_bytes())
        for i in range(0, len(data) - 48, 97):  # keep the footer: damage the blocks
            data[i] ^= 0x5A
        table.write_bytes(bytes(data))
    elif how == "truncate":
        table = tables[-1]
        table.write_bytes(table.read_bytes()[: table.stat().st_size // 2])
    else:
        (ledger / "CURRENT").unlink()


@pytest.mark.parametrize("how", ["flip", "truncate", "no_current"])
def test_damaged_database_is_refused_at_start(stopped_node: Path, tmp_path: Path, how: str) -> None:
    data = tmp_path / "data"
    shutil.copytree(
        stopped_node / "data" / "cnix", data, ignore=shutil.ignore_patterns("node.log", "node.pid")
    )
    _damage(data / "ledger", how)
    done = _run_node(stopped_node, data)
    # The error for people is the one line that is not a JSON log line (a busy machine
    # may add a structured "gc pause" warning before it).
    lines = [ln for ln in done.stderr.strip().splitlines() if not ln.startswith("{")]
    assert done.returncode == 4, done.stderr  # the store is damaged (dvp node run --help)
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].startswith("dvp node run: "), done.stderr
    assert str(data / "ledger") in lines[0], lines[0]
    assert "dvp store resync --config" in lines[0], lines[0]
    print(f"\n{how}: {lines[0]}")
