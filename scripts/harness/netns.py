"""Linux network namespaces for node processes: real links that can be cut, split and slowed.

Topology of one run (``rid`` = 4 hex digits, unique per run; ``k`` = a free /24 in
10.77.0.0/16, the project's private test subnet, which exists only inside these
namespaces and on the run's control bridge)::

    root namespace                hub namespace dvpt-<rid>-<pid>-hub
    ---------------------         ------------------------------------
    bridge dvpt<rid>cb            bridges br0 (everyone), br1.. (split groups)
      10.77.k.254/25                 d1 .. dN  (hub ends of the data veths)
      dvpt<rid>c1 .. cN
          |                                |
    node namespace dvpt-<rid>-<pid>-n<i>:  ctl0 10.77.k.(128+i)/25  (RPC only)
                                           data0 10.77.k.i/25       (p2p only)

Two links per node so faults touch only the consensus network: the harness and the
load generator keep reaching every node's RPC over the *control* link (a client of an
isolated node sees exactly what a real client would: its node cannot commit), while
p2p runs over the *data* link. Control ports are bridge-isolated (``isolated on``), so
nodes cannot reach one another over the control bridge, only the harness.

Faults act on the hub's data ports: ``isolate`` sets a node's port down, ``partition``
moves groups of ports onto separate bridges (a 2–2 split), ``heal`` puts everyone back
on ``br0`` and up. ``tbf`` shaping (a slow, queueing link) is available on this kernel;
``netem`` (delay/loss) is used only where the kernel has it (``netem_supported``); delay
without netem is added in user space by relays on loopback (``scripts.harness.delay``).

Everything is named ``dvpt-...`` / ``dvpt<rid>...`` and torn down by ``close()``;
``sweep_stale()`` removes what runs whose owner process is gone left behind.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = "dvpt"
NETNS_DIR = Path("/run/netns")


class NetnsUnavailable(RuntimeError):
    """The kernel or the user's privileges forbid network namespaces here."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {res.stderr.strip()}")
    return res


def _tc(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        ["ip", "netns", "exec", ns, "tc", *args], capture_output=True, text=True, timeout=20
    )
    if check and res.returncode != 0:
        raise RuntimeError(f"tc {' '.join(args)} in {ns}: {res.stderr.strip()}")
    return res


def probe() -> str | None:
    """None if namespaces with veths and bridges work here, else the reason they do not."""
    name = f"{PREFIX}-probe-{os.getpid()}"
    try:
        res = subprocess.run(
            ["ip", "netns", "add", name], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run `ip netns add`: {exc}"
    if res.returncode != 0:
        return f"`ip netns add` failed (the kernel or privileges forbid it): {res.stderr.strip()}"
    try:
        veth = _ip(
            "-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1", check=False
        )
        if veth.returncode != 0:
            return f"veth pairs are not available: {veth.stderr.strip()}"
        br = _ip("-n", name, "link", "add", "b0", "type", "bridge", check=False)
        if br.returncode != 0:
            return f"bridges are not available: {br.stderr.strip()}"
        return None
    finally:
        _ip("netns", "del", name, check=False)


def netem_supported() -> str | None:
    """None if ``tc qdisc ... netem`` works here, else the reason (e.g. no sch_netem)."""
    name = f"{PREFIX}-probe-{os.getpid()}"
    if _ip("netns", "add", name, check=False).returncode != 0:
        return "no network namespaces"
    try:
        _ip("-n", name, "link", "add", "p0", "type", "veth", "peer", "name", "p1", check=False)
        res = _tc(name, "qdisc", "add", "dev", "p0", "root", "netem", "delay", "10ms", check=False)
        if res.returncode != 0:
            return f"the kernel has no netem qdisc ({res.stderr.strip()})"
        return None
    finally:
        _ip("netns", "del", name, check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_processes(ns: str) -> None:
    res = _ip("netns", "pids", ns, check=False)
    for tok in res.stdout.split():
        try:
            os.kill(int(tok), 9)
        except (ValueError, ProcessLookupError):
            pass


def sweep_stale() -> list[str]:
    """Delete ``dvpt-*`` namespaces and ``dvpt*`` root links of runs whose owner is dead.

    Runs of a live owner (a concurrent chaos run, another test session) are left alone:
    the owner's pid is part of every namespace name."""
    removed: list[str] = []
    if not NETNS_DIR.is_dir():
        return removed
    dead_rids: set[str] = set()
    for entry in NETNS_DIR.iterdir():
        m = re.fullmatch(rf"{PREFIX}-([0-9a-f]{{4}})-(\d+)-\w+", entry.name)
        probe_m = re.fullmatch(rf"{PREFIX}-probe-(\d+)", entry.name)
        owner = int(m.group(2)) if m else int(probe_m.group(1)) if probe_m else None
        if owner is None or _pid_alive(owner):
            continue
        _kill_namespace_processes(entry.name)
        _ip("netns", "del", entry.name, check=False)
        removed.append(entry.name)
        if m:
            dead_rids.add(m.group(1))
    live_rids = {
        m.group(1)
        for e in NETNS_DIR.iterdir()
        if (m := re.fullmatch(rf"{PREFIX}-([0-9a-f]{{4}})-\d+-\w+", e.name))
    }
    links = _ip("-o", "link", "show", check=False).stdout
    for name in re.findall(rf"^\d+: ({PREFIX}[0-9a-f]{{4}}\w+)[@:]", links, re.M):
        rid = name[len(PREFIX) : len(PREFIX) + 4]
        if rid in dead_rids or rid not in live_rids:
            _ip("link", "del", name, check=False)
            removed.append(name)
    # unreachable routes of runs whose control bridge is gone
    bridged = set(
        re.findall(r"inet 10\.77\.(\d+)\.254/", _ip("-4", "addr", "show", check=False).stdout)
    )
    for k in re.findall(
        r"^unreachable 10\.77\.(\d+)\.0/25", _ip("route", "show", check=False).stdout, re.M
    ):
        if k not in bridged:
            _ip("route", "del", "unreachable", f"10.77.{k}.0/25", check=False)
            removed.append(f"route 10.77.{k}.0/25")
    return removed


def _free_subnet() -> int:
    """A third octet k such that 10.77.k.0/24 is not in use in the root namespace."""
    text = _ip("-4", "addr", "show", check=False).stdout + _ip("route", "show", check=False).stdout
    used = {int(x) for x in re.findall(r"10\.77\.(\d+)\.", text)}
    for k in range(1, 250):
        if k not in used:
            return k
    raise NetnsUnavailable("no free 10.77.k.0/24 test subnet")


@dataclass
class NodeNet:
    index: int  # 1-based
    ns: str  # node namespace
    data_ip: str  # p2p listen address (data link)
    ctl_ip: str  # RPC listen address (control link)
    hub_port: str  # the data veth's end in the hub namespace


@dataclass
class NetnsNetwork:
    """The namespaces, bridges and veths of one run; ``close()`` removes all of it."""

    n: int
    rid: str = field(default_factory=lambda: secrets.token_hex(2))
    nodes: list[NodeNet] = field(default_factory=list)
    hub: str = ""
    subnet: int = 0
    host_ip: str = ""
    _created: list[str] = field(default_factory=list)
    _groups: int = 1

    @property
    def ctl_bridge(self) -> str:
        return f"{PREFIX}{self.rid}cb"

    def create(self) -> NetnsNetwork:
        reason = probe()
        if reason is not None:
            raise NetnsUnavailable(reason)
        sweep_stale()
        pid = os.getpid()
        self.subnet = k = _free_subnet()
        self.host_ip = f"10.77.{k}.254"
        self.hub = f"{PREFIX}-{self.rid}-{pid}-hub"
        try:
            self._add_ns(self.hub)
            _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
            _ip("-n", self.hub, "link", "set", "br0", "up")
            _ip("link", "add", self.ctl_bridge, "type", "bridge")
            self._created.append(self.ctl_bridge)
            _ip("addr", "add", f"{self.host_ip}/25", "dev", self.ctl_bridge)
            _ip("link", "set", self.ctl_bridge, "up")
            # The data half of the subnet is never reachable from here: without this
            # route a stray connection would follow the default route off the machine.
            _ip("route", "add", "unreachable", f"10.77.{k}.0/25")
            self._created.append(f"route:10.77.{k}.0/25")
            for i in range(1, self.n + 1):
                self.nodes.append(self._add_node(i, pid))
        except BaseException:
            self.close()
            raise
        return self

    def _add_ns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._created.append(name)
        _ip("-n", name, "link", "set", "lo", "up")

    def _add_node(self, i: int, pid: int) -> NodeNet:
        k = self.subnet
        ns = f"{PREFIX}-{self.rid}-{pid}-n{i}"
        self._add_ns(ns)
        # data link: node ns <-> hub bridge
        a, b = f"{PREFIX}{self.rid}d{i}", f"{PREFIX}{self.rid}e{i}"
        _ip("link", "add", a, "type", "veth", "peer", "name", b)
        _ip("link", "set", a, "netns", self.hub)
        _ip("-n", self.hub, "link", "set", a, "name", f"d{i}")
        _ip("-n", self.hub, "link", "set", f"d{i}", "master", "br0")
        _ip("-n", self.hub, "link", "set", f"d{i}", "up")
        _ip("link", "set", b, "netns", ns)
        _ip("-n", ns, "link", "set", b, "name", "data0")
        _ip("-n", ns, "addr", "add", f"10.77.{k}.{i}/25", "dev", "data0")
        _ip("-n", ns, "link", "set", "data0", "up")
        # control link: node ns <-> root-namespace bridge (RPC of the harness)
        c, d = f"{PREFIX}{self.rid}c{i}", f"{PREFIX}{self.rid}f{i}"
        _ip("link", "add", c, "type", "veth", "peer", "name", d)
        self._created.append(c)
        _ip("link", "set", c, "master", self.ctl_bridge)
        _ip("link", "set", "dev", c, "type", "bridge_slave", "isolated", "on")
        _ip("link", "set", c, "up")
        _ip("link", "set", d, "netns", ns)
        _ip("-n", ns, "link", "set", d, "name", "ctl0")
        _ip("-n", ns, "addr", "add", f"10.77.{k}.{128 + i}/25", "dev", "ctl0")
        _ip("-n", ns, "link", "set", "ctl0", "up")
        return NodeNet(i, ns, f"10.77.{k}.{i}", f"10.77.{k}.{128 + i}", f"d{i}")

    # ------------------------------------------------------------------ faults

    def isolate(self, i: int) -> None:
        """Cut node i off the data network (its RPC stays reachable)."""
        _ip("-n", self.hub, "link", "set", self.nodes[i - 1].hub_port, "down")

    def reconnect(self, i: int) -> None:
        _ip("-n", self.hub, "link", "set", self.nodes[i - 1].hub_port, "up")

    def partition(self, groups: list[list[int]]) -> None:
        """Put each group of node indexes on its own bridge: no traffic between groups."""
        for g, members in enumerate(groups):
            bridge = f"br{g}"
            if g >= self._groups:
                _ip("-n", self.hub, "link", "add", bridge, "type", "bridge")
                _ip("-n", self.hub, "link", "set", bridge, "up")
                self._groups = g + 1
            for i in members:
                _ip("-n", self.hub, "link", "set", self.nodes[i - 1].hub_port, "master", bridge)

    def shape(self, i: int, qdisc: list[str]) -> None:
        """Apply a root qdisc (e.g. ``["tbf", "rate", "2mbit", ...]`` or netem) to node i's
        data link, both directions."""
        node = self.nodes[i - 1]
        _tc(node.ns, "qdisc", "replace", "dev", "data0", "root", *qdisc)
        _tc(self.hub, "qdisc", "replace", "dev", node.hub_port, "root", *qdisc)

    def unshape(self, i: int) -> None:
        node = self.nodes[i - 1]
        _tc(node.ns, "qdisc", "del", "dev", "data0", "root", check=False)
        _tc(self.hub, "qdisc", "del", "dev", node.hub_port, "root", check=False)

    def heal(self) -> None:
        """Everyone back on one bridge, every link up, no shaping."""
        for node in self.nodes:
            _ip("-n", self.hub, "link", "set", node.hub_port, "master", "br0")
            _ip("-n", self.hub, "link", "set", node.hub_port, "up")
            self.unshape(node.index)

    # ------------------------------------------------------------------ teardown

    def exec_prefix(self, i: int) -> list[str]:
        return ["ip", "netns", "exec", self.nodes[i - 1].ns]

    def close(self) -> None:
        """Kill anything left in our namespaces, delete them and our root links."""
        for name in reversed(self._created):
            if name.startswith("route:"):
                _ip("route", "del", "unreachable", name[6:], check=False)
            elif name.startswith(f"{PREFIX}-"):
                _kill_namespace_processes(name)
                _ip("netns", "del", name, check=False)
            else:
                _ip("link", "del", name, check=False)
        self._created.clear()
