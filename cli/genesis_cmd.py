"""``dvp genesis new|show``: make a genesis from the organisations' member descriptions
(the key ceremony, docs/OPERATIONS.md) or from a template and a folder of keys; show a
genesis file's hash, members, roles, keys and validators for every organisation to
check before it starts a node."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from cli.common import EXIT_OK, CliError, command_group, emit
from cli.errors import number
from ledger.types import Genesis


def _from_keys(args: argparse.Namespace, tpl: dict[str, Any], now_ms: int) -> Genesis:
    """The template's members, their public keys read from one folder of key files."""
    from ledger.genesis import genesis_from_template
    from ledger.keyfile import read_public_key

    keys_dir = Path(args.keys)
    member_keys, node_keys = {}, {}
    for m in tpl["members"]:
        member_keys[m["id"]] = read_public_key(keys_dir / f"{m['id']}.member.json")
        if "validator" in m.get("roles", []):
            node_keys[m["id"]] = read_public_key(keys_dir / f"{m['id']}.node.json")
    return genesis_from_template(tpl, member_keys, node_keys, now_ms)


def _from_descriptions(args: argparse.Namespace, tpl: dict[str, Any], now_ms: int) -> Genesis:
    """The key ceremony: members from their exported descriptions, chain from the template."""
    from cli.member_description import (
        ChainSettings,
        description_files,
        genesis_from_descriptions,
        read_description,
    )

    files = description_files([Path(p) for p in args.member_descriptions])
    descs = [(str(f), read_description(f)) for f in files]
    settings = ChainSettings.from_template(tpl, now_ms)
    if args.chain_id:
        settings = replace(settings, chain_id=args.chain_id)
    return genesis_from_descriptions(descs, settings)


def _with_purposes(g: Genesis, given: str | None, template: Any) -> Genesis:
    """``g`` with the consent purposes of ``--purposes a,b`` (else the template's ``purposes``,
    else the default, docs/CONSENT.md §3); each through the ledger's identifier check."""
    from ledger.errors import DecodeError

    if given is None and template is None:
        return g
    items = given.split(",") if given is not None else template
    if not isinstance(items, list) or not all(isinstance(p, str) for p in items):
        raise ValueError("template purposes: expected a list of identifiers")
    purposes = tuple(sorted({p.strip() for p in items if p.strip()}))
    out = replace(g, purposes=purposes)
    try:
        Genesis.decode(out.encode())
    except DecodeError as exc:
        raise ValueError(f"--purposes: {exc}") from None
    return out


def cmd_genesis_new(args: argparse.Namespace) -> int:
    from cli.member_description import DescriptionError
    from cli.testnet import DEFAULT_TEMPLATE
    from ledger.errors import KeyFileError
    from ledger.genesis import GenesisError, read_template, write_genesis

    if (args.keys is None) == (args.member_descriptions is None):
        raise CliError("give either --member-descriptions (the key ceremony) or --keys")
    if args.chain_id is not None and args.keys is not None:
        raise CliError("--chain-id goes with --member-descriptions (with --keys: the template's)")
    out = Path(args.out)
    if out.exists() and not args.force:
        raise CliError(f"{out} exists; pass --force to replace it")
    now_ms = args.time_ms if args.time_ms is not None else int(time.time() * 1000)
    try:
        tpl = read_template(Path(args.template or DEFAULT_TEMPLATE))
        make = _from_keys if args.keys is not None else _from_descriptions
        g = _with_purposes(make(args, tpl, now_ms), args.purposes, tpl.get("purposes"))
    except (GenesisError, DescriptionError, KeyFileError, ValueError) as exc:
        raise CliError(str(exc)) from None
    write_genesis(out, g)
    emit(
        args,
        {"file": str(out), "genesis_hash": g.hash.hex()},
        lambda: print(
            f"wrote {out}\ngenesis hash: {g.hash.hex()}\n"
            "send it to every organisation; each checks it with `dvp genesis show` "
            "and compares the hash with the others by another channel"
        ),
    )
    return EXIT_OK


def cmd_genesis_show(args: argparse.Namespace) -> int:
    from ledger.genesis import GenesisError, genesis_to_json, read_genesis

    try:
        g = read_genesis(Path(args.file))
    except GenesisError as exc:
        raise CliError(str(exc)) from None

    def human() -> None:
        from rich.console import Console
        from rich.table import Table

        c = Console()
        # plain print: the hash is compared by eye and must never be wrapped
        print(f"chain:        {g.chain_id}\ngenesis hash: {g.hash.hex()}")
        t = Table("member", "name", "roles", "document types", "member key", "node key")
        validators = {v.member_id: v.node_key.hex() for v in g.validators.validators}
        names = {1: "validator", 2: "issuer", 3: "verifier", 4: "auditor"}
        for m in g.members:
            t.add_row(
                m.member_id,
                m.name,
                ", ".join(names[r] for r in m.roles),
                ", ".join(m.doc_types),
                m.key.hex()[:16] + "...",
                validators[m.member_id][:16] + "..." if m.member_id in validators else "",
            )
        c.print(t)
        c.print(
            f"{len(g.members)} members, {len(validators)} validators; chain parameters: "
            + ", ".join(f"{n}={getattr(g.params, n)}" for n in type(g.params).NAMES)
        )

    emit(args, genesis_to_json(g), human)
    return EXIT_OK


def add_genesis_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``dvp genesis new|show`` to the top-level subparsers (``cli.main``)."""
    gen = command_group(sub, "genesis", "create and inspect genesis files")
    p = add(
        gen,
        "new",
        "the coordinator's step of the key ceremony: a genesis from the organisations' "
        "member descriptions (files or folders), chain id, document types and parameters "
        "from the template; or, with --keys, the template's members with their keys from "
        "one folder",
        "dvp genesis new --member-descriptions inbox/ --chain-id dvp-prod --out genesis.json",
        cmd_genesis_new,
    )
    p.add_argument("--template", help="genesis template (default: configs/genesis.template.toml)")
    p.add_argument(
        "--member-descriptions",
        nargs="+",
        metavar="FILE|FOLDER",
        help="<id>.member-description.json files from `dvp org init`, or folders of them",
    )
    p.add_argument(
        "--keys",
        help="instead: folder with <member>.member.json (and <member>.node.json for "
        "validators) of the template's members",
    )
    p.add_argument("--chain-id", help="chain id (default: the template's)")
    p.add_argument(
        "--purposes",
        metavar="A,B,...",
        help="the purposes data subjects may grant consent for (docs/CONSENT.md §3; "
        "default: the template's, else loan-application,account-opening); governance "
        "changes them later (dvp gov propose add-purpose)",
    )
    p.add_argument(
        "--time-ms",
        type=number(0, 2**53, integer=True),
        help="genesis time, milliseconds since 1970 (default: now)",
    )
    p.add_argument("--out", default="genesis.json")
    p.add_argument("--force", action="store_true")
    p = add(
        gen,
        "show",
        "show a genesis file's hash, members, roles, keys and validators (each "
        "organisation compares the hash with the others before starting its node)",
        "dvp genesis show genesis.json",
        cmd_genesis_show,
    )
    p.add_argument("file")
