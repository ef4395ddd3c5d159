"""``dvp org init|peers``: one organisation's side of the key ceremony (docs/OPERATIONS.md).

``init`` runs on the organisation's own machine and writes its folder::

    OUT/keys/<id>.member.json             member key: signs its transactions (0600)
    OUT/keys/<id>.node.json               validators: node key, consensus + p2p (0600)
    OUT/nodes/<id>.toml                   node config skeleton (paths relative to it)
    OUT/<id>.member-description.json      public: what it sends to the coordinator

The private keys never leave OUT; only the description does (cli/member_description.py).
``peers`` prints the ``[p2p.peers]`` table of a node config from the other
organisations' descriptions. The same folder layout, one per organisation, is what
``dvp testnet`` lays out (cli/testnet.py); ``init_org`` is the function both use.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.common import EXIT_OK, CliError, command_group, emit
from cli.member_description import (
    DESCRIPTION_TYPE,
    FORMAT_VERSION,
    SUFFIX,
    DescriptionError,
    MemberDescription,
    description_files,
    description_from_json,
    read_description,
    write_description,
)
from ledger.errors import KeyFileError

#: The skeleton's listen addresses until the organisation sets its own.
DEFAULT_P2P_LISTEN = "0.0.0.0:26656"
DEFAULT_RPC_LISTEN = "127.0.0.1:26657"


@dataclass(frozen=True)
class OrgFiles:
    """What ``init_org`` wrote (paths) and the description it exported."""

    home: Path
    description: MemberDescription
    description_file: Path
    member_key: Path
    node_key: Path | None
    config: Path | None


def node_config_text(
    *,
    name: str,
    member: str,
    role: str,
    key_file: str,
    p2p_listen: str,
    rpc_listen: str,
    peers: Mapping[str, str],
    rpc_open: bool,
    header: str,
) -> str:
    """A node config in ``OUT/nodes/<name>.toml`` form: genesis, keys and data one
    folder up (``../genesis.json``, ``../keys/``, ``../data/<name>``)."""
    peer_lines = "\n".join(f'{k} = "{v}"' for k, v in peers.items())
    if not peers:
        peer_lines = (
            "# one line per other validator, from its description: `dvp org peers`\n"
            '# cnix = "203.0.113.7:26656"'
        )
    rpc_line = (
        "open = true   # no API credentials; the node warns about it at start"
        if rpc_open
        else "open = false  # clients need API keys: `dvp keys api` (docs/RPC.md)"
    )
    return f"""# {header}
[node]
name = "{member}"
role = "{role}"
key_file = "{key_file}"
genesis = "../genesis.json"
data_dir = "../data/{name}"

[p2p]
listen = "{p2p_listen}"

[p2p.peers]
{peer_lines}

[rpc]
listen = "{rpc_listen}"
{rpc_line}

[block]
linger_ms = 50

[log]
level = "info"
"""


def init_org(
    home: Path,
    *,
    member_id: str,
    name: str,
    roles: list[str],
    doc_types: list[str],
    p2p_address: str | None = None,
    passphrase: bytes | None = None,
    observer: bool = False,
) -> OrgFiles:
    """Make an organisation's keys in ``home/keys`` (0600), its node config skeleton
    (a validator, or with ``observer`` an observer under the member key) and its public
    description. Refuses to overwrite."""
    from ledger.crypto import KeyPair, write_key_file

    validator = "validator" in roles
    if validator and observer:
        raise CliError("a validator's organisation runs a validator node, not an observer")
    description_file = home / f"{member_id}{SUFFIX}"
    if description_file.exists():
        raise CliError(f"{description_file} exists: {member_id} was initialised in {home}")
    member_path = home / "keys" / f"{member_id}.member.json"
    node_path = home / "keys" / f"{member_id}.node.json" if validator else None
    member_key = KeyPair.generate()
    node_key = KeyPair.generate() if validator else None
    try:  # the description is checked before any file is written
        desc = description_from_json(
            {
                "type": DESCRIPTION_TYPE,
                "version": FORMAT_VERSION,
                "id": member_id,
                "name": name,
                "member_key": member_key.public_key.hex(),
                "roles": roles,
                "doc_types": doc_types,
                "node_key": node_key.public_key.hex() if node_key else None,
                "p2p_address": p2p_address,
            },
            f"the description of {member_id!r}",
        )
    except DescriptionError as exc:
        raise CliError(str(exc)) from None
    try:
        write_key_file(member_path, member_key, passphrase=passphrase)
        if node_key is not None and node_path is not None:
            write_key_file(node_path, node_key, passphrase=passphrase)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    config = None
    if validator or observer:
        config = home / "nodes" / f"{member_id}.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        role = "validator" if validator else "observer"
        config.write_text(
            node_config_text(
                name=member_id,
                member=member_id,
                role=role,
                key_file=f"../keys/{member_id}.{'node' if validator else 'member'}.json",
                p2p_listen=DEFAULT_P2P_LISTEN if p2p_address is None else _listen(p2p_address),
                rpc_listen=DEFAULT_RPC_LISTEN,
                peers={},
                rpc_open=False,
                header=f"{role} node of {member_id}; skeleton from `dvp org init` (put "
                "genesis.json one folder up, fill in [p2p.peers])",
            )
        )
    write_description(description_file, desc)
    return OrgFiles(home, desc, description_file, member_path, node_path, config)


def _listen(address: str) -> str:
    """Where to listen for an advertised ``host:port``: every interface, that port."""
    return f"0.0.0.0:{address.rpartition(':')[2]}"


def peers_of(descriptions: list[MemberDescription], own: str) -> dict[str, str]:
    """``[p2p.peers]`` of ``own``'s node: every other validator's advertised address."""
    missing = [d.id for d in descriptions if d.is_validator and d.p2p_address is None]
    if missing:
        raise CliError(f"validators {missing} gave no p2p_address in their descriptions")
    return {d.id: str(d.p2p_address) for d in descriptions if d.is_validator and d.id != own}


# ---------------------------------------------------------------------------- commands


def _split(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def cmd_org_init(args: argparse.Namespace) -> int:
    roles = _split(args.roles)
    if args.validator and "validator" not in roles:
        roles.append("validator")
    passphrase = None
    if args.passphrase_file:
        from ledger.keyfile import Passphrase

        try:
            passphrase = Passphrase(Path(args.passphrase_file)).get(Path(args.out), new=True)
        except KeyFileError as exc:
            raise CliError(str(exc)) from None
    files = init_org(
        Path(args.out),
        member_id=args.member,
        name=args.name,
        roles=roles,
        doc_types=_split(args.doc_types),
        p2p_address=args.p2p_address,
        passphrase=passphrase,
        observer=args.observer,
    )
    d = files.description
    out = {
        "member": d.id,
        "description": str(files.description_file),
        "member_key_file": str(files.member_key),
        "node_key_file": str(files.node_key) if files.node_key else None,
        "config": str(files.config) if files.config else None,
        "member_key": d.member_key,
        "node_key": d.node_key,
        "protected": passphrase is not None,
    }

    def human() -> None:
        print(f"organisation {d.id} initialised in {files.home}")
        print(f"  member key (private, 0600): {files.member_key}")
        if files.node_key:
            print(f"  node key   (private, 0600): {files.node_key}")
        if files.config:
            print(f"  node config skeleton:       {files.config}")
        print(f"send to the coordinator (public): {files.description_file}")
        print(f"  member key {d.member_key}")
        if d.node_key:
            print(f"  node key   {d.node_key}")

    emit(args, out, human)
    return EXIT_OK


def cmd_org_peers(args: argparse.Namespace) -> int:
    try:
        descs = [read_description(p) for p in description_files([Path(p) for p in args.paths])]
    except DescriptionError as exc:
        raise CliError(str(exc)) from None
    if args.member not in {d.id for d in descs}:
        raise CliError(f"no description of {args.member!r} among the files given")
    peers = peers_of(descs, args.member)
    emit(
        args,
        peers,
        lambda: print("[p2p.peers]\n" + "\n".join(f'{k} = "{v}"' for k, v in peers.items())),
    )
    return EXIT_OK


def add_org_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``dvp org init|peers`` to the top-level subparsers (``cli.main``)."""
    org = command_group(sub, "org", "one organisation's side of the key ceremony")
    p = add(
        org,
        "init",
        "on the organisation's own machine: make its member key (and node key for a "
        "validator) in OUT/keys (0600, never sent anywhere), a node config skeleton, "
        "and the public OUT/<id>.member-description.json for the coordinator",
        'dvp org init --member cnix --name "China Internet Exchange" '
        "--roles auditor --validator --p2p-address 203.0.113.7:26656 --out cnix",
        cmd_org_init,
    )
    p.add_argument("--member", required=True, help="the organisation's member id")
    p.add_argument("--name", required=True, help="its display name")
    p.add_argument(
        "--roles", default="", help="comma-separated: validator, issuer, verifier, auditor"
    )
    p.add_argument("--doc-types", default="", help="comma-separated document types it may attest")
    p.add_argument("--validator", action="store_true", help="it runs a validator (adds the role)")
    p.add_argument(
        "--observer",
        action="store_true",
        help="not a validator: write a skeleton for an observer node (it follows the "
        "chain under the member key)",
    )
    p.add_argument(
        "--p2p-address",
        help="validators: HOST:PORT (an IP) where the others reach its node; may be left "
        "out and set in the description before sending it",
    )
    p.add_argument("--out", required=True, help="the organisation's folder (created)")
    p.add_argument(
        "--passphrase-file",
        help="protect both keys with the passphrase in this file (docs/KEYS.md); "
        "default: unprotected",
    )
    p = add(
        org,
        "peers",
        "print a node config's [p2p.peers] table: every other validator's address, "
        "from the member descriptions",
        "dvp org peers descriptions/ --member cnix",
        cmd_org_peers,
    )
    p.add_argument("paths", nargs="+", metavar="DESCRIPTION|FOLDER")
    p.add_argument("--member", required=True, help="whose node the table is for")
