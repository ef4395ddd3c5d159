"""A node's two databases, opened and checked before the node serves anything.

``open_stores`` is how a node (``node.node.Node``) opens ``<data_dir>/ledger`` and, for a
validator, ``<data_dir>/consensus`` at every start and after a disk failure: LevelDB
opens with paranoid checks, every table is read with its checksums verified
(``ledger.kv.scan_checksums``), then ``ledger.store_check.check_ledger`` runs the
start-up check (the newest ``RECENT_BLOCKS`` heights in full, the whole chain's record
counts, the retained state versions' roots) and the consensus database is checked
(``ConsensusDB.check``: checksums, the signing record decodes). Any damage is a
``StoreDamage`` naming the database, what and where; nothing is left open.

``check_datadir`` is ``dvp store check``: the full check, run on a snapshot of the data
directory (``ledger.store_snapshot``) so that the directory is never written, may be
read-only, or may belong to a running node.

A missing ledger directory is not damage: the node creates an empty store and catches
up from its peers (a store that was lost); a directory that holds LevelDB files but no
``CURRENT`` is damage.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import plyvel

from ledger.audit_report import AuditProgress, ProgressFn
from ledger.chain import Ledger
from ledger.errors import LedgerError, StoreDamage, StoreError
from ledger.store_check import RECENT_BLOCKS, StoreCheck, check_ledger
from ledger.store_format import leveldb_reason
from ledger.store_snapshot import snapshot
from ledger.types import Genesis
from node.consensus_db import ConsensusDB


def _scan_progress(progress: ProgressFn | None) -> Callable[[int], None] | None:
    """The table scan's ``tick(entries)`` as ``AuditProgress("scan", ...)`` reports."""
    if progress is None:
        return None
    t0 = time.perf_counter()

    def tick(count: int) -> None:
        progress(AuditProgress("scan", 0, count, 0, 0, time.perf_counter() - t0))

    return tick


def open_ledger_checked(
    path: Path,
    genesis: Genesis,
    *,
    create: bool,
    recent: int | None = RECENT_BLOCKS,
    progress: ProgressFn | None = None,
) -> tuple[Ledger, StoreCheck]:
    """Open the ledger store at ``path`` with every table's checksums read, then run
    ``check_ledger`` (``recent=None``: in full). ``StoreDamage`` on damage."""
    tick = _scan_progress(progress)
    try:
        ledger = Ledger.open(path, genesis, create=create, verify_tables=True, tick=tick)
    except StoreError:
        raise
    except (LedgerError, plyvel.Error) as exc:
        # The head's state did not load (app metadata or a state node is unusable).
        raise StoreDamage(f"{path}: the head state does not load ({_reason(exc)})") from None
    try:
        return ledger, check_ledger(ledger, recent=recent, progress=progress)
    except BaseException:
        ledger.close()
        raise


def _reason(exc: BaseException) -> str:
    return leveldb_reason(exc) if isinstance(exc, plyvel.Error) else str(exc)


def open_stores(
    data_dir: Path, genesis: Genesis, *, validator: bool
) -> tuple[Ledger, ConsensusDB | None, StoreCheck]:
    """The node's start: both databases opened and checked (see the module docstring)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ledger, report = open_ledger_checked(data_dir / "ledger", genesis, create=True)
    try:
        cdb = ConsensusDB(data_dir / "consensus") if validator else None
        if cdb is not None:
            try:
                cdb.check()
            except BaseException:
                cdb.close()
                raise
    except BaseException:
        ledger.close()
        raise
    return ledger, cdb, report


@dataclass
class DatadirCheck:
    """``dvp store check``'s findings: the ledger's report, the consensus database's
    entries (None if the directory has none), the snapshot's notes."""

    ledger: StoreCheck | None = None
    consensus_entries: int | None = None
    damage: str | None = None
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.damage is None


def check_datadir(
    datadir: Path,
    genesis: Genesis,
    *,
    workdir: Path | None = None,
    progress: ProgressFn | None = None,
) -> DatadirCheck:
    """The full check of a node's data directory, on a snapshot of it (never written).

    ``StoreError`` if ``datadir`` holds no ledger store of this chain at all (that is
    not a verdict on a store); damage is reported in ``DatadirCheck.damage``."""
    out = DatadirCheck()
    t0 = time.perf_counter()
    ledger_dir = datadir / "ledger"
    if not (ledger_dir / "CURRENT").is_file():
        if ledger_dir.is_dir() and any(ledger_dir.iterdir()):
            out.damage = f"{ledger_dir}: LevelDB's CURRENT file is missing: the database is damaged"
            return out
        raise StoreError(f"no ledger store in {datadir} (expected {ledger_dir}, a LevelDB)")
    with tempfile.TemporaryDirectory(prefix="dvp-store-check-", dir=workdir) as tmp:
        copies = {}
        linked = copied = 0
        for name in ("ledger", "consensus"):
            if (datadir / name / "CURRENT").is_file():
                taken = snapshot(datadir / name, Path(tmp) / name)
                copies[name] = Path(tmp) / name
                linked, copied = linked + taken.linked, copied + taken.copied
        out.notes.append(
            f"checked a snapshot of {datadir} ({linked} table files linked, {copied} "
            f"files copied): nothing in it was written"
        )
        try:
            ledger, out.ledger = open_ledger_checked(
                copies["ledger"], genesis, create=False, recent=None, progress=progress
            )
            ledger.close()
            if "consensus" in copies:
                cdb = ConsensusDB(copies["consensus"])
                try:
                    out.consensus_entries = cdb.check()
                finally:
                    cdb.close()
        except StoreError as exc:
            text = str(exc)
            for name, copy in copies.items():
                text = text.replace(str(copy), str(datadir / name))
            if not isinstance(exc, StoreDamage):
                raise StoreError(text) from None  # not this chain's store: no verdict
            out.damage = text
    out.elapsed_s = time.perf_counter() - t0
    return out
