"""``dvp testnet``: the key ceremony played on one machine, for tests and rehearsal.

``create_network`` runs the steps of docs/OPERATIONS.md: each organisation runs
``init_org`` in its own folder (keys made there, never copied), the coordinator reads
only the exported descriptions and makes the genesis, every organisation gets a copy of
it and fills its node config's peers from the descriptions. Two layouts:

- ``per_org=True`` (``dvp testnet``): ``DIR/<org>/`` is one organisation's machine
  (``keys/``, ``nodes/<name>.toml``, ``data/<name>/``, ``genesis.json``, its
  description); ``DIR/coordinator/`` holds the descriptions received and the genesis.
- ``per_org=False`` (``dvp devnet up``): the same steps with every organisation's
  files in ``DIR`` itself (``keys/``, ``nodes/``, ``data/``, ``genesis.json``): one
  operator plays every organisation on one machine.

Either way ``DIR/devnet.json`` lists the nodes, so ``dvp devnet up|status|down --dir
DIR`` starts, shows and stops them (cli/devnet.py).

Which organisations: the template's members (configs/genesis.template.toml); the
first ``validators`` with the validator role run validators (more are added as
``validator<N>``), the rest keep their other roles. Observers are extra nodes named
``observer-N``, run by ``observer_member`` under its member key.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.common import EXIT_OK, CliError, emit
from cli.member_description import (
    ChainSettings,
    DescriptionError,
    genesis_from_descriptions,
    read_description,
)
from cli.network_index import NodeEntry, free_ports, write_index
from cli.org import init_org, node_config_text, peers_of
from ledger.genesis import GenesisError, read_template, write_genesis

DEFAULT_TEMPLATE = Path(__file__).resolve().parent.parent / "configs" / "genesis.template.toml"
COORDINATOR = "coordinator"


def plan_members(template: dict[str, Any], validators: int) -> list[dict[str, Any]]:
    """The template's members with exactly ``validators`` of them holding the role."""
    members = [dict(m) for m in template["members"]]
    have = [m["id"] for m in members if "validator" in m.get("roles", [])]
    for i in range(len(have), validators):  # larger networks: plain validator members
        members.append(
            {"id": f"validator{i + 1}", "name": f"Validator {i + 1}", "roles": ["validator"]}
        )
        have.append(members[-1]["id"])
    chosen = set(have[:validators])
    for m in members:  # validators beyond the count stay plain members
        if "validator" in m.get("roles", []) and m["id"] not in chosen:
            m["roles"] = [r for r in m["roles"] if r != "validator"]
    return members


def create_network(
    root: Path,
    *,
    validators: int = 4,
    observers: int = 0,
    template: Path = DEFAULT_TEMPLATE,
    params: dict[str, Any] | None = None,
    observer_member: str = "hkbank",
    per_org: bool = True,
) -> list[NodeEntry]:
    """Lay out a network in ``root`` (which must not hold one) by the ceremony's steps."""
    root.mkdir(parents=True, exist_ok=True)
    if (root / "devnet.json").exists():
        raise FileExistsError(f"{root} already holds a network")
    tpl = read_template(template)
    if params:
        tpl.setdefault("params", {}).update(params)
    members = plan_members(tpl, validators)
    if observers and observer_member not in {m["id"] for m in members}:
        raise GenesisError(f"observer_member {observer_member!r} is not a member")
    chosen = [m["id"] for m in members if "validator" in m["roles"]]
    ports = free_ports(2 * (len(chosen) + observers))
    p2p = {mid: ports[2 * i] for i, mid in enumerate(chosen)}

    def home(member: str) -> Path:
        return root / member if per_org else root

    # 1. Each organisation, on its own machine.
    exported = []
    for m in members:
        mid = m["id"]
        files = init_org(
            home(mid),
            member_id=mid,
            name=m.get("name", mid),
            roles=list(m.get("roles", [])),
            doc_types=list(m.get("doc_types", [])),
            p2p_address=f"127.0.0.1:{p2p[mid]}" if mid in p2p else None,
        )
        exported.append(files.description_file)
    # 2. The coordinator: only the descriptions it received.
    inbox = root / COORDINATOR if per_org else root
    if per_org:
        inbox.mkdir(exist_ok=True)
        exported = [Path(shutil.copy(f, inbox / f.name)) for f in exported]
    descs = [(str(f), read_description(f)) for f in exported]
    genesis = genesis_from_descriptions(
        descs, ChainSettings.from_template(tpl, int(time.time() * 1000))
    )
    write_genesis(inbox / "genesis.json", genesis)
    # 3. Every organisation: its copy of the genesis, its node configs.
    if per_org:
        for m in members:
            shutil.copy(inbox / "genesis.json", home(m["id"]) / "genesis.json")
    entries = [
        NodeEntry(
            mid,
            mid,
            "validator",
            home(mid) / "nodes" / f"{mid}.toml",
            p2p[mid],
            ports[2 * i + 1],
        )
        for i, mid in enumerate(chosen)
    ]
    for j in range(observers):
        i = len(chosen) + j
        name = f"observer-{j + 1}"
        where = home(observer_member) / "nodes" / f"{name}.toml"
        entries.append(
            NodeEntry(name, observer_member, "observer", where, ports[2 * i], ports[2 * i + 1])
        )
    all_descs = [d for _, d in descs]
    for e in entries:
        validator = e.role == "validator"
        e.config.parent.mkdir(parents=True, exist_ok=True)
        e.config.write_text(
            node_config_text(
                name=e.name,
                member=e.member,
                role=e.role,
                key_file=f"../keys/{e.member}.{'node' if validator else 'member'}.json",
                p2p_listen=f"127.0.0.1:{e.p2p_port}",
                rpc_listen=f"127.0.0.1:{e.rpc_port}",
                peers=peers_of(all_descs, e.member if validator else ""),
                rpc_open=True,
                header=f"node {e.name} ({e.role}) of {e.member}, on loopback; written by "
                f"`dvp {'testnet' if per_org else 'devnet up'}`",
            )
        )
    write_index(root, genesis, entries)
    return entries


def cmd_testnet(args: argparse.Namespace) -> int:
    root = Path(args.out)
    if root.exists() and any(root.iterdir()):
        raise CliError(f"{root} is not empty; give a new folder")
    try:
        entries = create_network(
            root,
            validators=args.orgs,
            observers=args.observers,
            template=Path(args.template) if args.template else DEFAULT_TEMPLATE,
        )
    except (GenesisError, DescriptionError) as exc:
        raise CliError(str(exc)) from None
    doc = json.loads((root / "devnet.json").read_text())
    orgs = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != COORDINATOR)
    out = {
        "dir": str(root),
        "genesis_hash": doc["genesis_hash"],
        "organisations": orgs,
        "nodes": [{"name": e.name, "config": str(e.config), "rpc_url": e.rpc_url} for e in entries],
    }

    def human() -> None:
        print(f"testnet in {root}: one folder per organisation: {', '.join(orgs)}")
        print(f"genesis hash {doc['genesis_hash']} (made in {root / COORDINATOR})")
        for e in entries:
            print(f"  {e.name:<14} dvp node run --config {e.config}")
        print(f"or start them all: dvp devnet up --dir {root}")

    emit(args, out, human)
    return EXIT_OK


def add_testnet_command(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``dvp testnet`` to the top-level subparsers (``cli.main``)."""
    from cli.errors import number

    p = add(
        sub,
        "testnet",
        "lay out a consortium by the key ceremony, one folder per organisation as on "
        "separate machines (own keys, config, data; no shared key folder); the genesis "
        "is made from the exported member descriptions only. Does not start nodes",
        "dvp testnet --orgs 4 --out net",
        cmd_testnet,
    )
    p.add_argument(
        "--orgs",
        type=number(1, 64, integer=True),
        default=4,
        help="organisations running a validator (default 4)",
    )
    p.add_argument(
        "--observers", type=number(0, 64, integer=True), default=0, help="observer nodes"
    )
    p.add_argument("--out", required=True, help="a new folder")
    p.add_argument("--template", help="genesis template (default: configs/genesis.template.toml)")
