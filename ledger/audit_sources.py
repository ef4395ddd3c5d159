"""Where the auditor reads a chain from: a node's data directory or a node's RPC.

Part of ``ledger.audit`` (the public entry point, which re-exports this module's names).
This module owns ``BlockSource`` and its two kinds: ``DatadirSource`` (a node's LevelDB
store, read through a private snapshot so that its directory is never written) and
``RpcSource`` (blocks and certificates fetched over JSON-RPC); nothing a source says is
trusted (the replay in ledger/audit.py re-executes it).
"""

from __future__ import annotations

import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from queue import Queue
from typing import Any, Protocol

import plyvel

from ledger.audit_report import (
    AuditFailure,
    AuditReport,
    ProgressFn,
    SourceItem,
    _unavailable,
)
from ledger.audit_state import check_state_tree
from ledger.errors import DecodeError, StoreError
from ledger.state import Execution
from ledger.store import Store
from ledger.store_snapshot import snapshot
from ledger.types import Block, BlockHeader, CommitCertificate, Genesis, Transaction


class BlockSource(ABC):
    """Where a replay reads the chain: blocks 0..``head_height`` with their certificates.

    Iterating raises ``AuditFailure`` ("store_integrity" or "decode") for a block that
    cannot be read back intact, and ``SourceUnavailable`` if the source goes away.
    """

    notes: list[str]

    @property
    @abstractmethod
    def head_height(self) -> int:
        """The last height the source will yield (fixed when the source was opened)."""

    @abstractmethod
    def __iter__(self) -> Iterator[SourceItem]: ...

    def cross_check(self, height: int, execution: Execution) -> None:
        """Compare what the source keeps beside block ``height`` with the re-execution."""
        return None

    @property
    def pruned_store(self) -> Store | None:
        """The source's store if it pruned block bodies (the replay then starts from a
        certified snapshot: ledger/audit_snapshot.py); None otherwise."""
        return None

    def final_check(self, report: AuditReport, progress: ProgressFn | None) -> None:
        """Checks after the last block (e.g. the stored state tree); fill ``report``."""
        return None

    def close(self) -> None:
        return None


def decode_item(height: int, block_bytes: bytes, cert_bytes: bytes | None) -> SourceItem:
    """Decode one block and its certificate; ``AuditFailure("decode")`` if either is bad."""
    try:
        block = Block.decode(block_bytes)
    except DecodeError as exc:
        raise AuditFailure(height, "decode", f"block does not decode: {exc}") from None
    cert = None
    if cert_bytes is not None:
        try:
            cert = CommitCertificate.decode(cert_bytes)
        except DecodeError as exc:
            raise AuditFailure(height, "decode", f"certificate does not decode: {exc}") from None
    return height, block, cert


def ledger_store_path(datadir: Path | str) -> Path:
    """The ledger LevelDB of a node data directory (``<datadir>/ledger``), or ``datadir``
    itself if it is the LevelDB."""
    p = Path(datadir)
    if not (p / "CURRENT").exists() and (p / "ledger").is_dir():
        return p / "ledger"
    return p


def open_store_readonly(
    datadir: Path | str,
    genesis: Genesis,
    notes: list[str],
    workdir: Path | str | None = None,
) -> tuple[Store, tempfile.TemporaryDirectory[str]]:
    """Open a node's ledger store for reading without touching its directory.

    LevelDB has no read-only open (opening rewrites the log, the manifest and the info
    log in place), so the store is opened from a snapshot in a temporary directory under
    ``workdir`` (``ledger.store_snapshot``: table files hard-linked where allowed, the
    rest copied); the data directory may be read-only or locked by a running node.
    Returns the store and the temporary directory (the caller cleans it up after closing
    the store). ``StoreError`` for anything that is not this chain's store.
    """
    path = ledger_store_path(datadir)
    if not (path / "CURRENT").is_file():
        raise StoreError(
            f"no ledger store in {datadir}: expected a node data directory "
            f"(with ledger/ inside) or its ledger LevelDB"
        )
    tmp = tempfile.TemporaryDirectory(prefix="dvp-snapshot-", dir=workdir)
    try:
        copy = Path(tmp.name) / "ledger"
        taken = snapshot(path, copy)
        try:
            store = Store.open(copy, chain_id=genesis.chain_id, genesis_hash=genesis.hash)
        except StoreError as exc:
            # name the store the user gave, not the scratch copy
            raise type(exc)(str(exc).replace(str(copy), str(path))) from None
    except BaseException:
        tmp.cleanup()
        raise
    notes.append(
        f"read a snapshot of {path} taken at {time.strftime('%Y-%m-%d %H:%M:%S')} "
        f"(height {store.height}; {taken.linked} table files linked, {taken.copied} "
        f"files copied): nothing in {datadir} was opened for writing"
    )
    return store, tmp


class DatadirSource(BlockSource):
    """A node's data directory (``<datadir>/ledger``), read through ``ledger.store``."""

    def __init__(
        self,
        datadir: Path | str,
        genesis: Genesis,
        *,
        check_state: bool = True,
        workdir: Path | str | None = None,
    ) -> None:
        self.notes = []
        self.store, self._tmp = open_store_readonly(datadir, genesis, self.notes, workdir)
        self._head = self.store.height
        self._check_state = check_state

    @property
    def head_height(self) -> int:
        return self._head

    @property
    def pruned_store(self) -> Store | None:
        return self.store if self.store.bodies_from > 0 else None

    def __iter__(self) -> Iterator[SourceItem]:
        store = self.store
        for h in range(self._head + 1):
            try:
                raw = store.get_block_bytes(h)
                cert_raw = store.get_certificate_bytes(h)
            except StoreError as exc:
                raise AuditFailure(h, "store_integrity", str(exc)) from None
            assert raw is not None
            yield decode_item(h, raw, cert_raw)

    def cross_check(self, height: int, execution: Execution) -> None:
        # What a restarted node or its RPC would read instead of re-executing: the app
        # metadata it reopens from and the indexes it serves lookups through.
        store = self.store
        block = execution.block
        try:
            if store.app_meta(height) != execution.state.app_meta():
                raise AuditFailure(
                    height, "store_integrity", "stored app metadata differs from the re-execution's"
                )
            if store.height_of_block(block.block_id) != height:
                raise AuditFailure(
                    height, "store_integrity", "block-id index does not point to this height"
                )
            for pos, tx_id in enumerate(block.tx_ids):
                if store.tx_location(tx_id) != (height, pos):
                    raise AuditFailure(
                        height,
                        "store_integrity",
                        f"tx index entry of tx "
                        f"{tx_id.hex()[:16]} does not point to ({height}, {pos})",
                    )
        except (StoreError, plyvel.Error) as exc:
            raise AuditFailure(height, "store_integrity", str(exc)) from None

    def final_check(self, report: AuditReport, progress: ProgressFn | None) -> None:
        if self._check_state:
            report.state_entries, report.state_versions = check_state_tree(self.store, progress)

    def close(self) -> None:
        self.store.close()
        self._tmp.cleanup()


class RpcLike(Protocol):
    """What RpcSource needs of cli.rpc_client.RpcClient."""

    def call(self, method: str, **params: Any) -> Any: ...

    def batch(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]: ...


class RpcSource(BlockSource):
    """A node's JSON-RPC ``getBlock``; the node is trusted for nothing but availability.

    Blocks are fetched ``batch`` at a time by a background thread (network waits overlap
    re-execution; libsodium and socket I/O release the GIL).
    """

    def __init__(self, client: RpcLike, *, batch: int = 4, prefetch: int = 4) -> None:
        self.notes = []
        self.client = client
        self.batch = max(1, batch)
        self.prefetch = max(1, prefetch)
        try:
            self._head = int(client.call("status")["height"])
        except Exception as exc:  # noqa: BLE001 - any failure here means "unreachable"
            raise _unavailable("cannot get the node's status", exc) from None

    @property
    def head_height(self) -> int:
        return self._head

    def _fetch(self, heights: range) -> list[SourceItem | AuditFailure]:
        """One batch, decoded; a block that does not decode ends the batch with its
        failure (the blocks before it are still checked first)."""
        try:
            answers = self.client.batch(
                [("getBlock", {"height": h, "include_txs": True}) for h in heights]
            )
        except Exception as exc:  # noqa: BLE001
            raise _unavailable(f"getBlock {heights.start}..{heights.stop - 1}", exc) from None
        out: list[SourceItem | AuditFailure] = []
        for h, doc in zip(heights, answers, strict=True):
            if isinstance(doc, Exception):
                raise _unavailable(f"getBlock {h}", doc)
            try:
                out.append(self._item(h, doc))
            except AuditFailure as failure:
                out.append(failure)
                break
        return out

    @staticmethod
    def _item(h: int, doc: Any) -> SourceItem:
        try:
            header = BlockHeader.decode(bytes.fromhex(doc["encoded"]))
            txs = tuple(Transaction.decode(bytes.fromhex(t)) for t in doc["txs"])
            cert_hex = doc["certificate"]
            cert = None if cert_hex is None else CommitCertificate.decode(bytes.fromhex(cert_hex))
        except (DecodeError, ValueError, KeyError, TypeError) as exc:
            raise AuditFailure(h, "decode", f"getBlock answer does not decode: {exc}") from None
        if header.tx_count != len(txs):
            raise AuditFailure(h, "decode", "header tx_count does not match the transactions")
        return h, Block(header, txs), cert

    def __iter__(self) -> Iterator[SourceItem]:
        q: Queue[list[SourceItem | AuditFailure] | BaseException | None] = Queue(self.prefetch)
        stop = threading.Event()

        def fetcher() -> None:
            try:
                for start in range(0, self._head + 1, self.batch):
                    if stop.is_set():
                        return
                    q.put(self._fetch(range(start, min(start + self.batch, self._head + 1))))
                q.put(None)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                q.put(exc)

        t = threading.Thread(target=fetcher, name="audit-rpc-fetch", daemon=True)
        t.start()
        try:
            while True:
                got = q.get()
                if got is None:
                    return
                if isinstance(got, BaseException):
                    raise got
                for item in got:
                    if isinstance(item, AuditFailure):
                        raise item
                    yield item
        finally:
            stop.set()
            while t.is_alive():  # unblock a fetcher waiting on a full queue
                while not q.empty():
                    q.get_nowait()
                t.join(0.05)
