"""A consortium of real node processes for fault injection: on 127.0.0.1 or in namespaces.

``Cluster`` writes a devnet folder with ``cli.devnet_files.create_devnet`` (keys,
genesis, one config per validator), and — in namespace mode — rewrites each config to
listen for p2p on its namespace's data address and for RPC on its control address
(``scripts.harness.netns``). It starts, kills (``SIGKILL``/``SIGTERM``) and restarts the
node processes (``python -m cli.main node run --config ...``, via ``ip netns exec`` in
namespace mode), finds the primary through ``status``, and in namespace mode isolates,
splits, heals, flaps and shapes links; in either mode it can cut one node off by
restarting it with no peers on a new p2p port (``cut_off``/``rejoin``: a validator
restarted during a partition). With ``delays`` (a ``scripts.harness.delay.Topology``) it
also starts one observer and puts every p2p link behind a delaying relay, on loopback: a
consortium spread over distant sites without netem (``delay`` says how, and its limits);
``names`` are the validators, ``observers`` the rest. Logs and pid files use the devnet layout
(``data/<name>/node.log``), so ``dvp devnet status`` and the operator docs apply.

``close()`` stops every process it started (SIGTERM, then SIGKILL) and removes the
network; callers put it in a ``finally`` (tests: a fixture finalizer).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli import devnet
from cli.devnet_files import NodeEntry, create_devnet, free_ports
from cli.rpc_client import RpcClient
from scripts.harness import realnet
from scripts.harness.delay import Relays, Topology, route
from scripts.harness.netns import NetnsNetwork

REPO = Path(__file__).resolve().parents[2]


@dataclass
class _Entry(NodeEntry):
    """A devnet entry whose RPC may live on a namespace's control address."""

    url: str = ""

    @property
    def rpc_url(self) -> str:
        return self.url or super().rpc_url


class Cluster:
    """n validators of one devnet, each an OS process; faults are methods."""

    def __init__(
        self,
        root: Path,
        *,
        n: int = 4,
        netns: bool = False,
        params: dict[str, Any] | None = None,
        delays: Topology | None = None,
        seed: int = 0,
    ) -> None:
        if netns and delays is not None:
            raise ValueError("delaying relays are for loopback clusters, not namespaces")
        self.root = root
        self.n = n
        self.net: NetnsNetwork | None = None
        self.delays = delays
        self.relays: Relays | None = None
        self._seed = seed
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.entries: dict[str, NodeEntry] = {}
        self.urls: dict[str, str] = {}
        self._netns = netns
        self._params = params or {}
        self._configs: dict[str, str] = {}  # the own configs of nodes cut off
        # Environment variables a node's process gets on top of ours (its "build": e.g.
        # DVP_PROTOCOL_MAX for a rolling-upgrade rehearsal), applied at its next start.
        self.node_env: dict[str, dict[str, str]] = {}
        # The certificate to trust for a node whose RPC serves HTTPS (its url https://).
        self.cafiles: dict[str, Path] = {}

    # ------------------------------------------------------------------ set-up

    def create(self) -> Cluster:
        observers = 0 if self.delays is None else 1
        entries = create_devnet(self.root, nodes=self.n, observers=observers, params=self._params)
        self.entries = {e.name: e for e in entries}
        if self.delays is not None:
            self.relays = Relays(self._seed)
            route(entries, self.delays, self.relays)
            self.relays.start()
        if self._netns:
            self.net = NetnsNetwork(self.n).create()
            self._rewrite_configs(entries)
        else:
            self.urls = {e.name: e.rpc_url for e in entries}
        return self

    def _rewrite_configs(self, entries: list[NodeEntry]) -> None:
        """p2p on each node's data address, RPC on its control address (same ports)."""
        assert self.net is not None
        where: dict[int, str] = {}
        for i, e in enumerate(entries, start=1):
            where[e.p2p_port] = self.net.nodes[i - 1].data_ip
            where[e.rpc_port] = self.net.nodes[i - 1].ctl_ip
            self.urls[e.name] = f"http://{self.net.nodes[i - 1].ctl_ip}:{e.rpc_port}/"
            self.entries[e.name] = _Entry(**vars(e), url=self.urls[e.name])
        for e in entries:
            text = e.config.read_text()
            text = re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"{where[int(m[1])]}:{m[1]}", text)
            e.config.write_text(text)

    @property
    def names(self) -> list[str]:
        """The validators."""
        return [n for n, e in self.entries.items() if e.role == "validator"]

    @property
    def observers(self) -> list[str]:
        return [n for n, e in self.entries.items() if e.role == "observer"]

    @property
    def validator_urls(self) -> dict[str, str]:
        return {n: self.urls[n] for n in self.names}

    @property
    def chain_id(self) -> str:
        import json

        return str(json.loads((self.root / "devnet.json").read_text())["chain_id"])

    def index(self, name: str) -> int:
        return self.names.index(name) + 1

    # ------------------------------------------------------------------ processes

    def start(self, names: list[str] | None = None, wait_s: float = 90.0) -> None:
        """Start the named nodes (default: all not running) and wait until they answer."""
        todo = [n for n in (names or list(self.entries)) if not self.running(n)]
        for name in todo:
            self._spawn(name)
        deadline = time.monotonic() + wait_s
        pending = set(todo)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                if self.status(name, timeout_s=1.0) is not None:
                    pending.discard(name)
                elif not self.running(name):
                    raise RuntimeError(f"node {name} exited at start:\n{self.log_tail(name)}")
            time.sleep(0.2)
        if pending:
            raise TimeoutError(f"nodes {sorted(pending)} did not answer within {wait_s:.0f} s")

    def _spawn(self, name: str) -> None:
        e = self.entries[name]
        prefix = self.net.exec_prefix(self.index(name)) if self.net is not None else []
        log = devnet.log_file(self.root, e)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            out.write(f"\n=== harness: start {time.strftime('%H:%M:%S')} ===\n".encode())
            out.flush()
            proc = subprocess.Popen(
                [
                    *prefix,
                    sys.executable,
                    "-m",
                    "cli.main",
                    "node",
                    "run",
                    "--config",
                    str(e.config),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=str(REPO),
                env={**os.environ, **self.node_env.get(name, {})},
            )
        devnet.pid_file(self.root, e).write_text(f"{proc.pid}\n")
        self.procs[name] = proc

    def running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def kill(self, name: str, sig: int = signal.SIGKILL, wait_s: float = 30.0) -> float:
        """Send ``sig`` and wait for the process to end (SIGKILL after ``wait_s``);
        returns how long it took to exit."""
        proc = self.procs[name]
        t0 = time.monotonic()
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=wait_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
                raise RuntimeError(f"{name} ignored signal {sig} for {wait_s} s") from None
        return time.monotonic() - t0

    def restart(self, name: str, wait_s: float = 90.0) -> None:
        if self.running(name):
            self.kill(name, signal.SIGTERM)
        self.start([name], wait_s=wait_s)

    def cut_off(self, name: str, wait_s: float = 90.0) -> None:
        """Restart ``name`` with no peers configured and listening for p2p on a port no
        one knows: the others cannot reach it, nor it them, on loopback too. Its RPC
        stays where it was, so clients keep asking it. ``rejoin`` undoes it."""
        config = self.entries[name].config
        self._configs.setdefault(name, config.read_text())
        self.kill(name, signal.SIGTERM)
        config.write_text(_without_peers(config.read_text(), free_ports(1)[0]))
        self.start([name], wait_s=wait_s)

    def rejoin(self, name: str, wait_s: float = 90.0) -> None:
        """Restart a node ``cut_off`` earlier with its own config again."""
        self.kill(name, signal.SIGTERM)
        self.entries[name].config.write_text(self._configs.pop(name))
        self.start([name], wait_s=wait_s)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.net is not None:
            self.net.close()
        if self.relays is not None:
            self.relays.stop()

    def log_tail(self, name: str, lines: int = 30) -> str:
        try:
            text = devnet.log_file(self.root, self.entries[name]).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    # ------------------------------------------------------------------ RPC

    def client(self, name: str, timeout_s: float = 10.0) -> RpcClient:
        ca = self.cafiles.get(name)
        return RpcClient(
            self.urls[name], timeout_s=timeout_s, cafile=None if ca is None else str(ca)
        )

    def status(self, name: str, timeout_s: float = 2.0) -> dict[str, Any] | None:
        return devnet.status_of(self.client(name, timeout_s))

    def heights(self, names: list[str] | None = None) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for name in names or self.names:
            st = self.status(name)
            out[name] = None if st is None else int(st["height"])
        return out

    def primary(self, among: list[str] | None = None) -> str:
        """The primary as the majority of the answering nodes sees it."""
        votes: dict[str, int] = {}
        for name in among or self.names:
            st = self.status(name)
            if st is not None and st.get("primary"):
                votes[st["primary"]] = votes.get(st["primary"], 0) + 1
        if not votes:
            raise RuntimeError("no node answered status with a primary")
        return max(votes, key=lambda k: votes[k])

    def wait_height(
        self, height: int, names: list[str] | None = None, timeout_s: float = 60.0
    ) -> float:
        """Wait until every named node is at ``height`` or above; seconds it took."""
        return realnet.wait_height(
            [self.entries[n] for n in names or self.names], height, timeout_s
        )

    # ------------------------------------------------------------------ network faults

    def _need_net(self) -> NetnsNetwork:
        if self.net is None:
            raise RuntimeError("network faults need a cluster started with netns=True")
        return self.net

    def isolate(self, name: str) -> None:
        self._need_net().isolate(self.index(name))

    def split(self, groups: list[list[str]]) -> None:
        self._need_net().partition([[self.index(n) for n in g] for g in groups])

    def heal(self) -> None:
        self._need_net().heal()

    def flap(self, name: str, cycles: int = 5, down_s: float = 0.5, up_s: float = 0.5) -> None:
        net = self._need_net()
        # The sleeps are the fault itself (how long the link is down, then up), not waits.
        for _ in range(cycles):
            net.isolate(self.index(name))
            time.sleep(down_s)
            net.reconnect(self.index(name))
            time.sleep(up_s)

    def shape(self, name: str, qdisc: list[str]) -> None:
        self._need_net().shape(self.index(name), qdisc)


def _without_peers(config: str, p2p_port: int) -> str:
    """A node config with ``[p2p.peers]`` emptied and the p2p listen port replaced."""
    out: list[str] = []
    section = ""
    for line in config.splitlines():
        if line.startswith("["):
            section = line.strip()
        elif section == "[p2p.peers]" and line.strip() and not line.startswith("#"):
            continue
        elif section == "[p2p]" and line.startswith("listen"):
            line = re.sub(r":\d+\"", f':{p2p_port}"', line)
        out.append(line)
    return "\n".join(out) + "\n"
