"""``devnet.json``: the index of a network's nodes on this machine (names, roles, config
files, loopback ports), written by ``dvp devnet up`` and ``dvp testnet``
(cli/testnet.py) and read by ``dvp devnet up|status|down`` (cli/devnet.py).

Config paths in the index are relative to its folder; a node's data folder is
``data/<name>`` beside its config's ``nodes/`` folder (``NodeEntry.data_dir``), which
is where its pid file and log live.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from cli.common import CliError
from ledger.types import Genesis

INDEX = "devnet.json"


@dataclass
class NodeEntry:
    name: str
    member: str
    role: str
    config: Path
    p2p_port: int
    rpc_port: int

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}/"

    @property
    def data_dir(self) -> Path:
        """``../data/<name>`` from the config, as every generated config says."""
        return self.config.parent.parent / "data" / self.name


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (bound then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_index(root: Path, genesis: Genesis, entries: list[NodeEntry]) -> None:
    nodes = [
        {
            "name": e.name,
            "member": e.member,
            "role": e.role,
            "config": str(e.config.relative_to(root)),
            "p2p_port": e.p2p_port,
            "rpc_port": e.rpc_port,
        }
        for e in entries
    ]
    doc = {"chain_id": genesis.chain_id, "genesis_hash": genesis.hash.hex(), "nodes": nodes}
    (root / INDEX).write_text(json.dumps(doc, indent=2) + "\n")


class DevnetError(CliError):
    """A devnet folder that cannot be used (its ``devnet.json`` is damaged)."""


def load_devnet(root: Path) -> list[NodeEntry]:
    path = root / INDEX
    try:
        doc = json.loads(path.read_text())
        return [
            NodeEntry(
                str(n["name"]),
                str(n["member"]),
                str(n["role"]),
                root / str(n["config"]),
                int(n["p2p_port"]),
                int(n["rpc_port"]),
            )
            for n in doc["nodes"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DevnetError(
            f"{path} is not a devnet description ({type(exc).__name__}: {exc}); "
            "remove the folder and run `dvp devnet up` again"
        ) from None
