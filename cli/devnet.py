"""``dvp devnet up|status|down``: a local consortium of node processes on loopback.

``up`` creates the devnet folder if needed (``cli.devnet_files``), starts every node
that is not running as its own OS process (``dvp node run --config ...``, logs in
``data/<name>/node.log``, pid in ``data/<name>/node.pid``, beside the node's config
folder), waits until they commit,
and prints their RPC URLs. Run again on an existing folder it restarts only the nodes
that are down, keeping their data. ``down`` sends SIGTERM, then SIGKILL after a grace
period.

Works on a ``dvp testnet`` folder too (its nodes in one folder per organisation): both
write the ``devnet.json`` index (cli/network_index.py).

Works from any directory: the folder is made absolute before a node is started, so
each node gets an absolute config path whatever its working directory. A pid file is
trusted only while that pid is a ``dvp node run`` of this node's config
(``is_node_process``, from ``/proc/<pid>/cmdline``): after a reboot or a crash the pid
may belong to anything, and ``down`` must never signal a process it did not start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cli.devnet_files import NodeEntry, create_devnet, load_devnet
from cli.rpc_client import RpcCallError, RpcClient

# Nodes started by this process, so they are reaped (not left as zombies or collected
# while running, which Popen reports as a ResourceWarning). The CLI exits right after
# `up`; the nodes run on in their own sessions.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def pid_file(root: Path, e: NodeEntry) -> Path:
    return e.data_dir / "node.pid"


def log_file(root: Path, e: NodeEntry) -> Path:
    return e.data_dir / "node.log"


def is_node_process(pid: int, config: Path) -> bool:
    """True if ``pid`` runs ``dvp node run --config <config>`` (relative paths in its
    command line resolved against its working directory). Linux: ``/proc``; where there
    is no ``/proc`` the pid file is trusted."""
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").is_dir():
        return True
    try:
        argv = [
            a.decode(errors="surrogateescape") for a in (proc / "cmdline").read_bytes().split(b"\0")
        ]
        cwd = Path(os.readlink(proc / "cwd"))
    except OSError:  # gone, or not ours to inspect: not a node we started
        return False
    for i, arg in enumerate(argv[:-1]):
        if arg == "--config" and "run" in argv[:i] and "node" in argv[:i]:
            return (cwd / argv[i + 1]).resolve() == config.resolve()
    return False


def running_pid(root: Path, e: NodeEntry) -> int | None:
    """The pid of this node's process if it is running (see ``is_node_process``)."""
    try:
        pid = int(pid_file(root, e).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    proc = _CHILDREN.get(pid)
    if proc is not None:
        # Started by this process: its handle says whether it runs. (Its cmdline is not
        # evidence here: between fork and exec it is still this process's own, which
        # made a node just started on a busy machine look "exited".)
        return pid if proc.poll() is None else None
    try:  # a zombie child of ours counts as dead
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return None
    except (OSError, IndexError):
        pass
    return pid if is_node_process(pid, e.config) else None


def start_node(root: Path, e: NodeEntry) -> int:
    log = log_file(root, e)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "node", "run", "--config", str(e.config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=str(Path(__file__).resolve().parent.parent),
        )
    pid_file(root, e).write_text(f"{proc.pid}\n")
    _CHILDREN[proc.pid] = proc
    return proc.pid


def node_status(e: NodeEntry, timeout_s: float = 2.0) -> dict[str, Any] | None:
    return status_of(RpcClient(e.rpc_url, timeout_s=timeout_s))


def status_of(client: RpcClient) -> dict[str, Any] | None:
    """``status`` of the node behind ``client`` (closed afterwards); None if it does not
    answer (not started, stopped, or refused: a TLS certificate it does not trust)."""
    try:
        result: dict[str, Any] = client.call("status")
        return result
    except (RpcCallError, OSError, ValueError):
        return None
    finally:
        client.close()


def up(
    root: Path,
    *,
    nodes: int = 4,
    observers: int = 0,
    wait_s: float = 60.0,
    params: dict[str, Any] | None = None,
    min_height: int = 1,
    only: list[str] | None = None,
) -> list[NodeEntry]:
    """Start the devnet's nodes that are down (``only``: just these names)."""
    root = root.resolve()
    if not (root / "devnet.json").exists():
        create_devnet(root, nodes=nodes, observers=observers, params=params)
    entries = [e for e in load_devnet(root) if only is None or e.name in only]
    for e in entries:
        if running_pid(root, e) is None:
            start_node(root, e)
    deadline = time.monotonic() + wait_s
    pending = list(entries)
    while pending and time.monotonic() < deadline:
        for e in list(pending):
            st = node_status(e, timeout_s=1.0)
            if st is not None and st["height"] >= min_height:
                pending.remove(e)
            elif running_pid(root, e) is None:
                raise RuntimeError(
                    f"node {e.name} exited; see {log_file(root, e)}:\n" + _tail(log_file(root, e))
                )
        time.sleep(0.2)
    if pending:
        raise TimeoutError(
            f"nodes {[e.name for e in pending]} did not commit within "
            f"{wait_s:.0f} s; see their logs in {root / 'data'}"
        )
    return entries


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def down(root: Path, grace_s: float = 10.0) -> list[str]:
    """Stop the devnet's running nodes; a pid file naming any other process is removed
    and that process left alone."""
    stopped = []
    root = root.resolve()
    entries = load_devnet(root)
    pids = {e.name: running_pid(root, e) for e in entries}
    for pid in pids.values():
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    for e in entries:
        pid = pids[e.name]
        if pid is None:
            pid_file(root, e).unlink(missing_ok=True)  # stale: the node is not running
            continue
        while running_pid(root, e) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if running_pid(root, e) is not None:
            os.kill(pid, signal.SIGKILL)
        _reap(pid)
        pid_file(root, e).unlink(missing_ok=True)
        stopped.append(e.name)
    return stopped


def _reap(pid: int) -> None:
    proc = _CHILDREN.pop(pid, None)
    if proc is not None:
        proc.wait(timeout=5)
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def reap(pid: int) -> None:
    """Collect a node process started here that was killed (tests kill -9 nodes)."""
    _reap(pid)


def status(root: Path) -> list[dict[str, Any]]:
    rows = []
    root = root.resolve()
    for e in load_devnet(root):
        st = node_status(e)
        rows.append(
            {
                "name": e.name,
                "role": e.role,
                "pid": running_pid(root, e),
                "rpc_url": e.rpc_url,
                "height": st["height"] if st else None,
                "last_block_id": st["block_id"] if st else None,
                "view": st["view"] if st else None,
                # by the node's clock; readiness as its /readyz says (node.health)
                "head_age_ms": st.get("head_age_ms") if st else None,
                "peers": st["peers"] if st else None,
                "ready": st.get("ready") if st else None,
                "failing": st.get("failing") if st else None,
            }
        )
    return rows
