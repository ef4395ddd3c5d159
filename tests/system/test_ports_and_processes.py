"""Ports and processes, as an operator meets them: `dvp devnet up` from any directory
with a relative `--dir`, a node whose P2P or RPC port is taken exits with one line
before it reports ready, `dvp devnet down` signals only the nodes it started, and a
running node's /metrics and log (process_* series, JSON lines only).

One single-validator devnet, started through the CLI from a folder outside the
repository, serves the module; its running node is what holds the ports a second node
then fails to take. Processes are stopped in teardown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli import devnet
from cli.devnet_files import NodeEntry, free_ports, load_devnet

pytestmark = [pytest.mark.processes, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]


def dvp(*argv: str, cwd: Path, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """The `dvp` command as a user runs it, from ``cwd`` (this checkout's code)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, NodeEntry]]:
    home = tmp_path_factory.mktemp("operator")  # not the repository: no configs/ here
    root = home / "nets" / "one"
    try:
        up = dvp("devnet", "up", "--dir", "nets/one", "--nodes", "1", "--wait", "90", cwd=home)
        assert up.returncode == 0, up.stderr
        yield root, load_devnet(root)[0]
    finally:
        if (root / "devnet.json").exists():
            devnet.down(root, grace_s=5)


def test_devnet_up_works_from_any_directory(net: tuple[Path, NodeEntry], tmp_path: Path) -> None:
    root, entry = net
    pid = devnet.running_pid(root, entry)
    assert pid is not None
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert str(entry.config).encode() in argv  # absolute: whatever the node's cwd
    status = dvp("devnet", "status", "--dir", str(root), "--json", cwd=tmp_path)
    assert status.returncode == 0, status.stderr
    [row] = json.loads(status.stdout)
    assert row["pid"] == pid and row["height"] >= 1


def test_metrics_have_process_series_and_the_log_is_json_lines(
    net: tuple[Path, NodeEntry],
) -> None:
    root, entry = net
    with urllib.request.urlopen(entry.rpc_url + "metrics", timeout=10) as response:
        text = response.read().decode()
    assert "\nprocess_resident_memory_bytes " in text and "\nprocess_cpu_seconds_total " in text
    lines = devnet.log_file(root, entry).read_text().splitlines()
    docs = [json.loads(line) for line in lines]  # every line: not one plain-text line
    warnings = [d for d in docs if d["level"] == "warning" and "OPEN" in d["msg"]]
    assert {d["logger"] for d in warnings} == {"dvp.rpc", "dvp.http"}, warnings


@pytest.mark.parametrize("taken", ["p2p", "rpc"])
def test_a_taken_port_stops_the_node_before_it_is_ready(
    net: tuple[Path, NodeEntry], taken: str
) -> None:
    root, entry = net
    # A second node on the running node's port: the same config, another data dir.
    p2p_port, rpc_port = free_ports(2)
    text = entry.config.read_text().replace(f'data/{entry.name}"', 'data/second"')
    if taken == "p2p":
        text = text.replace(f"127.0.0.1:{entry.rpc_port}", f"127.0.0.1:{rpc_port}")
        port = entry.p2p_port
    else:
        text = text.replace(f"127.0.0.1:{entry.p2p_port}", f"127.0.0.1:{p2p_port}")
        port = entry.rpc_port
    second = entry.config.with_name(f"second-{taken}.toml")
    second.write_text(text)
    run = dvp("node", "run", "--config", str(second), cwd=root, timeout_s=60)
    assert run.returncode == 2
    assert run.stdout == "" and run.stderr.count("\n") == 1, run.stderr
    assert f"[{taken}] listen 127.0.0.1:{port}: cannot listen: Address already in use" in (
        run.stderr
    )


def test_devnet_down_stops_only_the_processes_it_started(
    net: tuple[Path, NodeEntry], tmp_path: Path
) -> None:
    root, entry = net
    pid = devnet.running_pid(root, entry)
    assert pid is not None
    down = dvp("devnet", "down", "--dir", str(root), cwd=tmp_path)
    assert down.returncode == 0 and "stopped: cnix" in down.stdout, down.stderr
    # Now the pid file names a process that is not this node: one that merely looks
    # like a dvp node of another devnet (after a reboot, any process may hold the pid).
    imposter = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)", "node", "run", "--config",
         str(tmp_path / "elsewhere" / "cnix.toml")]
    )  # fmt: skip
    try:
        devnet.pid_file(root, entry).write_text(f"{imposter.pid}\n")
        status = dvp("devnet", "status", "--dir", str(root), "--json", cwd=tmp_path)
        assert status.returncode == 1 and json.loads(status.stdout)[0]["pid"] is None
        down = dvp("devnet", "down", "--dir", str(root), cwd=tmp_path)
        assert down.returncode == 0 and "stopped: none" in down.stdout, down.stderr
        assert imposter.poll() is None  # left alone
        assert not devnet.pid_file(root, entry).exists()  # and the stale pid forgotten
    finally:
        imposter.kill()
        imposter.wait(timeout=10)
