"""A private snapshot of a LevelDB directory, to read a store without touching it.

LevelDB has no read-only mode: opening a database (plyvel included) replays its log
into a new table file, writes a new manifest and ``CURRENT``, renames its info log and
deletes the files it no longer needs, all inside the database's directory; and a
running node holds the directory's lock. The auditor (``dvp audit replay --datadir``)
and ``dvp store check`` must leave a node's data directory exactly as they found it
and work on a read-only one, so they never open it: they open a snapshot of it in a
directory of their own.

``snapshot(src, dst)`` builds that snapshot:

* ``CURRENT`` and the manifests are copied first, then every other file, so every table
  the copied manifest names existed when it was taken (tables are immutable once
  written; a compaction only adds new ones and deletes old ones).
* Table files (``*.ldb``, ``*.sst``) are hard-linked when the file system allows it
  (same file system, and permitted: a hard link to another user's file needs write
  access to it under ``fs.protected_hardlinks``), else copied. A link costs no space
  and no time; LevelDB opening the snapshot only ever reads tables and, when it drops
  one, unlinks the snapshot's name, never the original. Linking changes nothing in
  the source directory (no entry is added there, no file's bytes or mtime change).
* The logs, the manifest and ``CURRENT`` are always copied: LevelDB rewrites those.
  ``LOCK`` and the info logs (``LOG``, ``LOG.old``) are not taken.
* If the source changed under the copy (a running node switched manifest, or a file
  vanished), the snapshot is taken again, up to ``attempts`` times. A snapshot of a
  running node's store is a best effort; of a stopped node's, it is exact.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import StoreError

_TABLE = re.compile(r"\d+\.(ldb|sst)")
_SKIP = {"LOCK", "LOG", "LOG.old"}
# link(2) errors after which a copy is made instead: another file system, not
# permitted (protected_hardlinks, a read-only mount), or links not supported.
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EACCES, errno.EROFS, errno.EMLINK, errno.ENOTSUP}


@dataclass
class Snapshot:
    """What ``snapshot`` did: files hard-linked, files copied, bytes copied."""

    linked: int = 0
    copied: int = 0
    copied_bytes: int = 0


def _state(src: Path) -> tuple[bytes, int] | None:
    """``CURRENT``'s bytes and the size of the manifest it names (None if unreadable)."""
    try:
        current = (src / "CURRENT").read_bytes()
        manifest = src / current.decode("ascii", "replace").strip()
        return current, manifest.stat().st_size
    except OSError:
        return None


def _take(src: Path, dst: Path, link: bool, out: Snapshot) -> None:
    names = sorted(f.name for f in src.iterdir() if f.is_file() and f.name not in _SKIP)
    first = [n for n in names if n == "CURRENT" or n.startswith("MANIFEST-")]
    for name in first + [n for n in names if n not in first]:
        s, d = src / name, dst / name
        if link and _TABLE.fullmatch(name):
            try:
                os.link(s, d)
                out.linked += 1
                continue
            except OSError as exc:
                if exc.errno not in _NO_LINK:
                    raise
        shutil.copyfile(s, d)
        out.copied += 1
        out.copied_bytes += d.stat().st_size


def snapshot(src: Path, dst: Path, *, link: bool = True, attempts: int = 3) -> Snapshot:
    """Snapshot the LevelDB directory ``src`` into ``dst`` (created; must not exist).

    Raises ``StoreError`` if ``src`` is no LevelDB directory or could not be
    snapshotted consistently in ``attempts`` tries."""
    if not (src / "CURRENT").is_file():
        raise StoreError(f"no LevelDB database in {src} (no CURRENT file)")
    last: str = ""
    for attempt in range(attempts):
        if attempt:
            shutil.rmtree(dst, ignore_errors=True)
            time.sleep(0.2)
        out = Snapshot()
        try:
            dst.mkdir(parents=True)
            before = _state(src)
            _take(src, dst, link, out)
            if _state(src) == before:  # (None twice: CURRENT is damaged; open says so)
                return out
            last = "the database changed while it was copied"
        except FileNotFoundError as exc:
            last = f"{exc.filename} vanished while it was copied"
        except OSError as exc:
            raise StoreError(f"cannot snapshot {src} into {dst}: {exc}") from None
    raise StoreError(
        f"cannot take a consistent snapshot of {src}: {last}; stop the node or copy "
        f"its data directory yourself"
    )
