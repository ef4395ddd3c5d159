"""``dvp config check FILE``: validate a node config without starting anything.

Runs the same loader as ``dvp node run`` (``node.config.load_config``: the strict
schema, addresses, credentials, TLS files), then opens what the node would open first:
the node key file and the genesis file, and checks the data directory is a directory
if it exists. Exit 0 and a summary if all is well; exit 2 and one line naming the file,
the key and what was expected if not.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.common import EXIT_OK, CliError, command_group, emit


def check_config(path: Path) -> dict[str, Any]:
    """A summary of a usable config; CliError (one line) otherwise."""
    from ledger.crypto import KeyFileError, read_key_file
    from ledger.genesis import GenesisError, read_genesis
    from node.config import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        key = read_key_file(cfg.key_file)
    except KeyFileError as exc:
        raise CliError(f"{cfg.path}: [node] key_file: {exc}") from None
    try:
        genesis = read_genesis(cfg.genesis)
    except GenesisError as exc:
        raise CliError(f"{cfg.path}: [node] genesis: {exc}") from None
    if cfg.data_dir.exists() and not cfg.data_dir.is_dir():
        raise CliError(f"{cfg.path}: [node] data_dir: {cfg.data_dir} exists and is not a directory")
    return {
        "file": str(cfg.path),
        "ok": True,
        "name": cfg.name,
        "role": cfg.role,
        "public_key": key.public_key.hex(),
        "chain_id": genesis.chain_id,
        "p2p_listen": str(cfg.p2p_listen),
        "peers": {k: str(v) for k, v in cfg.peers.items()},
        "rpc_listen": str(cfg.rpc_listen),
        "admin_listen": None if cfg.admin_listen is None else str(cfg.admin_listen),
        "rpc_open": cfg.rpc_open,
        "metrics_auth": cfg.metrics_auth,
        "tls": cfg.tls_cert is not None,
        "credentials": sorted(cfg.credentials),
        "log_level": cfg.log_level,
    }


def cmd_config_check(args: argparse.Namespace) -> int:
    s = check_config(Path(args.file))
    access = "OPEN MODE" if s["rpc_open"] else f"{len(s['credentials'])} API keys"
    tls = " (TLS)" if s["tls"] else ""
    emit(
        args,
        s,
        lambda: print(
            f"{s['file']}: ok ({s['role']} {s['name']} on chain {s['chain_id']}; "
            f"p2p {s['p2p_listen']} with {len(s['peers'])} peers, "
            f"RPC {s['rpc_listen']}{tls}, {access})"
        ),
    )
    return EXIT_OK


def add_config_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``dvp config check`` to the top-level subparsers (``cli.main``)."""
    config = command_group(sub, "config", "check node config files")
    p = add(
        config,
        "check",
        "validate a node config as `dvp node run` would, and open its key and "
        "genesis files; exit 0 if usable, else 2 with one line naming the key",
        "dvp config check devnet/nodes/cnix.toml",
        cmd_config_check,
    )
    p.add_argument("file", help="the node's TOML config")
