"""``dvp genesis new|show``: fill a genesis template with the members' keys; show a
genesis file's members, roles and hash."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.common import EXIT_OK, CliError, command_group, emit


def cmd_genesis_new(args: argparse.Namespace) -> int:
    from cli.devnet_files import DEFAULT_TEMPLATE
    from ledger.genesis import GenesisError, genesis_from_template, read_template, write_genesis
    from ledger.keyfile import read_public_key

    try:
        tpl = read_template(Path(args.template or DEFAULT_TEMPLATE))
        keys_dir = Path(args.keys)
        member_keys, node_keys = {}, {}
        for m in tpl["members"]:
            member_keys[m["id"]] = read_public_key(keys_dir / f"{m['id']}.member.json")
            if "validator" in m.get("roles", []):
                node_keys[m["id"]] = read_public_key(keys_dir / f"{m['id']}.node.json")
        g = genesis_from_template(tpl, member_keys, node_keys, int(time.time() * 1000))
    except (GenesisError, ValueError) as exc:
        raise CliError(str(exc)) from None
    out = Path(args.out)
    if out.exists() and not args.force:
        raise CliError(f"{out} exists; pass --force to replace it")
    write_genesis(out, g)
    emit(
        args,
        {"file": str(out), "genesis_hash": g.hash.hex()},
        lambda: print(f"wrote {out}\ngenesis hash: {g.hash.hex()}"),
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
        c.print(f"[bold]chain[/bold] {g.chain_id}   [bold]genesis hash[/bold] {g.hash.hex()}")
        t = Table("member", "name", "roles", "document types", "validator")
        validators = {v.member_id for v in g.validators.validators}
        names = {1: "validator", 2: "issuer", 3: "verifier", 4: "auditor"}
        for m in g.members:
            t.add_row(
                m.member_id,
                m.name,
                ", ".join(names[r] for r in m.roles),
                ", ".join(m.doc_types),
                "yes" if m.member_id in validators else "",
            )
        c.print(t)

    emit(args, genesis_to_json(g), human)
    return EXIT_OK


def add_genesis_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``dvp genesis new|show`` to the top-level subparsers (``cli.main``)."""
    gen = command_group(sub, "genesis", "create and inspect genesis files")
    p = add(
        gen,
        "new",
        "fill a genesis template with the members' keys",
        "dvp genesis new --keys keys --out genesis.json",
        cmd_genesis_new,
    )
    p.add_argument("--template", help="genesis template (default: configs/genesis.template.toml)")
    p.add_argument(
        "--keys",
        required=True,
        help="folder with <member>.member.json (and <member>.node.json for validators)",
    )
    p.add_argument("--out", default="genesis.json")
    p.add_argument("--force", action="store_true")
    p = add(
        gen,
        "show",
        "show a genesis file's members, roles and hash",
        "dvp genesis show genesis.json",
        cmd_genesis_show,
    )
    p.add_argument("file")
