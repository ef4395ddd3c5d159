"""The key ceremony of docs/OPERATIONS.md played step by step with the ``dvp`` command,
each organisation in its own folder as on its own machine; used by
tests/system/test_ceremony.py (scaled down) and scripts/ceremony.py (full size).

Nothing private crosses between folders: the coordinator's folder receives only the
``*.member-description.json`` files; every organisation receives the genesis and the
descriptions (for its peers) and checks the genesis hash with ``dvp genesis show``.
Everything runs on 127.0.0.1 with free ports, so the skeleton configs from
``dvp org init`` are set to loopback before the nodes start (``localize``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.network_index import free_ports
from cli.rpc_client import RpcCallError, RpcClient

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Org:
    """One organisation: a validator, or (``observer``) a member running an observer."""

    id: str
    name: str
    roles: tuple[str, ...] = ()
    doc_types: tuple[str, ...] = ()
    observer: bool = False

    @property
    def validator(self) -> bool:
        return not self.observer


@dataclass
class Ceremony:
    root: Path
    orgs: list[Org]
    chain_id: str
    timings_s: dict[str, float] = field(default_factory=dict)
    genesis_hash: str = ""
    hashes_seen: dict[str, str] = field(default_factory=dict)
    rpc_ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def home(self, org: Org | str) -> Path:
        return self.root / (org if isinstance(org, str) else org.id)

    @property
    def coordinator(self) -> Path:
        return self.root / "coordinator"

    def rpc_url(self, org_id: str) -> str:
        return f"http://127.0.0.1:{self.rpc_ports[org_id]}/"


def dvp(*argv: str, cwd: Path | None = None, timeout_s: float = 120) -> Any:
    """Run ``dvp ARGV --json`` as its own process; its JSON output (fails loudly)."""
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", *argv, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=cwd or REPO,
        env=_env(),
    )
    if out.returncode != 0:
        raise RuntimeError(f"dvp {' '.join(argv)} exited {out.returncode}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def localize(text: str, *, p2p_port: int, rpc_port: int, peers: dict[str, str]) -> str:
    """A skeleton config from ``dvp org init`` set to loopback: listen addresses, an
    open RPC (no API keys in a test), the ``[p2p.peers]`` table from ``dvp org peers``."""
    text = re.sub(r'(\[p2p\]\nlisten = )"[^"]*"', rf'\1"127.0.0.1:{p2p_port}"', text)
    text = re.sub(r'(\[rpc\]\nlisten = )"[^"]*"', rf'\1"127.0.0.1:{rpc_port}"', text)
    text = re.sub(r"\nopen = false[^\n]*", "\nopen = true", text)
    table = "\n".join(f'{k} = "{v}"' for k, v in peers.items())
    return re.sub(r"(\[p2p\.peers\]\n)(?:[^\[]*?)(\n\[rpc\])", rf"\g<1>{table}\n\2", text)


def _timed(c: Ceremony, step: str, t0: float) -> None:
    c.timings_s[step] = round(time.monotonic() - t0, 2)


def prepare(root: Path, orgs: list[Org], chain_id: str = "dvp-ceremony") -> Ceremony:
    """Every step before the nodes start: init, exchange, genesis, checks, configs."""
    c = Ceremony(root, orgs, chain_id)
    ports = free_ports(2 * len(orgs))
    p2p = {o.id: ports[2 * i] for i, o in enumerate(orgs)}
    c.rpc_ports = {o.id: ports[2 * i + 1] for i, o in enumerate(orgs)}
    # 1. Each organisation on its own machine: keys and a public description.
    t0 = time.monotonic()
    for o in orgs:
        argv = ["org", "init", "--member", o.id, "--name", o.name, "--out", str(c.home(o))]
        argv += ["--roles", ",".join(o.roles), "--doc-types", ",".join(o.doc_types)]
        if o.validator:
            argv += ["--validator", "--p2p-address", f"127.0.0.1:{p2p[o.id]}"]
        else:
            argv += ["--observer"]
        dvp(*argv)
    _timed(c, "org_init_s", t0)
    # 2. The descriptions (only they) go to the coordinator, who makes the genesis.
    t0 = time.monotonic()
    c.coordinator.mkdir(parents=True)
    for o in orgs:
        name = f"{o.id}.member-description.json"
        shutil.copy(c.home(o) / name, c.coordinator / name)
    made = dvp(
        "genesis", "new", "--member-descriptions", str(c.coordinator), "--chain-id", chain_id,
        "--out", str(c.coordinator / "genesis.json"),
    )  # fmt: skip
    c.genesis_hash = made["genesis_hash"]
    _timed(c, "genesis_new_s", t0)
    # 3. The genesis and the descriptions go back; each organisation checks the hash
    # (compared out of band) and writes its peers.
    t0 = time.monotonic()
    for o in orgs:
        inbox = c.home(o) / "received"
        shutil.copytree(c.coordinator, inbox, ignore=shutil.ignore_patterns("genesis.json"))
        shutil.copy(c.coordinator / "genesis.json", c.home(o) / "genesis.json")
        shown = dvp("genesis", "show", str(c.home(o) / "genesis.json"))
        c.hashes_seen[o.id] = shown["genesis_hash"]
        peers = dvp("org", "peers", str(inbox), "--member", o.id)
        config = c.home(o) / "nodes" / f"{o.id}.toml"
        config.write_text(
            localize(
                config.read_text(), p2p_port=p2p[o.id], rpc_port=c.rpc_ports[o.id], peers=peers
            )
        )
        dvp("config", "check", str(config))
    _timed(c, "check_and_configure_s", t0)
    return c


def start(c: Ceremony, wait_s: float = 120) -> None:
    """Start every organisation's node from its own folder; wait for a first block."""
    t0 = time.monotonic()
    for o in c.orgs:
        log = open(c.home(o) / "node.log", "ab")  # noqa: SIM115 (closed by the child's exit)
        c.procs[o.id] = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "node", "run", "--config", f"nodes/{o.id}.toml"],
            cwd=c.home(o),
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
    deadline = time.monotonic() + wait_s
    pending = {o.id for o in c.orgs}
    while pending and time.monotonic() < deadline:
        for oid in sorted(pending):
            if c.procs[oid].poll() is not None:
                tail = (c.home(oid) / "node.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"node of {oid} exited:\n{tail}")
            if height(c, oid) >= 1:
                pending.discard(oid)
        time.sleep(0.2)
    if pending:
        raise TimeoutError(f"nodes of {sorted(pending)} did not commit within {wait_s:.0f} s")
    _timed(c, "nodes_first_block_s", t0)


def height(c: Ceremony, org_id: str) -> int:
    client = RpcClient(c.rpc_url(org_id), timeout_s=2)
    try:
        return int(client.call("status")["height"])
    except (RpcCallError, OSError, ValueError):
        return -1
    finally:
        client.close()


def attest_and_verify(c: Ceremony, issuer: Org, doc_type: str, verifier: Org) -> dict[str, Any]:
    """The issuer attests a document through its own node; the verifier checks it
    through its node against its own copy of the genesis."""
    t0 = time.monotonic()
    doc = c.home(issuer) / "report.pdf"
    doc.write_bytes(b"%PDF-1.4 a credit report made in the key ceremony test\n")
    key = c.home(issuer) / "keys" / f"{issuer.id}.member.json"
    made = dvp(
        "attest", str(doc), "--doc-type", doc_type, "--key", str(key),
        "--rpc", c.rpc_url(issuer.id), "--wait",
    )  # fmt: skip
    _timed(c, "attest_s", t0)
    t0 = time.monotonic()
    copy = c.home(verifier) / "report.pdf"
    shutil.copy(doc, copy)
    verdict = dvp(
        "verify", str(copy), "--code", made["verification_code"],
        "--genesis", str(c.home(verifier) / "genesis.json"), "--rpc", c.rpc_url(verifier.id),
    )  # fmt: skip
    _timed(c, "verify_s", t0)
    return {"attestation": made, "verdict": verdict}


def stop(c: Ceremony, grace_s: float = 10) -> None:
    """SIGTERM every node started here, SIGKILL what is left after ``grace_s``."""
    for p in c.procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in c.procs.values():
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=5)
