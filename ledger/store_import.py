"""The ledger store's import path: filling an empty store from a verified state snapshot.

``StoreImport`` is part of ``ledger.store.Store`` (a mixin, like ``StoreReads``). It owns
the writes of a state-sync import (``ledger.state_snapshot`` verifies everything before
handing it here; this module checks only what the store's own rules need):

* ``begin_import`` turns an empty (or genesis-only) store into an importing one: everything but the
  store's identity (magic, format, chain, genesis) is deleted, the "importing" mark is
  set and the attested-commitment index is declared absent (a snapshot cannot rebuild
  it: its keys are the commitments, the state tree's are their hashes). While the mark
  is there the store has no committed height, and ``ledger.chain.Ledger`` refuses to
  open it (it would otherwise commit a genesis block over the half-imported records).
* ``import_heights`` / ``import_nodes`` / ``import_bodies`` write records in batches
  that are not synced (a crash mid-import leaves the mark, and the import restarts
  from ``begin_import``; ``abort_import`` empties the store instead).
* ``finish_import`` writes the committed height, the pruned-state floor, the kept-bodies
  floor and the tx-index floor and removes the mark in one synced batch, then reloads
  the store's metadata exactly as ``Store.open`` does.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from itertools import islice
from pathlib import Path
from typing import Any

from ledger.errors import StoreError
from ledger.kv import KV_ERRORS
from ledger.store_format import (
    K_ATTESTED_INDEX,
    K_BODIES_FROM,
    K_CHAIN,
    K_FORMAT,
    K_GENESIS,
    K_HEIGHT,
    K_IMPORTING,
    K_MAGIC,
    K_PRUNED,
    K_TX_INDEX_FROM,
    P_APP,
    P_BLOCK_ID,
    P_CERT,
    P_HEADER,
    P_NODE,
    P_TX,
    TX_KEY_BYTES,
    h8,
    leveldb_reason,
    seal,
    tx_location_value,
    unseal,
)
from ledger.tx_tree import body_records
from ledger.types import ZERO_HASH, Block

_IDENTITY = {K_MAGIC, K_FORMAT, K_CHAIN, K_GENESIS}
_DELETE_PER_BATCH = 10_000


class StoreImport:
    """The import half of ``ledger.store.Store`` (see the module docstring)."""

    _db: Any
    _path: Path
    _height: int
    _tip_id: bytes
    _closed: bool
    _importing: bool
    _attested_index: bool
    _blocks: OrderedDict[int, Block]

    def _check_or_init(self, create: bool) -> None: ...  # Store's

    @property
    def importing(self) -> bool:
        """True while a state-sync import is unfinished (the store has no height)."""
        return self._importing

    def _batch(self, puts: Iterable[tuple[bytes, bytes]], what: str, sync: bool = False) -> None:
        if self._closed:
            raise StoreError("the store is closed")
        try:
            with self._db.write_batch(sync=sync) as wb:
                for key, value in puts:
                    wb.put(key, value)
        except KV_ERRORS as exc:
            raise StoreError(
                f"writing {what} to {self._path} failed ({leveldb_reason(exc)})"
            ) from exc

    def begin_import(self) -> None:
        """Make this empty (or genesis-only, or half-imported) store ready for an import
        (see above). A genesis block is dropped: the import brings it again, checked
        against the genesis file."""
        if self._height > 0:
            raise StoreError(
                f"{self._path} already holds a chain (height {self._height}): a state "
                f"snapshot is only imported into an empty store"
            )
        self._wipe()
        self._batch([(K_IMPORTING, b"1")], "the import mark", sync=True)
        self._importing = True
        self._attested_index = False

    def abort_import(self) -> None:
        """Drop an unfinished import: the store is empty again (as ``Store.open(...,
        create=True)`` makes one), so a node can start from genesis or import anew."""
        self._require_importing()
        self._wipe()
        try:
            with self._db.write_batch(sync=True) as wb:
                wb.delete(K_IMPORTING)
                wb.put(K_ATTESTED_INDEX, b"1")
        except KV_ERRORS as exc:
            raise StoreError(
                f"dropping the import in {self._path} failed ({leveldb_reason(exc)})"
            ) from exc
        self._check_or_init(False)

    def _wipe(self) -> None:
        """Delete every record but the store's identity (in bounded batches)."""
        start = b""
        while True:
            with self._db.iterator(start=start, include_value=False) as it:
                keys = list(islice(it, _DELETE_PER_BATCH))
            if not keys:
                break
            with self._db.write_batch() as wb:
                for key in keys:
                    if key not in _IDENTITY:
                        wb.delete(key)
            start = keys[-1] + b"\x00"
        self._height = -1
        self._tip_id = ZERO_HASH
        self._blocks.clear()

    def _require_importing(self) -> None:
        if not self._importing:
            raise StoreError("no state-sync import is under way (call begin_import first)")

    def import_heights(
        self, records: Iterable[tuple[int, bytes, bytes, bytes | None, bytes]]
    ) -> None:
        """(height, block id, header bytes, certificate bytes or None, app metadata)
        records, written with the block-id index entry."""
        self._require_importing()
        puts: list[tuple[bytes, bytes]] = []
        for h, block_id, header, cert, meta in records:
            hb = h8(h)
            puts.append((P_HEADER + hb, seal(P_HEADER + hb, header)))
            if cert is not None:
                puts.append((P_CERT + hb, seal(P_CERT + hb, cert)))
            puts.append((P_APP + hb, seal(P_APP + hb, meta)))
            puts.append((P_BLOCK_ID + block_id, hb))
        self._batch(puts, "imported headers")

    def imported_header(self, height: int) -> bytes:
        """Header bytes an import wrote (the store has no height yet to read them by)."""
        self._require_importing()
        key = P_HEADER + h8(height)
        value = self._db.get(key)
        if value is None:
            raise StoreError(f"the import holds no header at height {height}")
        return unseal(key, value, f"imported header at height {height}")

    def import_nodes(self, nodes: Mapping[bytes, bytes]) -> None:
        """State-tree nodes (node key -> encoding)."""
        self._require_importing()
        self._batch(((P_NODE + k, v) for k, v in nodes.items()), "imported state nodes")

    def import_bodies(self, blocks: Iterable[Block]) -> None:
        """Block bodies, with their tx-index entries."""
        self._require_importing()
        puts: list[tuple[bytes, bytes]] = []
        for block in blocks:
            puts.extend(
                body_records(block.height, [tx.encoded for tx in block.txs], block.tx_tree_nodes)
            )
            for pos, tx_id in enumerate(block.tx_ids):
                puts.append((P_TX + tx_id[:TX_KEY_BYTES], tx_location_value(block.height, pos)))
        self._batch(puts, "imported block bodies")

    def finish_import(self, height: int, bodies_from: int) -> None:
        """Commit the import at ``height`` (bodies and tx index kept from
        ``bodies_from``; state versions below ``height`` absent) and reload."""
        self._require_importing()
        if not 0 < bodies_from <= height:
            raise StoreError(f"bodies_from {bodies_from} is not within 1..{height}")
        try:
            with self._db.write_batch(sync=True) as wb:
                wb.put(K_PRUNED, h8(height))
                wb.put(K_BODIES_FROM, h8(bodies_from))
                wb.put(K_TX_INDEX_FROM, h8(bodies_from))
                wb.put(K_HEIGHT, h8(height))
                wb.delete(K_IMPORTING)
                wb.delete(K_ATTESTED_INDEX)
        except KV_ERRORS as exc:
            raise StoreError(
                f"finishing the import into {self._path} failed ({leveldb_reason(exc)})"
            ) from exc
        self._check_or_init(False)
