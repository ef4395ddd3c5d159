"""``dvp audit replay``: the auditor's replay from the command line.

The logic is ``ledger.audit``; this module parses arguments, finds the genesis file,
shows a progress bar (rich, on stderr) and turns the report into one verdict line:

    N blocks, M transactions verified in S s (R tx/s)        exit 0
    (then the head, and the consent transactions checked: grants, revocations, accesses)
    FAILED at height H: <check>: <message>                   exit 1

Errors that are not a verdict on the chain are one line on stderr: exit 2 for bad
usage or configuration (no genesis, not this chain's data directory, a node's RPC that
pruned the blocks a replay from genesis needs), 3 for a node that cannot be reached.
``--datadir`` reads a node's data directory and never writes to it (it may be
read-only, or a running node's): the replay opens a snapshot of the store in
``--workdir`` (``ledger.store_snapshot``) and says so; a pruned store is replayed from
a certified snapshot (ledger/audit_snapshot.py).

cli/main.py registers the command with ``add_audit_commands(sub, add)``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cli.common import EXIT_FAIL, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, CliError
from cli.progress import ProgressBar
from cli.rpc_client import ENV_API_KEY, ENV_CACERT
from node.oneline import one_line

_DESCRIPTION = (
    "re-execute the chain from genesis: every certificate, transaction "
    "signature, tx/state/history root and rule, and the stored state tree"
)


def add_audit_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``dvp audit replay`` to the top-level subparsers ``sub`` (cli/main.py's
    ``build_parser``), using its ``add(parent, name, help, example, fn)`` helper."""
    audit = sub.add_parser("audit", help="replay and verify the chain from genesis").add_subparsers(
        dest="sub", metavar="SUBCOMMAND", required=True
    )
    p = add(
        audit,
        "replay",
        _DESCRIPTION,
        "dvp audit replay --datadir devnet/data/cnix   (genesis: devnet/genesis.json)",
        cmd_audit_replay,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--datadir",
        help="a node's data directory; never written to (read through a snapshot in "
        "--workdir, so it may be read-only or a running node's)",
    )
    src.add_argument("--rpc", help="a node's RPC URL, e.g. http://127.0.0.1:26701/")
    p.add_argument(
        "--genesis",
        help="the genesis file you trust (default with --datadir: "
        "genesis.json in it or up to two folders above it, "
        "e.g. devnet/genesis.json for devnet/data/<node>)",
    )
    p.add_argument(
        "--workdir",
        help="where to put the scratch ledger and the store's snapshot (default: the "
        "system temp dir; needs about the size of the chain, twice if the store's "
        "table files cannot be hard-linked from there)",
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get(ENV_API_KEY),
        help="your organisation's API key (Bearer; auditor or member role) for "
        f"--rpc; default ${ENV_API_KEY}",
    )
    p.add_argument(
        "--cacert",
        default=os.environ.get(ENV_CACERT),
        help=f"CA PEM to trust for an https:// --rpc; default ${ENV_CACERT}",
    )


def find_genesis(datadir: Path) -> Path | None:
    """The genesis file beside a data directory: ``<d>/genesis.json``, ``<d>/../``, or
    ``<d>/../../`` (a devnet's ``devnet/data/<node>`` -> ``devnet/genesis.json``)."""
    d = datadir.resolve()
    for folder in (d, d.parent, d.parent.parent):
        candidate = folder / "genesis.json"
        if candidate.is_file():
            return candidate
    return None


def _rates(p: Any) -> str:
    s = max(p.elapsed_s, 1e-9)
    if p.phase == "replay":
        return f"{p.done / s:,.0f} blocks/s  {p.transactions / s:,.0f} tx/s"
    return f"{p.transactions:,} entries"


def _bar(enabled: bool) -> ProgressBar:
    """Blocks, blocks/s and tx/s while replaying, then the state tree's versions."""
    labels = {
        "replay": "replaying blocks",
        "state_tree": "state tree versions",
        "headers": "certified headers",  # a pruned store: up to its snapshot
    }
    return ProgressBar(enabled, labels, _rates)


def _load_genesis(args: argparse.Namespace) -> tuple[Any, Path]:
    from ledger.genesis import GenesisError, read_genesis

    if args.genesis:
        path = Path(args.genesis)
    elif args.datadir:
        found = find_genesis(Path(args.datadir))
        if found is None:
            raise CliError(f"no genesis.json in or above {args.datadir}; pass --genesis")
        path = found
    else:
        raise CliError(
            "--rpc needs --genesis: the auditor trusts only its own copy of the "
            "genesis file, never the node's"
        )
    try:
        return read_genesis(path), path
    except GenesisError as exc:
        raise CliError(str(exc)) from None


def cmd_audit_replay(args: argparse.Namespace) -> int:
    """``dvp audit replay``: the exit status; errors are one line on stderr."""
    try:
        return _audit_replay(args)
    except CliError as exc:
        print(f"dvp audit: {one_line(str(exc))}", file=sys.stderr)
        return exc.code


def _audit_replay(args: argparse.Namespace) -> int:
    from cli.rpc_client import RpcClient

    rpc = None
    if args.rpc:
        try:
            rpc = RpcClient(args.rpc, api_key=args.api_key, cafile=args.cacert)
        except (ValueError, OSError) as exc:  # a malformed URL, an unreadable CA file
            raise CliError(str(exc)) from None
    try:
        return _replay(args, rpc)
    finally:
        if rpc is not None:
            rpc.close()


def _replay(args: argparse.Namespace, rpc: Any) -> int:
    from ledger.audit import (
        AuditReport,
        BlockSource,
        DatadirSource,
        RpcSource,
        SourcePruned,
        SourceRefused,
        SourceUnavailable,
        replay,
    )
    from ledger.errors import StoreError

    genesis, genesis_path = _load_genesis(args)
    source: BlockSource
    try:
        source = (
            DatadirSource(args.datadir, genesis, workdir=args.workdir)
            if args.datadir
            else RpcSource(rpc)
        )
    except StoreError as exc:
        raise CliError(f"{exc} (genesis: {genesis_path})") from None
    except SourceUnavailable as exc:
        code = EXIT_USAGE if args.datadir else EXIT_UNREACHABLE
        raise CliError(f"{args.datadir or args.rpc}: {exc}", code) from None
    try:
        with _bar(enabled=not args.json) as bar:
            report: AuditReport = replay(source, genesis, workdir=args.workdir, progress=bar)
    except SourcePruned as exc:
        raise CliError(
            f"{args.rpc}: {exc} (this node pruned old block bodies: replay against an "
            f"archive node's RPC, or this node's --datadir, which replays from a certified "
            f"snapshot)",
            EXIT_USAGE,
        ) from None
    except SourceRefused as exc:
        raise CliError(
            f"{args.rpc}: {exc} (an auditor needs an API key: --api-key or $DVP_API_KEY)", EXIT_FAIL
        ) from None
    except SourceUnavailable as exc:
        raise CliError(f"{args.rpc or args.datadir}: {exc}", EXIT_UNREACHABLE) from None
    except StoreError as exc:  # the scratch ledger (e.g. disk full), not the audited chain
        raise CliError(f"scratch ledger in {args.workdir or 'the temp dir'}: {exc}") from None
    finally:
        source.close()
    return _print_report(args, report, genesis_path)


def _print_report(args: argparse.Namespace, report: Any, genesis_path: Path) -> int:
    import json

    if args.json:
        doc = report.to_json()
        doc["genesis"] = str(genesis_path)
        print(json.dumps(doc, indent=2))
        return EXIT_OK if report.ok else EXIT_FAIL
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    f = report.failure
    if f is not None:
        print(f"FAILED at height {f.height}: {f.check}: {f.message}")
        print(
            f"verified before it: {report.blocks} blocks, {report.transactions} "
            f"transactions (genesis {genesis_path})"
        )
        return EXIT_FAIL
    print(
        f"{report.blocks} blocks, {report.transactions} transactions verified in "
        f"{report.elapsed_s:.1f} s ({report.tx_per_s:,.0f} tx/s)"
    )
    detail = (
        f"head {report.height} {report.head_block_id.hex()[:16]}, state root "
        f"{report.state_root.hex()[:16]}, genesis {genesis_path}"
    )
    if report.state_entries is not None:
        detail += (
            f"; stored state tree re-hashed: {report.state_entries:,} entries, "
            f"{report.state_versions} versions"
        )
    print(detail)
    print(
        f"consent: {report.grants} grants, {report.grant_revocations} revocations, "
        f"{report.accesses} accesses checked (each against a live grant)"
    )
    return EXIT_OK
