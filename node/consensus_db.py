"""Durable consensus state: the signing record and the payloads this replica accepted.

A small LevelDB beside the ledger store (``<data_dir>/consensus``), or any
``ledger.kv.KV`` (the whole-node simulator passes a ``MemoryKV``). Every write is
synced: the replica's ``Persist`` / ``PersistBlock`` actions must be durable before the
messages that follow them are sent (docs/CONSENSUS.md, "what is persisted").

Keys: ``r`` -> SigningRecord encoding; ``p`` h8 block_id -> payload; ``e`` seq ->
evidence encoding (kept for operators and the ledger).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import plyvel

from consensus.record import SigningRecord
from ledger.errors import DecodeError, StoreDamage, StoreError
from ledger.kv import KV, KV_ERRORS, ScanError, open_leveldb, scan_checksums
from ledger.store_format import h8 as _h8
from ledger.store_format import leveldb_reason

# Key sizes by kind: the record, payloads (h8 + 32-byte block id), evidence (h8).
_KEY_SIZES = {b"r": (1,), b"p": (41,), b"e": (9,)}


def _describe(key: bytes | None) -> str:
    """Where a key of this database is, for people."""
    if key is None:
        return "the first entry"
    if key == b"r":
        return "the signing record"
    if key[:1] == b"p" and len(key) >= 9:
        return f"the accepted payload of height {int.from_bytes(key[1:9], 'big')}"
    if key[:1] == b"e" and len(key) == 9:
        return f"evidence record {int.from_bytes(key[1:9], 'big')}"
    return f"key {key[:9].hex()}"


class ConsensusDB:
    """Opened on a directory (LevelDB, created if missing) or on an open ``KV``."""

    def __init__(self, where: Path | KV) -> None:
        if not isinstance(where, Path):
            self.db: KV = where
            self.path = Path(getattr(where, "name", "<memory>"))
            return
        path = where
        path.mkdir(parents=True, exist_ok=True)
        try:
            # Payloads are written once and deleted a few heights later: no compression
            # and a larger memtable keep LevelDB's compaction thread off the CPU budget
            # (see ledger/store.py's _DB_OPTIONS for the measurements).
            # paranoid_checks: a damaged log record or manifest stops the open instead
            # of being skipped (see ledger/store.py's _DB_OPTIONS).
            self.db = open_leveldb(
                str(path),
                create_if_missing=True,
                compression=None,
                write_buffer_size=16 * 1024 * 1024,
                paranoid_checks=True,
            )
        except plyvel.CorruptionError as exc:
            raise StoreDamage(
                f"{path}: LevelDB reports corruption ({leveldb_reason(exc)})"
            ) from None
        except plyvel.Error as exc:
            raise StoreError(f"cannot open the consensus database {path}: {exc}") from None
        self.path = path

    def close(self) -> None:
        self.db.close()

    def check(self) -> int:
        """The node's start-up check of this database: every entry read with LevelDB's
        checksums verified, the signing record decoded, every key well formed. Returns
        the number of entries; ``StoreDamage`` naming the database otherwise."""
        try:
            entries = scan_checksums(self.db)
            self.load_record()
            for key in self.db.iterator(include_value=False):
                if key[:1] not in (b"r", b"p", b"e") or len(key) not in _KEY_SIZES[key[:1]]:
                    raise StoreDamage(f"{self.path}: an entry has a key of no known kind")
        except ScanError as exc:
            after = _describe(exc.after)
            raise StoreDamage(
                f"{self.path}: LevelDB reports {leveldb_reason(exc.cause)!r} reading the "
                f"table data after {after}"
            ) from None
        except KV_ERRORS as exc:
            raise StoreDamage(f"{self.path}: LevelDB read failed ({leveldb_reason(exc)})") from None
        return entries

    def load_record(self) -> SigningRecord | None:
        raw = self.db.get(b"r")
        if raw is None:
            return None
        try:
            return SigningRecord.decode(raw)
        except DecodeError as exc:
            raise StoreDamage(
                f"{self.path}: the signing record is corrupt ({exc}); refusing to "
                "start, since signing without it could equivocate"
            ) from None

    def save(
        self, record: SigningRecord | None, payloads: Sequence[tuple[int, bytes, bytes]] = ()
    ) -> None:
        """Make ``record`` (if any) and ``payloads`` ((height, block id, payload) each)
        durable in one synced write: one fsync however many the caller coalesced."""
        with self.db.write_batch(sync=True) as wb:
            for height, block_id, payload in payloads:
                wb.put(b"p" + _h8(height) + block_id, payload)
            if record is not None:
                wb.put(b"r", record.encode())

    def payloads(self) -> list[bytes]:
        return [v for _k, v in self.db.iterator(prefix=b"p")]

    def prune_payloads(self, up_to_height: int) -> None:
        with self.db.write_batch() as wb:
            for k in self.db.iterator(
                start=b"p", stop=b"p" + _h8(up_to_height + 1), include_value=False
            ):
                wb.delete(k)

    def save_evidence(self, data: bytes) -> None:
        last = self.db.iterator(prefix=b"e", reverse=True, include_value=False)
        try:
            seq = int.from_bytes(next(last)[1:], "big") + 1
        except StopIteration:
            seq = 0
        finally:
            last.close()
        self.db.put(b"e" + _h8(seq), data, sync=True)

    def evidence(self) -> list[bytes]:
        return [v for _k, v in self.db.iterator(prefix=b"e")]
