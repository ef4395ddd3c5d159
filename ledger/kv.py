"""The key-value interface under the stores, and its two backends: LevelDB and memory.

``KV`` is the subset of plyvel's ``DB`` that ``ledger.store`` and
``node.consensus_db`` use: ``get``, ``put``, ``delete``, write batches (with and
without ``sync``), iterators (prefix, range, reverse, keys or values only),
``compact_range`` and ``close``.

* **LevelDB** (``open_leveldb``): what a node runs. It *is* a ``plyvel.DB``, returned
  as is, so the node's behaviour, speed and error types (``plyvel.Error``, mapped to
  ``StoreError`` by the stores) are exactly plyvel's.
* **Memory** (``MemoryKV``): for the whole-node simulator. Reads see every write at
  once; durability follows LevelDB's log: writes go to an ordered log, and a write
  with ``sync=True`` makes it *and every write before it* durable. ``crash()`` is a
  power cut: it returns the durable image (optionally plus a random prefix of the
  unsynced writes, which the OS may have flushed on its own; a batch is never torn,
  as LevelDB drops a torn log record at recovery), and the store is reopened from it.
  ``ignore_sync`` is a test switch that makes synced writes unsynced: it is how a test
  proves the simulator's checkers find a missing fsync.

Errors: the memory backend raises ``KVError``; stores catch ``KV_ERRORS`` (plyvel's
and ours) wherever they caught ``plyvel.Error``.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Protocol

import plyvel


class KVError(Exception):
    """A memory-backend failure (closed database, injected fault)."""


KV_ERRORS: tuple[type[BaseException], ...] = (plyvel.Error, KVError)


class KVBatch(Protocol):
    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def write(self) -> None: ...

    def __enter__(self) -> KVBatch: ...

    def __exit__(self, *exc: object) -> Any: ...


class KV(Protocol):
    """What the stores need of a key-value database (plyvel's signatures)."""

    def get(self, key: bytes, default: Any = None, **options: Any) -> Any: ...

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None: ...

    def delete(self, key: bytes, *, sync: bool = False) -> None: ...

    def write_batch(self, *, sync: bool = False) -> Any: ...

    def iterator(self, **options: Any) -> Any: ...

    def compact_range(self, start: bytes | None = None, stop: bytes | None = None) -> None: ...

    def close(self) -> None: ...


def open_leveldb(path: str, **options: Any) -> KV:
    """The LevelDB backend: a ``plyvel.DB`` (raises plyvel's errors)."""
    db: KV = plyvel.DB(path, **options)
    return db


#: Entries read between two ``scan_checksums`` progress calls.
SCAN_TICK = 1 << 16


class ScanError(Exception):
    """``scan_checksums`` failed: ``cause`` is the backend's error, ``after`` the last key
    read intact before it (None: the first)."""

    def __init__(self, cause: BaseException, after: bytes | None) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.after = after


def scan_checksums(db: KV, tick: Callable[[int], None] | None = None) -> int:
    """Read every live entry of ``db`` with LevelDB's block checksums verified; returns
    how many there are. Raises ``ScanError`` (plyvel's ``CorruptionError``/``IOError``
    and the last key read before it) at the first damaged block, table or missing file.

    An iteration over the whole database reads every data block of every table in the
    current version (the entries later writes shadow or delete included), so together
    with ``paranoid_checks`` at open (log records, the manifest, each table's index and
    filter blocks) every byte LevelDB would serve has had its CRC checked. Two details
    of plyvel make it two passes: an iterator created on a damaged table fails at
    creation, and a damaged block *after the last visible entry* ends a forward
    iteration without an error (plyvel checks LevelDB's iterator status only at an
    entry), so one step of a reverse iteration, which walks back over those blocks to
    the last visible entry, reads them too. The forward pass is consumed in C
    (measured: ~3.5 million entries a second, about a second per million
    attestations); ``tick(count)`` is called every ``SCAN_TICK``. On the memory backend
    it only counts."""
    # deque(maxlen=1) drains each slice in C, keeping only the last (count, key) read
    last: deque[tuple[int, bytes]] = deque(maxlen=1)
    count = 0
    try:
        with db.iterator(include_value=False, verify_checksums=True, fill_cache=False) as it:
            while True:
                before = count
                last.extend(enumerate(itertools.islice(it, SCAN_TICK), count + 1))
                if last:
                    count = last[0][0]
                if tick is not None:
                    tick(count)
                if count - before < SCAN_TICK:
                    break
        with db.iterator(
            reverse=True, include_value=False, verify_checksums=True, fill_cache=False
        ) as back:
            next(back, None)
    except KV_ERRORS as exc:
        raise ScanError(exc, last[0][1] if last else None) from exc
    return count


# --------------------------------------------------------------------------- memory

_Op = tuple[bytes, bytes | None]  # (key, value); value None = delete


class MemoryKV:
    """An in-memory ``KV`` with LevelDB's ordered-log durability (see the module doc)."""

    def __init__(self, image: dict[bytes, bytes] | None = None, name: str = "<memory>") -> None:
        self.name = name
        self._data: dict[bytes, bytes] = dict(image or {})
        self._keys: list[bytes] = sorted(self._data)
        self._durable: dict[bytes, bytes] = dict(self._data)
        self._unsynced: list[list[_Op]] = []  # batches written since the last sync
        self._closed = False
        self.ignore_sync = False  # test switch: a synced write is written unsynced
        self.writes = 0
        self.syncs = 0

    # -- reads --------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise KVError(f"{self.name}: the database is closed")

    def get(self, key: bytes, default: Any = None, **_options: Any) -> Any:
        self._check_open()
        return self._data.get(key, default)

    def iterator(
        self,
        *,
        reverse: bool = False,
        start: bytes | None = None,
        stop: bytes | None = None,
        include_start: bool = True,
        include_stop: bool = False,
        prefix: bytes | None = None,
        include_key: bool = True,
        include_value: bool = True,
        **_options: Any,
    ) -> _Iterator:
        """A snapshot of the range at creation time (plyvel iterators read a snapshot)."""
        self._check_open()
        keys = self._keys
        if prefix is not None:
            lo = bisect.bisect_left(keys, prefix)
            hi = lo
            while hi < len(keys) and keys[hi].startswith(prefix):
                hi += 1
        else:
            if start is None:
                lo = 0
            elif include_start:
                lo = bisect.bisect_left(keys, start)
            else:
                lo = bisect.bisect_right(keys, start)
            if stop is None:
                hi = len(keys)
            elif include_stop:
                hi = bisect.bisect_right(keys, stop)
            else:
                hi = bisect.bisect_left(keys, stop)
        selected = keys[lo:hi] if lo < hi else []
        if reverse:
            selected.reverse()
        data = self._data
        items: list[Any]
        if include_key and include_value:
            items = [(k, data[k]) for k in selected]
        elif include_key:
            items = selected
        else:
            items = [data[k] for k in selected]
        return _Iterator(items)

    # -- writes -------------------------------------------------------------------

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        self._write([(bytes(key), bytes(value))], sync)

    def delete(self, key: bytes, *, sync: bool = False) -> None:
        self._write([(bytes(key), None)], sync)

    def write_batch(self, *, transaction: bool = False, sync: bool = False) -> _Batch:
        self._check_open()
        return _Batch(self, sync, transaction)

    def _write(self, ops: list[_Op], sync: bool) -> None:
        self._check_open()
        if not ops:
            return
        self.writes += 1
        data, keys = self._data, self._keys
        for key, value in ops:
            if value is None:
                if data.pop(key, None) is not None:
                    del keys[bisect.bisect_left(keys, key)]
            else:
                if key not in data:
                    bisect.insort(keys, key)
                data[key] = value
        self._unsynced.append(ops)
        if sync and not self.ignore_sync:
            self._flush(len(self._unsynced))

    def _flush(self, batches: int) -> None:
        """Make the first ``batches`` unsynced batches durable, in log order."""
        durable = self._durable
        for ops in self._unsynced[:batches]:
            for key, value in ops:
                if value is None:
                    durable.pop(key, None)
                else:
                    durable[key] = value
        del self._unsynced[:batches]
        self.syncs += 1

    def compact_range(self, start: bytes | None = None, stop: bytes | None = None) -> None:
        self._check_open()  # nothing to compact in memory

    def close(self) -> None:
        self._closed = True

    def size_bytes(self) -> int:
        return sum(len(k) + len(v) for k, v in self._data.items())

    # -- power cuts ---------------------------------------------------------------

    @property
    def unsynced_batches(self) -> int:
        return len(self._unsynced)

    def durable_image(self) -> dict[bytes, bytes]:
        return dict(self._durable)

    def crash(self, rng: random.Random | None = None) -> MemoryKV:
        """Cut the power: this handle closes; returns a new one over what survived.

        Without ``rng`` every unsynced write is lost; with it, a random prefix of the
        unsynced batches survives (the OS wrote them back before the cut).
        """
        if rng is not None and self._unsynced:
            self._flush(rng.randint(0, len(self._unsynced)))
        self._closed = True
        survivor = MemoryKV(self._durable, self.name)
        survivor.ignore_sync = self.ignore_sync
        return survivor


class _Batch:
    """plyvel's ``WriteBatch``: collected, applied atomically by ``write``."""

    def __init__(self, kv: MemoryKV, sync: bool, transaction: bool) -> None:
        self._kv = kv
        self._sync = sync
        self._transaction = transaction
        self._ops: list[_Op] = []

    def put(self, key: bytes, value: bytes) -> None:
        self._ops.append((bytes(key), bytes(value)))

    def delete(self, key: bytes) -> None:
        self._ops.append((bytes(key), None))

    def clear(self) -> None:
        self._ops = []

    def write(self) -> None:
        ops, self._ops = self._ops, []
        self._kv._write(ops, self._sync)

    def __enter__(self) -> _Batch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # plyvel: a transaction batch is discarded on an exception, a plain one written.
        if exc_type is None or not self._transaction:
            self.write()


class _Iterator:
    def __init__(self, items: list[Any]) -> None:
        self._it: Iterator[Any] = iter(items)

    def __iter__(self) -> _Iterator:
        return self

    def __next__(self) -> Any:
        return next(self._it)

    def close(self) -> None:
        self._it = iter(())

    def __enter__(self) -> _Iterator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
