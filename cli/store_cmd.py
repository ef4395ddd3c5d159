"""``dvp store check`` and ``dvp store resync``: an operator's view of a node's stores.

The logic is ``node.stores`` (the checks) and ``node.resync`` (the rebuild); this module
parses arguments, shows a progress bar (rich, on stderr) and prints one verdict.

    dvp store check --datadir D      the full check, on a snapshot: D is never written
    dvp store resync --config C      rebuild the node's ledger store from its peers
    dvp store prune --datadir D --keep N   drop block bodies but the newest N (offline)

cli/main.py registers the commands with ``add_store_commands(sub, add)``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from cli.audit import find_genesis
from cli.common import EXIT_FAIL, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE, CliError
from cli.progress import ProgressBar

_CHECK_EXITS = """
exit status:
  0  the store is intact
  1  the store is damaged (the line says what and where)
  2  bad usage: no store or genesis there, another chain's store"""

_RESYNC_EXITS = """
The node must be stopped. An intact store is left alone (a node catches up from its
peers by itself); a damaged, half-created or missing one is moved aside to
<data_dir>/ledger.damaged-<time> (delete it when satisfied) and rebuilt: the node's
own block sync fetches every block from the peers in the config, verifies each
certificate against the validator set in force (from the genesis file on) and
re-executes each block, until peers that include an honest one (f + 1) have nothing
newer. The consensus database (this validator's signing record) cannot be rebuilt from
peers: if it is damaged, resync stops unless --new-signing-record, which moves it aside
too. The node then starts with an empty record and may sign a vote that conflicts with
one it signed before the damage (its peers record that as equivocation evidence):
count it among the f faulty validators until the chain is past the heights it may have
voted on.

exit status:
  0  rebuilt (or intact: nothing to do)
  1  refused: the signing record is damaged (see --new-signing-record)
  2  bad usage: config, genesis or keys unusable, the node is running
  3  the peers did not answer within --timeout (what was fetched is kept)"""


_PRUNE_EXITS = """
The node must be stopped (its running store is locked). Headers, certificates, state
and indexes stay; proofs and blocks below the kept range are then answered with error
-32006 ("ask an archive node"), and `dvp audit replay --datadir` replays from a
certified snapshot. Set [ledger] retain_blocks = N in the node's config too, or the
node keeps every body it commits from now on (it never restores pruned ones).

exit status:
  0  pruned (or nothing to prune)
  2  bad usage: no store or genesis there, the node is running"""


def add_store_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``dvp store check`` and ``dvp store resync`` to the top-level subparsers
    (cli/main.py's ``build_parser``), using its ``add(parent, name, help, example, fn)``."""
    store = sub.add_parser(
        "store", help="check a node's stores, rebuild them from peers"
    ).add_subparsers(dest="sub", metavar="SUBCOMMAND", required=True)
    p = add(
        store,
        "check",
        "check a node's data directory in full: LevelDB's checksums of every table, the "
        "hash chain and certificate of every block, the indexes, every node of the "
        "state tree, the signing record; read through a snapshot, so the directory is "
        "never written (it may be read-only, or a running node's)",
        "dvp store check --datadir devnet/data/cnix   (genesis: devnet/genesis.json)",
        cmd_store_check,
    )
    p.epilog = _CHECK_EXITS
    p.add_argument("--datadir", required=True, help="the node's data directory")
    p.add_argument(
        "--genesis",
        help="the genesis file (default: genesis.json in or up to two folders above "
        "--datadir, e.g. devnet/genesis.json for devnet/data/<node>)",
    )
    p.add_argument(
        "--workdir",
        help="where to put the snapshot (default: the system temp dir; table files are "
        "hard-linked when on the same file system, else copied)",
    )
    p = add(
        store,
        "resync",
        "rebuild a stopped node's damaged or lost ledger store from its peers, "
        "verifying every block and certificate against the genesis file",
        "dvp store resync --config devnet/nodes/webank.toml",
        cmd_store_resync,
    )
    p.epilog = _RESYNC_EXITS
    p.add_argument(
        "--config",
        required=True,
        help="the node's config: its data_dir is rebuilt, from its peers, under its keys",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="give up after this many seconds without catching up (default 300)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even an intact store")
    p.add_argument(
        "--new-signing-record",
        action="store_true",
        help="if the consensus database is damaged, move it aside and start an empty "
        "signing record (read the risk above first)",
    )
    p = add(
        store,
        "prune",
        "delete the block bodies (transactions) of a stopped node's ledger store but the "
        "newest N, keeping headers, certificates, indexes and state, and compact it",
        "dvp store prune --datadir devnet/data/webank --keep 100000",
        cmd_store_prune,
    )
    p.epilog = _PRUNE_EXITS
    p.add_argument("--datadir", required=True, help="the (stopped) node's data directory")
    p.add_argument(
        "--keep", required=True, type=int, help="how many of the newest block bodies to keep"
    )
    p.add_argument("--genesis", help="the genesis file (default: as for `dvp store check`)")


# --------------------------------------------------------------------------- check


def _check_rates(p: Any) -> str:
    s = max(p.elapsed_s, 1e-9)
    if p.phase == "scan":
        return f"{p.done:,} entries read, {p.done / s:,.0f}/s"
    if p.phase == "blocks":
        return f"{p.transactions:,} transactions"
    return f"{p.transactions:,} entries"


def cmd_store_check(args: argparse.Namespace) -> int:
    """``dvp store check``: the exit status (a ``CliError`` is cli/main.py's one line)."""
    from ledger.errors import StoreError
    from ledger.genesis import GenesisError, read_genesis
    from node.stores import check_datadir

    datadir = Path(args.datadir)
    if not datadir.is_dir():
        raise CliError(f"{datadir} is not a directory (a node's data directory)")
    genesis_path = Path(args.genesis) if args.genesis else find_genesis(datadir)
    if genesis_path is None:
        raise CliError(f"no genesis.json in or above {datadir}; pass --genesis")
    try:
        genesis = read_genesis(genesis_path)
    except GenesisError as exc:
        raise CliError(str(exc)) from None
    labels = {"scan": "reading every table", "blocks": "blocks", "state_tree": "state tree"}
    try:
        with ProgressBar(not args.json, labels, _check_rates) as bar:
            found = check_datadir(
                datadir,
                genesis,
                workdir=Path(args.workdir) if args.workdir else None,
                progress=bar,
            )
    except StoreError as exc:
        raise CliError(str(exc)) from None
    report = found.ledger
    doc = {
        "ok": found.ok,
        "datadir": str(datadir),
        "genesis": str(genesis_path),
        "damage": found.damage,
        "height": None if report is None else report.height,
        "blocks": None if report is None else report.blocks,
        "transactions": None if report is None else report.transactions,
        "state_versions": None if report is None else report.state_versions,
        "state_entries": None if report is None else report.state_entries,
        "consensus_entries": found.consensus_entries,
        "elapsed_s": round(found.elapsed_s, 3),
        "notes": found.notes,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return EXIT_OK if found.ok else EXIT_FAIL
    for note in found.notes:
        print(f"note: {note}", file=sys.stderr)
    if not found.ok:
        print(f"DAMAGED: {found.damage}")
        print(
            "with the node stopped, `dvp store resync --config <its config>` rebuilds the "
            "ledger store from its peers"
        )
        return EXIT_FAIL
    assert report is not None
    consensus = (
        "no consensus database"
        if found.consensus_entries is None
        else f"consensus database intact ({found.consensus_entries} entries read)"
    )
    print(
        f"store intact: {datadir} at height {report.height}: {report.blocks} blocks and "
        f"{report.transactions} transactions, {report.state_entries:,} state entries in "
        f"{report.state_versions} versions; {consensus} (checked in {found.elapsed_s:.1f} s)"
    )
    return EXIT_OK


# --------------------------------------------------------------------------- prune


def cmd_store_prune(args: argparse.Namespace) -> int:
    """``dvp store prune``: the exit status (a ``CliError`` is cli/main.py's one line)."""
    from ledger.audit import ledger_store_path
    from ledger.chain import Ledger
    from ledger.errors import StoreError
    from ledger.genesis import GenesisError, read_genesis

    if args.keep < 1:
        raise CliError(
            f"--keep must be at least 1 (the head's body is always kept), got {args.keep}"
        )
    datadir = Path(args.datadir)
    genesis_path = Path(args.genesis) if args.genesis else find_genesis(datadir)
    if genesis_path is None:
        raise CliError(f"no genesis.json in or above {datadir}; pass --genesis")
    try:
        genesis = read_genesis(genesis_path)
        with Ledger.open(ledger_store_path(datadir), genesis, create=False) as lg:
            before = lg.store.disk_bytes()
            lg.retain_blocks = args.keep
            deleted = lg.prune_bodies()
            if deleted:
                lg.store.compact()
            after, floor, head = lg.store.disk_bytes(), lg.store.bodies_from, lg.height
    except (GenesisError, StoreError) as exc:
        raise CliError(str(exc)) from None
    doc = {
        "pruned_bodies": deleted,
        "bodies_from": floor,
        "height": head,
        "disk_bytes_before": before,
        "disk_bytes_after": after,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(
            f"pruned {deleted} block bodies: {datadir} keeps bodies {floor}..{head}; "
            f"disk {before:,} -> {after:,} bytes"
        )
    return EXIT_OK


# --------------------------------------------------------------------------- resync


def cmd_store_resync(args: argparse.Namespace) -> int:
    """``dvp store resync``: the exit status (a ``CliError`` is cli/main.py's one line)."""
    import trio

    from ledger.crypto import KeyFileError
    from ledger.errors import LedgerError
    from ledger.genesis import GenesisError
    from node.config import ConfigError, load_config
    from node.logs import setup_logging
    from node.p2p_transport import libp2p_transport
    from node.resync import ResyncError, resync

    if not math.isfinite(args.timeout) or args.timeout <= 0:
        raise CliError(f"--timeout must be a positive number of seconds, not {args.timeout}")
    try:
        cfg = load_config(Path(args.config))
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    setup_logging(cfg.name, "warning")  # the node's own log lines: only what goes wrong
    labels = {"resync": "fetching certified blocks"}
    try:
        with ProgressBar(not args.json, labels, lambda p: f"height {p.done:,}") as bar:

            def progress(height: int, target: int) -> None:
                from ledger.audit import AuditProgress

                bar(AuditProgress("resync", height, height, target, 0, 0.0))

            result = trio.run(
                partial(
                    resync,
                    cfg,
                    libp2p_transport,
                    timeout_s=args.timeout,
                    force=args.force,
                    new_signing_record=args.new_signing_record,
                    progress=progress,
                )
            )
    except ResyncError as exc:
        code = EXIT_UNREACHABLE if exc.unreachable else EXIT_FAIL
        if "stop the node" in str(exc):
            code = EXIT_USAGE
        raise CliError(str(exc), code) from None
    except (KeyFileError, GenesisError, LedgerError, OSError) as exc:
        raise CliError(str(exc)) from None
    doc = {
        "rebuilt": result.rebuilt,
        "height": result.height,
        "why": result.why,
        "peers": result.peers,
        "moved_to": None if result.moved_to is None else str(result.moved_to),
        "signing_record_moved_to": (
            None if result.signing_record_moved_to is None else str(result.signing_record_moved_to)
        ),
        "elapsed_s": round(result.elapsed_s, 3),
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    if not result.rebuilt:
        print(
            f"store intact at height {result.height}: nothing to repair (the node catches "
            f"up from its peers when it starts; --force rebuilds it anyway)"
        )
        return EXIT_OK
    print(
        f"rebuilt {cfg.data_dir / 'ledger'} from its peers: height {result.height}, every "
        f"block re-executed and its certificate verified against {cfg.genesis} "
        f"({result.peers} peers agreed it is caught up; {result.elapsed_s:.1f} s)"
    )
    print(f"was: {result.why}")
    for what, where in (
        ("damaged store", result.moved_to),
        ("damaged signing record", result.signing_record_moved_to),
    ):
        if where is not None:
            print(f"the {what} was moved to {where}: delete it when satisfied")
    return EXIT_OK
