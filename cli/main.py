"""The ``dvp`` command: parse arguments, load config, run (thin, like uvicorn's main).

Every subcommand has ``--help`` with an example, ``--json`` where it prints data, one
clear error line instead of a traceback (``cli.errors``), and an exit status that means
something (``cli.errors.EXIT_STATUSES``, shown by ``dvp --help``); ``dvp verify`` exits
with its verdict besides (cli/verify_cmd.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_USAGE,
    PASSPHRASE_FILE_HELP,
    CliError,
    add_key_options,
    add_rpc_options,
    client,
    emit,
    hex32,
    read_key,
    rpc_errors,
)
from cli.errors import EXIT_STATUSES, Parser, number, run_command

# ---------------------------------------------------------------------------- node


def cmd_node_run(args: argparse.Namespace) -> int:
    from node.runner import run_node

    pfile = Path(args.passphrase_file) if args.passphrase_file else None
    return run_node(Path(args.config), pfile, state_sync=args.state_sync)


def cmd_node_compact(args: argparse.Namespace) -> int:
    """Offline maintenance: compact a stopped node's ledger store."""
    from ledger.chain import Ledger
    from ledger.errors import LedgerError
    from ledger.genesis import GenesisError, read_genesis
    from node.config import ConfigError, load_config

    try:
        cfg = load_config(Path(args.config))
        genesis = read_genesis(cfg.genesis)
        with Ledger.open(cfg.data_dir / "ledger", genesis, create=False) as lg:
            before = lg.store.disk_bytes()
            t0 = time.monotonic()
            lg.store.compact()
            after = lg.store.disk_bytes()
            height = lg.height
    except (ConfigError, GenesisError, LedgerError, OSError) as exc:
        raise CliError(str(exc), EXIT_FAIL) from None
    out = {
        "height": height,
        "bytes_before": before,
        "bytes_after": after,
        "seconds": round(time.monotonic() - t0, 1),
    }
    emit(
        args,
        out,
        lambda: print(
            f"compacted the ledger store at height {height}: {before / 1e6:,.1f} MB -> "
            f"{after / 1e6:,.1f} MB in {out['seconds']} s"
        ),
    )
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    def run() -> int:
        with client(args, timeout_s=5) as c:
            st = c.call("status")
        emit(args, st, lambda: print("\n".join(f"{k:>20}: {v}" for k, v in st.items())))
        return EXIT_OK

    return rpc_errors(run)


# ---------------------------------------------------------------------------- devnet


def cmd_devnet_up(args: argparse.Namespace) -> int:
    from cli import devnet

    root = Path(args.dir)
    try:
        entries = devnet.up(root, nodes=args.nodes, observers=args.observers, wait_s=args.wait)
    except (TimeoutError, RuntimeError) as exc:
        raise CliError(str(exc), EXIT_FAIL) from None
    rows = devnet.status(root)
    emit(args, rows, lambda: _devnet_table(rows, f"devnet in {root} is up"))
    _ = entries
    return EXIT_OK


def _devnet_table(rows: list[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        "node", "role", "pid", "RPC URL", "height", "last block", "head age", "peers", "ready",
        title=title,
    )  # fmt: skip
    for r in rows:
        age = r.get("head_age_ms")
        ready = r.get("ready")
        t.add_row(
            r["name"],
            r["role"],
            str(r["pid"] or "down"),
            r["rpc_url"],
            str(r["height"] if r["height"] is not None else "-"),
            (r["last_block_id"] or "-")[:16],
            "-" if age is None else f"{age / 1000:.1f} s",
            str(r["peers"] if r.get("peers") is not None else "-"),
            "-" if ready is None else "yes" if ready else "no: " + ", ".join(r["failing"] or []),
        )
    Console().print(t)


def cmd_devnet_status(args: argparse.Namespace) -> int:
    from cli import devnet

    root = Path(args.dir)
    if not (root / "devnet.json").exists():
        raise CliError(f"no devnet in {root}; start one with `dvp devnet up --dir {root}`")
    rows = devnet.status(root)
    emit(args, rows, lambda: _devnet_table(rows, f"devnet in {root}"))
    return EXIT_OK if all(r["pid"] for r in rows) else EXIT_FAIL


def cmd_devnet_down(args: argparse.Namespace) -> int:
    from cli import devnet

    root = Path(args.dir)
    if not (root / "devnet.json").exists():
        raise CliError(f"no devnet in {root}")
    stopped = devnet.down(root)
    emit(args, {"stopped": stopped}, lambda: print(f"stopped: {', '.join(stopped) or 'none'}"))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from cli.demo import run_demo

    return run_demo(Path(args.dir) if args.dir else None, keep=args.keep, as_json=args.json)


def cmd_attest(args: argparse.Namespace) -> int:
    from cli.documents import attest_file

    subject = b""
    if args.subject is not None:
        subject = hex32(args.subject, "--subject", " (the subject's key, from dvp subject key)")

    def run() -> int:
        valid_until = int((time.time() + args.valid_days * 86400) * 1000) if args.valid_days else 0
        with client(args) as c:
            a = attest_file(
                c,
                read_key(args.key, args.passphrase_file),
                Path(args.file),
                args.doc_type,
                valid_until_ms=valid_until,
                wait=args.wait,
                subject=subject,
            )
        data = {
            "commitment": a.commitment.hex(),
            "verification_code": a.code,
            "tx_id": a.tx_id,
            "status": a.status,
            "height": a.height,
        }
        emit(
            args,
            data,
            lambda: print(
                f"commitment:        {a.commitment.hex()}\nverification code: {a.code}\n"
                f"transaction:       {a.tx_id} ({a.status}"
                f"{f' at block {a.height}' if a.height else ''})"
            ),
        )
        return EXIT_OK

    if not Path(args.file).is_file():
        raise CliError(f"{args.file} is not a file")
    return rpc_errors(run)


def cmd_revoke(args: argparse.Namespace) -> int:
    from cli.documents import commitment_of, revoke
    from ledger.commitment import CodeError
    from ledger.types import RevokeReason

    reasons = ", ".join(r.name.lower().replace("_", "-") for r in RevokeReason)
    try:
        reason = RevokeReason[args.reason.upper().replace("-", "_")]
    except KeyError:
        raise CliError(f"--reason one of {reasons}") from None
    if args.code is not None:  # a file and its verification code, hashed here
        if not Path(args.commitment).is_file():
            raise CliError(f"{args.commitment} is not a file (with --code, give the document)")
        try:
            commitment = commitment_of(Path(args.commitment), args.code)
        except CodeError as exc:
            raise CliError(f"verification code: {exc}") from None
    else:
        try:
            commitment = bytes.fromhex(args.commitment)
            assert len(commitment) == 32
        except (ValueError, AssertionError):
            raise CliError(
                "COMMITMENT is 64 hex characters (or give the document: FILE --code CODE)"
            ) from None

    def run() -> int:
        with client(args) as c:
            key = read_key(args.key, args.passphrase_file)
            r = revoke(c, key, commitment, reason, wait=args.wait)
        where = f" at block {r['height']}" if r.get("height") else ""
        emit(args, r, lambda: print(f"revocation {r['tx_id']}: {r['status']}{where}"))
        return EXIT_OK

    return rpc_errors(run)


# ---------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = Parser(
        prog="dvp",
        formatter_class=fmt,
        description="dvp: a consortium ledger for cross-border document verification.\n\n"
        "Start a local 4-member consortium:  dvp devnet up --dir devnet\n"
        "Key ceremony (docs/OPERATIONS.md):   dvp org init, dvp genesis new, dvp genesis show\n"
        "Run one node from its config:        dvp node run --config node.toml\n"
        "The applicant's consent and log:     dvp subject new|key|grant|revoke|grants|log",
        epilog=EXIT_STATUSES,
    )
    from cli.version import VersionAction

    parser.add_argument(
        "--version", action=VersionAction, help="version, protocol version, C fast path in use"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(
        parent: Any,
        name: str,
        help_: str,
        example: str,
        fn: Callable[..., int],
        json_flag: bool = True,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name, help=help_, description=f"{help_}\n\nexample:\n  {example}", formatter_class=fmt
        )
        p.set_defaults(fn=fn)
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON for scripts")
        return p

    from cli.keys_cmd import add_keys_commands

    add_keys_commands(sub, add)

    from cli.genesis_cmd import add_genesis_commands

    add_genesis_commands(sub, add)

    from cli.org import add_org_commands

    add_org_commands(sub, add)

    from cli.testnet import add_testnet_command

    add_testnet_command(sub, add)

    nodep = sub.add_parser("node", help="run a node").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True
    )
    p = add(
        nodep,
        "run",
        "run a validator or observer node until SIGTERM/SIGINT; its log "
        "is already JSON, one object a line on stderr (so no --json). Its stores "
        "are checked before it serves anything. Exit status: 0 stopped by a "
        "signal, 2 config, key, genesis or store unusable, 4 the store is damaged "
        "(`dvp store resync` rebuilds it from peers), 5 the consortium runs a protocol "
        "version this build does not support (upgrade the node)",
        "dvp node run --config devnet/nodes/cnix.toml",
        cmd_node_run,
        json_flag=False,
    )
    p.add_argument("--config", required=True, help="the node's TOML config")
    p.add_argument("--passphrase-file", help=PASSPHRASE_FILE_HELP)
    p.add_argument(
        "--state-sync",
        action="store_true",
        help="as [node] state_sync = true: an empty store joins from a peer's certified "
        "state snapshot instead of replaying every block (docs/PROOFS.md §14)",
    )
    p = add(
        nodep,
        "compact",
        "with the node stopped, compact its ledger store: reclaims "
        "the space of pruned state versions that LevelDB otherwise "
        "frees only as it gets round to those key ranges",
        "dvp node compact --config devnet/nodes/cnix.toml",
        cmd_node_compact,
    )
    p.add_argument("--config", required=True, help="the node's TOML config")

    p = add(
        sub,
        "status",
        "a node's height, view, primary, peers and mempool",
        "dvp status --rpc http://127.0.0.1:26701/",
        cmd_status,
    )
    add_rpc_options(p)

    dev = sub.add_parser("devnet", help="a local consortium on loopback").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True
    )
    p = add(
        dev,
        "up",
        "create (if needed) and start a local consortium; restarts nodes "
        "that are down, keeping their data",
        "dvp devnet up --dir devnet --nodes 4 --observers 1",
        cmd_devnet_up,
    )
    p.add_argument("--dir", default="devnet")
    p.add_argument(
        "--nodes", type=number(1, 64, integer=True), default=4, help="validators (default 4)"
    )
    p.add_argument(
        "--observers", type=number(0, 64, integer=True), default=0, help="non-voting observer nodes"
    )
    p.add_argument("--wait", type=number(0, 3600), default=60.0, help="seconds to wait for commits")
    p = add(
        dev,
        "status",
        "each node's role, pid, RPC URL, height, last block, head age (by the node's "
        "clock), connected peers and readiness (/readyz; which checks fail)",
        "dvp devnet status --dir devnet",
        cmd_devnet_status,
    )
    p.add_argument("--dir", default="devnet")
    p = add(
        dev,
        "down",
        "stop every node of the devnet (SIGTERM, then SIGKILL)",
        "dvp devnet down --dir devnet",
        cmd_devnet_down,
    )
    p.add_argument("--dir", default="devnet")

    p = add(
        sub,
        "attest",
        "attest a document: prints its commitment and the verification code to print on it",
        "dvp attest report.pdf --doc-type credit-report --key keys/szcredit.member.json "
        "--rpc http://127.0.0.1:26702/ --wait",
        cmd_attest,
    )
    p.add_argument("file")
    p.add_argument("--doc-type", required=True)
    add_key_options(p, "the issuer's member key file")
    add_rpc_options(p)
    p.add_argument(
        "--valid-days", type=number(0, 36500), default=0, help="expires after N days (0: never)"
    )
    p.add_argument("--wait", action="store_true", help="return once committed")
    p.add_argument(
        "--subject",
        metavar="PUBKEY",
        help="bind the document to its data subject's key (from `dvp subject key`): then "
        "every verification needs the subject's consent (docs/CONSENT.md)",
    )
    p = add(
        sub,
        "revoke",
        "withdraw an attestation (original issuer only)",
        "dvp revoke 3f9a... --reason data-changed --key keys/szcredit.member.json "
        "--rpc http://127.0.0.1:26702/",
        cmd_revoke,
    )
    p.add_argument("commitment", metavar="COMMITMENT|FILE", help="64 hex, or the document")
    p.add_argument("--code", help="with a FILE: its verification code (commitment computed here)")
    p.add_argument("--reason", required=True)
    add_key_options(p, "the issuer's member key file")
    add_rpc_options(p)
    p.add_argument("--wait", action="store_true")
    from cli.verify_cmd import add_verify_command

    add_verify_command(sub, add)
    from cli.subject import add_subject_commands

    add_subject_commands(sub, add)
    from cli.audit import add_audit_commands

    add_audit_commands(sub, add)
    from cli.gov import add_gov_commands

    add_gov_commands(sub, add)
    from cli.store_cmd import add_store_commands

    add_store_commands(sub, add)
    from cli.config_cmd import add_config_commands

    add_config_commands(sub, add)

    p = add(
        sub,
        "demo",
        "the loan-verification story on a local consortium; --json prints "
        "the outcomes as JSON (narration on stderr)",
        "dvp demo",
        cmd_demo,
    )
    p.add_argument("--dir", help="devnet folder to use (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="leave the devnet running")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    fn = getattr(args, "fn", None)
    if fn is None:
        parser.print_help()
        return EXIT_USAGE
    return run_command(args.command, lambda: fn(args))


if __name__ == "__main__":
    sys.exit(main())
