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
from ledger.errors import DecodeError, StoreError
from ledger.kv import KV, open_leveldb
from ledger.store_format import h8 as _h8


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
            self.db = open_leveldb(
                str(path),
                create_if_missing=True,
                compression=None,
                write_buffer_size=16 * 1024 * 1024,
            )
        except plyvel.Error as exc:
            raise StoreError(f"cannot open the consensus database {path}: {exc}") from None
        self.path = path

    def close(self) -> None:
        self.db.close()

    def load_record(self) -> SigningRecord | None:
        raw = self.db.get(b"r")
        if raw is None:
            return None
        try:
            return SigningRecord.decode(raw)
        except DecodeError as exc:
            raise StoreError(
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
