"""What every ``dvp`` subcommand shares: exit statuses, the one-line error, JSON or human
output, the RPC connection options (``--rpc``, ``--api-key``, ``--cacert``), and how
long a signed transaction stays valid (``EXPIRY_BLOCKS``).

Lives outside ``cli/main.py`` on purpose: under ``python -m cli.main`` (how the devnet
starts nodes) that module runs as ``__main__``, so a ``CliError`` imported from
``cli.main`` by a command module would not be the class ``main`` catches.

Exit statuses: 0 success, 1 a failure the command reports (a transaction rejected), 2
bad usage or configuration, 3 a node that could not be reached (or did not answer
JSON-RPC). ``dvp verify`` adds one status per verdict (4-8, cli/verify_cmd.py); 70 is
an internal error (``cli.errors``).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.rpc_client import ENV_API_KEY, ENV_CACERT, RpcCallError, RpcClient

#: A transaction the CLI signs must commit within this many blocks of the node's height.
EXPIRY_BLOCKS = 500

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3

__all__ = [
    "EXIT_FAIL",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "CliError",
    "PASSPHRASE_FILE_HELP",
    "add_key_options",
    "add_rpc_options",
    "client",
    "command_group",
    "emit",
    "hex32",
    "read_key",
    "rpc_errors",
]


class CliError(Exception):
    """One error line for stderr and the exit status that goes with it."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def hex32(text: str, what: str, hint: str = "") -> bytes:
    """32 bytes from 64 hex characters, or a one-line CliError naming ``what``."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise CliError(f"{what}: expected 64 hex characters{hint}, got {text!r}")
    return raw


def emit(args: argparse.Namespace, data: Any, human: Callable[[], None]) -> None:
    """``data`` as JSON with ``--json``, else the human rendering."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2))
    else:
        human()


def command_group(sub: Any, name: str, help_: str) -> Any:
    """``dvp <name> SUBCOMMAND``: a top-level command whose subcommands are added to
    the returned subparsers."""
    return sub.add_parser(name, help=help_).add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True
    )


def add_rpc_options(
    p: argparse.ArgumentParser, rpc_help: str = "the node's RPC URL", *, required: bool = True
) -> None:
    """``--rpc`` (required unless told), ``--api-key`` and ``--cacert`` (both also from
    the env)."""
    p.add_argument("--rpc", required=required, help=rpc_help)
    p.add_argument(
        "--api-key",
        default=os.environ.get(ENV_API_KEY),
        help=f"API key of your organisation (Bearer); default ${ENV_API_KEY}",
    )
    p.add_argument(
        "--cacert",
        default=os.environ.get(ENV_CACERT),
        help="PEM file of the CA (or self-signed certificate) to trust for an "
        f"https:// RPC URL; default ${ENV_CACERT}, else the system's",
    )


def client(args: argparse.Namespace, timeout_s: float = 30.0) -> RpcClient:
    """An RPC client from ``add_rpc_options``'s arguments."""
    try:
        return RpcClient(
            args.rpc,
            api_key=getattr(args, "api_key", None),
            cafile=getattr(args, "cacert", None),
            timeout_s=timeout_s,
        )
    except (ValueError, OSError) as exc:
        raise CliError(str(exc)) from None


PASSPHRASE_FILE_HELP = (
    "file holding the passphrase of a protected key file (default "
    "$DVP_KEY_PASSPHRASE_FILE, else $DVP_KEY_PASSPHRASE, else asked on the terminal)"
)


def add_key_options(p: argparse.ArgumentParser, key_help: str) -> None:
    """``--key`` (required) and ``--passphrase-file`` (for a protected key)."""
    p.add_argument("--key", required=True, help=key_help)
    p.add_argument("--passphrase-file", help=PASSPHRASE_FILE_HELP)


def read_key(path: str, passphrase_file: str | None = None) -> Any:
    """A member key file (asking for its passphrase if protected), or a one-line CliError."""
    from ledger.crypto import KeyFileError, read_key_file
    from ledger.keyfile import Passphrase

    try:
        return read_key_file(Path(path), Passphrase.default(passphrase_file))
    except KeyFileError as exc:
        raise CliError(str(exc)) from None


def rpc_errors(fn: Callable[[], int]) -> int:
    """Run ``fn``; an RPC error becomes one line (exit 3 unreachable, 1 refused)."""
    try:
        return fn()
    except RpcCallError as exc:
        code = exc.data.get("code") if isinstance(exc.data, dict) else None
        if exc.code is None:
            raise CliError(str(exc), EXIT_UNREACHABLE) from None
        if exc.code == -32002:
            raise CliError(
                f"unauthorised: {exc} (pass --api-key or set ${ENV_API_KEY})", EXIT_FAIL
            ) from None
        raise CliError(f"{code + ': ' if code else ''}{exc}", EXIT_FAIL) from None
