"""``dvp keys new|show|protect|unprotect|api``: key files and RPC API keys.

Key files are ledger/keyfile.py's (docs/KEYS.md): written 0600, refused when others may
read them, optionally under a passphrase. ``protect`` and ``unprotect`` rewrite a file in
place (a 0600 temporary file renamed over it), so the key's public half, and with it
the genesis and every config that names the file, stay as they are.

A passphrase is never taken from the command line (``ps`` would show it): it comes from
``--passphrase-file``, ``$DVP_KEY_PASSPHRASE_FILE``, ``$DVP_KEY_PASSPHRASE`` or, in a
terminal, a prompt (asked twice when it sets a new passphrase).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.common import EXIT_OK, PASSPHRASE_FILE_HELP, CliError, emit
from ledger.errors import KeyFileError

__all__ = ["add_keys_commands"]


def _passphrase(args: argparse.Namespace) -> Any:
    from ledger.keyfile import Passphrase

    return Passphrase.default(args.passphrase_file)


def cmd_keys_new(args: argparse.Namespace) -> int:
    from ledger.crypto import KeyPair, write_key_file

    key = KeyPair.generate()
    path = Path(args.file)
    if path.exists() and not args.force:  # before asking for a passphrase
        raise CliError(f"{path} already exists; refusing to overwrite a key")
    try:
        secret = _passphrase(args).get(path, new=True) if args.protect else None
        write_key_file(path, key, overwrite=args.force, passphrase=secret)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    out = {"file": args.file, "public_key": key.public_key.hex(), "protected": bool(secret)}
    emit(
        args,
        out,
        lambda: print(
            f"wrote {args.file}{' (passphrase-protected)' if secret else ''}\n"
            f"public key: {key.public_key.hex()}"
        ),
    )
    return EXIT_OK


def cmd_keys_show(args: argparse.Namespace) -> int:
    from ledger.keyfile import is_protected, read_public_key

    path = Path(args.file)
    try:
        public, protected = read_public_key(path), is_protected(path)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    emit(
        args,
        {"file": args.file, "public_key": public.hex(), "protected": protected},
        lambda: print(public.hex()),
    )
    return EXIT_OK


def _rewrite(args: argparse.Namespace, protect: bool) -> int:
    """Decrypt (or read) the key and write it back under a new passphrase (or none)."""
    from ledger.crypto import read_key_file, write_key_file
    from ledger.keyfile import is_protected

    path = Path(args.file)
    try:
        if is_protected(path) == protect:
            state = "already" if protect else "not"
            raise CliError(f"{path} is {state} passphrase-protected; nothing to do")
        source = _passphrase(args)
        key = read_key_file(path, source)
        secret = source.get(path, new=True) if protect else None
        write_key_file(path, key, overwrite=True, passphrase=secret)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    done = "protected with a passphrase" if protect else "no longer passphrase-protected"
    emit(
        args,
        {"file": args.file, "public_key": key.public_key.hex(), "protected": protect},
        lambda: print(f"{path}: {done} (public key {key.public_key.hex()})"),
    )
    return EXIT_OK


def cmd_keys_protect(args: argparse.Namespace) -> int:
    return _rewrite(args, protect=True)


def cmd_keys_unprotect(args: argparse.Namespace) -> int:
    return _rewrite(args, protect=False)


def cmd_keys_api(args: argparse.Namespace) -> int:
    from node.rpc.auth import CredentialStore, generate_api_key

    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    api = generate_api_key()
    try:  # the node parses the entry with the same rules; refuse here what it would refuse
        CredentialStore.from_config({args.member: {"roles": roles, "key_sha256": api.key_sha256}})
    except ValueError as exc:
        raise CliError(str(exc)) from None
    # json.dumps of a list of plain strings is also a TOML array.
    snippet = (
        f"[rpc.credentials.{args.member}]\nroles = {json.dumps(roles)}\n"
        f'key_sha256 = "{api.key_sha256}"'
    )
    emit(
        args,
        {
            "member": args.member,
            "roles": roles,
            "api_key": api.key,
            "key_sha256": api.key_sha256,
            "config": snippet,
        },
        lambda: print(
            f"API key for {args.member} (give it to them; it is shown only "
            f"once):\n  {api.key}\n\nAdd to the node's config (only the hash is "
            f"stored):\n\n{snippet}"
        ),
    )
    return EXIT_OK


def add_keys_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``dvp keys ...`` to the top-level subparsers (``cli.main``)."""
    keys = sub.add_parser(
        "keys", help="create, show and protect key files; mint API keys"
    ).add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)

    def passphrase_file(p: argparse.ArgumentParser) -> None:
        p.add_argument("--passphrase-file", help=PASSPHRASE_FILE_HELP)

    p = add(
        keys,
        "new",
        "create a key file (mode 0600); --protect puts it under a passphrase",
        "dvp keys new keys/cnix.node.json",
        cmd_keys_new,
    )
    p.add_argument("file")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.add_argument("--protect", action="store_true", help="encrypt it under a passphrase")
    passphrase_file(p)
    p = add(
        keys,
        "show",
        "print a key file's public key (no passphrase needed)",
        "dvp keys show keys/cnix.node.json",
        cmd_keys_show,
    )
    p.add_argument("file")
    p = add(
        keys,
        "protect",
        "encrypt a key file under a passphrase (Argon2id + XSalsa20-Poly1305); "
        "its public key stays the same",
        "dvp keys protect keys/cnix.node.json --passphrase-file /run/secrets/cnix",
        cmd_keys_protect,
    )
    p.add_argument("file")
    passphrase_file(p)
    p = add(
        keys,
        "unprotect",
        "decrypt a protected key file back to a plain one (still mode 0600)",
        "dvp keys unprotect keys/cnix.node.json",
        cmd_keys_unprotect,
    )
    p.add_argument("file")
    passphrase_file(p)
    p = add(
        keys,
        "api",
        "mint an RPC API key for a member organisation: prints the key "
        "(once) and the [rpc.credentials] entry with its SHA-256 for the "
        "node's config",
        "dvp keys api --member hkbank --roles verifier",
        cmd_keys_api,
    )
    p.add_argument("--member", required=True, help="the organisation's member id")
    p.add_argument(
        "--roles",
        default="verifier",
        help="comma-separated: verifier, auditor, operator, member (default verifier)",
    )
