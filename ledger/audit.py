"""The auditor's replay: re-execute a chain from genesis and name the first thing wrong.

``replay(source, genesis)`` reads the chain from a ``BlockSource`` (a node's data
directory, ``DatadirSource``, or a node's RPC, ``RpcSource``) and re-executes it into a
fresh scratch ``Ledger`` built from the genesis file alone, so nothing the source says
is trusted. For every block it checks, in this order: the chain link (chain id, height,
previous block id), the commit certificate against the validator set in force at that
height (``Ledger.commit``), then every rule of docs/PROOFS.md §9 by strict re-execution
(``ledger.state.validate_block``: every transaction signature — checked here in one
loop per block, a refused one re-checked by the rules, which report it — and every
state rule) and the header's tx root, state root, validator-set hashes and history
root against the re-execution. After the last block: the history consistency between the first
certified header (height 1) and the last, with an RFC 6962 consistency proof over the
re-derived block ids, and the last header's state root against the re-executed one.
A data-directory source also compares what the node keeps beside each block (app
metadata, block-id and tx indexes) and finally verifies its stored state tree
(``verify_state``): every retained version's root against its header, and every node
reachable from those versions re-hashed and compared with the hash its parent stores.

Rules:
- Pure logic: no printing, no clock except to report elapsed time; progress is a
  callback. The caller owns the scratch directory's parent (``workdir``).
- The replay stops at the first failure and returns it as ``AuditFailure(height,
  check, message)``; ``check`` is one of ``CHECKS``. A source that cannot be read at
  all (node unreachable, store locked and not copyable) raises ``SourceUnavailable``;
  that is not a verdict on the chain.
- A running node holds its LevelDB lock, and LevelDB's open writes its own bookkeeping
  files: audit a stopped node's data directory or a copy. ``DatadirSource`` copies the
  store to a temporary directory when the lock is held (and says so in ``notes``); a
  copy of a live store is a best effort (files are copied manifest first and retried if
  a compaction races the copy).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue
from typing import Any, Protocol

import plyvel

from ledger import merkle
from ledger.chain import Ledger
from ledger.errors import DecodeError, RuleError, StoreError
from ledger.smt_node import (
    BYTE,
    DEPTH,
    EMPTY_NODE,
    INTERNAL_HEADER,
    INTERNAL_PREFIX,
    LEAF_PREFIX,
    NodeError,
    check_internal,
    check_leaf,
    internal_hash,
    leaf_hash_of,
    root_key,
)
from ledger.smt_proof import EMPTY_ROOT, HASH_SIZE
from ledger.state import Execution
from ledger.store import Store
from ledger.types import Block, BlockHeader, CommitCertificate, Genesis, Transaction

#: The checks a failure can name, in the order a block meets them.
CHECKS = (
    "store_integrity",  # the source's stored bytes are damaged (CRC seal, LevelDB
    # checksum) or disagree with what re-execution produced
    "decode",  # bytes that are not the canonical encoding of a block/certificate
    "genesis",  # block 0 is not the block the genesis file defines
    "chain_link",  # chain id, height or prev_block_id does not follow the parent
    "certificate",  # no quorum of valid signatures of the validator set in force
    "signature",  # a transaction signature does not verify
    "rules",  # a transaction or block breaks a rule of PROOFS.md §9
    "tx_root",  # header tx_count / tx_root differ from the transactions
    "state_root",  # header state_root differs from re-execution
    "validator_set",  # header (next_)validator_set_hash differ from re-execution
    "history_root",  # header history_root differs from the re-derived block ids
    "history_consistency",  # first and last headers' history roots are not consistent
    "state_tree",  # the source's stored state tree does not hash to its roots
)

# RuleError codes of ledger.chain / ledger.state that have a check of their own; every
# other code is a state rule ("rules"). Block-level chain id, height and parent are
# checked before Ledger.commit, so "wrong_chain" from there is a transaction's.
_RULE_CHECKS = {
    "bad_certificate": "certificate",
    "bad_signature": "signature",
    "bad_tx_count": "tx_root",
    "bad_tx_root": "tx_root",
    "bad_state_root": "state_root",
    "bad_validator_set_hash": "validator_set",
    "bad_next_validator_set_hash": "validator_set",
    "bad_history_root": "history_root",
    "bad_height": "chain_link",
    "bad_parent": "chain_link",
}

#: A source yields, in height order from 0: (height, block, certificate or None at 0).
SourceItem = tuple[int, Block, CommitCertificate | None]


class AuditFailure(Exception):
    """The first thing wrong with the chain: at ``height``, ``check`` (one of CHECKS)."""

    def __init__(self, height: int, check: str, message: str) -> None:
        assert check in CHECKS, check
        super().__init__(f"height {height}: {check}: {message}")
        self.height = height
        self.check = check
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"height": self.height, "check": self.check, "message": self.message}


class SourceUnavailable(Exception):
    """The source cannot be read at all (not a finding about the chain)."""


class SourceRefused(SourceUnavailable):
    """The source answered but refused to serve us (e.g. no or insufficient credentials)."""


_UNAUTHORISED = -32002  # JSON-RPC error code of a refused credential (docs/RPC.md)


def _unavailable(what: str, exc: BaseException) -> SourceUnavailable:
    cls = SourceRefused if getattr(exc, "code", None) == _UNAUTHORISED else SourceUnavailable
    return cls(f"{what}: {exc}")


@dataclass(frozen=True)
class AuditProgress:
    """Where an audit is. ``phase`` "replay": ``done`` of ``total`` blocks replayed, up
    to ``height``, ``transactions`` so far. ``phase`` "state_tree": ``done`` of
    ``total`` state versions verified (``height`` the version being walked),
    ``transactions`` the entries of the newest version counted so far."""

    phase: str
    height: int
    done: int
    total: int
    transactions: int
    elapsed_s: float


ProgressFn = Callable[[AuditProgress], None]


@dataclass
class AuditReport:
    """What a replay verified, or the first failure (``failure``) and what came before it."""

    blocks: int = 0  # blocks verified, genesis included (heights 0..height)
    transactions: int = 0
    height: int = -1  # last verified height
    elapsed_s: float = 0.0
    head_block_id: bytes = b""
    state_root: bytes = b""
    state_entries: int | None = None  # entries of the source's verified state tree
    state_versions: int | None = None  # state versions whose roots were verified
    failure: AuditFailure | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def tx_per_s(self) -> float:
        return self.transactions / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "blocks": self.blocks,
            "transactions": self.transactions,
            "height": self.height,
            "seconds": round(self.elapsed_s, 3),
            "tx_per_s": round(self.tx_per_s, 1),
            "head_block_id": self.head_block_id.hex(),
            "state_root": self.state_root.hex(),
            "state_entries": self.state_entries,
            "state_versions": self.state_versions,
            "failure": None if self.failure is None else self.failure.to_json(),
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------- sources


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


def _copy_leveldb(src: Path, dst: Path, attempts: int = 3) -> None:
    """Copy a LevelDB that another process may be writing: CURRENT and manifests first
    (so every table they name existed when they were copied; tables are immutable),
    then the rest, skipping the lock. Retried when a compaction deletes a file mid-copy."""
    last: Exception | None = None
    for _ in range(attempts):
        shutil.rmtree(dst, ignore_errors=True)
        dst.mkdir(parents=True)
        try:
            first = [
                f for f in src.iterdir() if f.name == "CURRENT" or f.name.startswith("MANIFEST-")
            ]
            for f in first:
                shutil.copy2(f, dst / f.name)
            for f in src.iterdir():
                if f.name != "LOCK" and f not in first and f.is_file():
                    shutil.copy2(f, dst / f.name)
            return
        except OSError as exc:
            last = exc
            time.sleep(0.2)
    raise SourceUnavailable(
        f"cannot copy the locked ledger store {src}: {last}; stop the "
        f"node or copy its data directory yourself"
    )


def open_store_readonly(
    datadir: Path | str, genesis: Genesis, notes: list[str]
) -> tuple[Store, tempfile.TemporaryDirectory[str] | None]:
    """Open a node's ledger store for reading; copy it first if a running node holds it.

    Returns the store and the temporary directory of the copy (None if opened in place).
    ``StoreError`` for anything that is not this chain's store.
    """
    path = ledger_store_path(datadir)
    if not (path / "CURRENT").is_file():
        raise StoreError(
            f"no ledger store in {datadir}: expected a node data directory "
            f"(with ledger/ inside) or its ledger LevelDB"
        )
    try:
        return Store.open(
            path, chain_id=genesis.chain_id, genesis_hash=genesis.hash, create=False
        ), None
    except StoreError as exc:
        if "lock" not in str(exc).lower():
            raise
    tmp = tempfile.TemporaryDirectory(prefix="dvp-audit-copy-")
    try:
        copy = Path(tmp.name) / "ledger"
        for attempt in range(3):
            _copy_leveldb(path, copy)
            try:
                store = Store.open(
                    copy, chain_id=genesis.chain_id, genesis_hash=genesis.hash, create=False
                )
                break
            except StoreError:
                # a copy torn by the node's own writes (e.g. a table written after the
                # manifest was copied): copy again
                if attempt == 2:
                    raise
    except BaseException:
        tmp.cleanup()
        raise
    notes.append(
        f"{path} is locked by a running node: replayed a copy taken at "
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} (height {store.height}); stop the "
        f"node for an exact audit of its files"
    )
    return store, tmp


class DatadirSource(BlockSource):
    """A node's data directory (``<datadir>/ledger``), read through ``ledger.store``."""

    def __init__(self, datadir: Path | str, genesis: Genesis, *, check_state: bool = True) -> None:
        self.notes = []
        self.store, self._tmp = open_store_readonly(datadir, genesis, self.notes)
        self._head = self.store.height
        self._check_state = check_state

    @property
    def head_height(self) -> int:
        return self._head

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
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


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
            header = BlockHeader.decode(bytes.fromhex(doc["encoded_header"]))
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


# --------------------------------------------------------------------------- replay


def _rule_failure(height: int, err: RuleError) -> AuditFailure:
    return AuditFailure(height, _RULE_CHECKS.get(err.code, "rules"), f"{err.code}: {err.message}")


def replay(
    source: BlockSource,
    genesis: Genesis,
    *,
    workdir: Path | str | None = None,
    progress: ProgressFn | None = None,
) -> AuditReport:
    """Re-execute ``source`` from ``genesis``; the report names the first failure, if any.

    The scratch ledger lives in a fresh temporary directory under ``workdir`` (default:
    the system's) and is deleted afterwards. Raises ``SourceUnavailable`` if the source
    stops answering; never for a finding about the chain. Signatures are checked in this
    process (a pool of signature-checking processes gave no gain on a loaded 2-core
    machine).
    """
    report = AuditReport(notes=list(source.notes))
    t0 = time.perf_counter()
    target = source.head_height
    with tempfile.TemporaryDirectory(prefix="dvp-audit-", dir=workdir) as scratch_dir:
        # Two retained versions keep the scratch small; the replay reads only the head.
        scratch = Ledger.open(Path(scratch_dir) / "ledger", genesis, retain_versions=2)
        try:
            _replay_into(scratch, source, report, t0, target, progress)
            if report.failure is None:
                source.final_check(report, progress)
        except AuditFailure as failure:
            report.failure = failure
        finally:
            scratch.close()
            report.elapsed_s = time.perf_counter() - t0
    report.notes = list(source.notes)
    return report


def _replay_into(
    scratch: Ledger,
    source: BlockSource,
    report: AuditReport,
    t0: float,
    target: int,
    progress: ProgressFn | None,
) -> None:
    chain_id = scratch.chain_id
    history = merkle.MerkleTree()
    first: BlockHeader | None = None
    last: BlockHeader | None = None
    for h, block, cert in source:
        header = block.header
        if h != (0 if last is None else last.height + 1):
            raise AuditFailure(h, "store_integrity", "the source skipped a height")
        if h == 0:
            ours = scratch.store.get_header(0)
            if header != ours or block.txs or cert is not None:
                raise AuditFailure(
                    0,
                    "genesis",
                    "block 0 is not the genesis file's block "
                    "(wrong genesis file, or the source's genesis differs)",
                )
        else:
            assert last is not None
            if header.chain_id != chain_id:
                raise AuditFailure(
                    h, "chain_link", f"block is for chain {header.chain_id!r}, not {chain_id!r}"
                )
            if header.height != h:
                raise AuditFailure(
                    h, "chain_link", f"block at height {h} says height {header.height}"
                )
            if header.prev_block_id != last.block_id:
                raise AuditFailure(h, "chain_link", f"prev_block_id is not the id of block {h - 1}")
            if cert is None:
                raise AuditFailure(h, "certificate", "the block has no commit certificate")
            valid = _valid_signatures(block.txs)
            try:
                # Verifies the certificate against the set in force at h, then re-executes
                # strictly and compares every header field with the re-execution. The
                # rules re-check any signature not in ``valid``, so a bad one is reported
                # by them ("bad_signature") at its place in the block.
                ex = scratch.commit(block, cert, verified=valid.__contains__)
            except RuleError as err:
                raise _rule_failure(h, err) from None
            source.cross_check(h, ex)
            report.transactions += len(block.txs)
            if first is None:
                first = header
        history.append(merkle.leaf_hash(header.block_id))
        last = header
        report.blocks += 1
        report.height = h
        report.head_block_id = header.block_id
        report.state_root = header.state_root
        if progress is not None:
            progress(
                AuditProgress(
                    "replay",
                    h,
                    report.blocks,
                    target + 1,
                    report.transactions,
                    time.perf_counter() - t0,
                )
            )
    if last is None:
        raise AuditFailure(0, "genesis", "the source holds no blocks")
    if last.height != target:
        raise AuditFailure(
            last.height + 1,
            "store_integrity",
            f"the source ended at height {last.height}, not {target}",
        )
    if scratch.head.state_root != last.state_root:
        raise AuditFailure(
            last.height,
            "state_root",
            "the last header's state root is not the re-executed state root",
        )
    if first is not None:
        _check_history(history, first, last)


def _valid_signatures(txs: tuple[Transaction, ...]) -> set[bytes]:
    """Ids of the transactions whose signature verifies, all checked in one tight loop.

    Signature checks are over half of a replay's time, and they run faster back to back
    than interleaved with block execution (which evicts libsodium's code and tables from
    the caches): an A/B replay of 2,000-transaction blocks measured ~5% more tx/s.
    """
    return {tx.tx_id for tx in txs if tx.signature_ok()}


def _check_history(history: merkle.MerkleTree, first: BlockHeader, last: BlockHeader) -> None:
    """Header h's history root covers blocks 0..h-1 (size h): prove, from the re-derived
    block ids, that the first certified header's history is a prefix of the last's."""
    n = last.height
    if history.root(n) != last.history_root:
        raise AuditFailure(
            n,
            "history_consistency",
            "the last header's history root is not the root of the replayed block ids",
        )
    proof = history.consistency_proof(first.height, n)
    if not merkle.verify_consistency(first.height, n, proof, first.history_root, last.history_root):
        raise AuditFailure(
            n,
            "history_consistency",
            f"history root of height {first.height} is not consistent with that of height {n}",
        )


# --------------------------------------------------------------------------- state tree

# Node encodings, node keys, what a valid node is and the hash of a stored node:
# ledger/smt_node.py. Hashes: docs/proofs-smt.md.
_TICK_ENTRIES = 8192  # progress reports while a (large) version is walked


class _StateWalk:
    """Re-hash a stored state tree from its root records down.

    The tree's own reads trust storage (they do not re-hash), so a damaged node would be
    served as is. This walk checks every reachable node top-down: a node's hash,
    computed from its own encoding, must be the hash its parent stores for it (the root
    record's, the header's state root). Checking a node before its children blames the
    node whose bytes changed: a flipped child hash makes its holder's hash wrong.
    Internal nodes whose subtrees were verified (shared between versions) are
    remembered by node key, so checking several versions costs one walk of the newest
    plus the paths the others changed. ``entries`` counts the leaves visited by the last
    ``check`` (all of them for the first version walked).

    Hot loop (one LevelDB read and two hashes per entry): node keys are built from the
    parent's packed path and the version bytes sliced from its encoding rather than
    decoded, which makes the walk several times faster than going through the tree's
    reads. Whether a node is well formed, and its hash, are ledger/smt_node.py's
    (the one definition of the node format).
    """

    def __init__(
        self, get_node: Callable[[bytes], bytes | None], tick: Callable[[int], None] | None = None
    ) -> None:
        self.get_node = get_node
        # internal node key -> its hash, for nodes whose whole subtree was verified
        self.verified: dict[bytes, bytes] = {}
        self.entries = 0
        self.tick = tick  # called with ``entries`` every TICK_ENTRIES leaves

    def check(self, version: int, state_root: bytes) -> None:
        """Verify version ``version`` against the certified ``state_root``."""
        self.entries = 0
        nk = root_key(version)
        enc = self.get_node(nk)
        if enc is None:
            raise AuditFailure(version, "state_tree", f"no root record for state version {version}")
        if enc == EMPTY_NODE:
            root = EMPTY_ROOT
        elif enc[:1] == LEAF_PREFIX:
            root = self._leaf_hash(nk, enc, b"", 0)
        else:
            root = self._internal_hash(nk, enc)
        if root != state_root:
            raise AuditFailure(
                version,
                "state_tree",
                f"the root record of state version "
                f"{version} hashes to {root.hex()[:16]}, not the header's "
                f"state root {state_root.hex()[:16]}",
            )
        if enc[:1] == INTERNAL_PREFIX:
            self._descend(nk, enc, 0, b"")

    @staticmethod
    def _fail(nk: bytes, what: str) -> AuditFailure:
        version = int.from_bytes(nk[:8], "big")
        return AuditFailure(
            version,
            "state_tree",
            f"state node {nk.hex()} (written at version {version}, depth {nk[8]}): {what}",
        )

    def _leaf_hash(self, nk: bytes, enc: bytes, packed: bytes, depth: int) -> bytes:
        try:
            check_leaf(enc)
        except NodeError:
            raise self._fail(nk, "expected a leaf") from None
        key = enc[1:33]
        # The leaf must sit on its own key's path: its first ``depth`` nibbles.
        n = len(packed)
        if depth & 1:
            on_path = key[: n - 1] == packed[:-1] and key[n - 1] & 0xF0 == packed[-1]
        else:
            on_path = key[:n] == packed
        if not on_path:
            raise self._fail(nk, "leaf key is not on the node's path")
        self.entries += 1
        if not self.entries % _TICK_ENTRIES and self.tick is not None:
            self.tick(self.entries)
        return leaf_hash_of(enc)

    def _internal_hash(self, nk: bytes, enc: bytes) -> bytes:
        try:
            return internal_hash(check_internal(enc))
        except NodeError as exc:
            raise self._fail(nk, str(exc)) from None

    def _descend(self, nk: bytes, enc: bytes, depth: int, packed: bytes) -> None:
        """Check every child of the (already checked) internal node ``enc`` at ``depth``,
        whose path is ``packed`` (``depth`` nibbles, two per byte)."""
        bitmap = enc[1] << 8 | enc[2]
        leafmap = enc[3] << 8 | enc[4]
        voff = INTERNAL_HEADER + HASH_SIZE * bitmap.bit_count()
        child_depth = DEPTH[depth + 1]
        get, verified = self.get_node, self.verified
        i = 0
        for nib in range(16):
            if not bitmap >> nib & 1:
                continue
            # the child's path: this node's path plus nibble ``nib``
            if depth & 1:
                child_packed = packed[:-1] + BYTE[packed[-1] | nib]
            else:
                child_packed = packed + BYTE[nib << 4]
            ck = enc[voff + 8 * i : voff + 8 * i + 8] + child_depth + child_packed
            stored = enc[5 + 32 * i : 37 + 32 * i]
            i += 1
            if leafmap >> nib & 1:
                child = get(ck)
                if child is None:
                    raise self._fail(ck, f"missing (referenced by {nk.hex()})")
                if self._leaf_hash(ck, child, child_packed, depth + 1) != stored:
                    raise self._fail(ck, "its hash is not the one its parent stores")
            else:
                known = verified.get(ck)
                if known is None:
                    child = get(ck)
                    if child is None:
                        raise self._fail(ck, f"missing (referenced by {nk.hex()})")
                    known = self._internal_hash(ck, child)
                    if known != stored:
                        raise self._fail(ck, "its hash is not the one its parent stores")
                    self._descend(ck, child, depth + 1, child_packed)
                    verified[ck] = known
                elif known != stored:
                    # verified from another version: this parent expects other bytes
                    raise self._fail(nk, "a child hash differs from the child's")


def check_state_tree(store: Store, progress: ProgressFn | None = None) -> tuple[int, int]:
    """Verify the store's state tree: (entries at the head, versions checked).

    Every retained version (``state_pruned_below`` .. head) must have a root that equals
    its header's state root, and every node reachable from them must hash to what its
    parent says. Raises ``AuditFailure("state_tree" | "store_integrity")``.
    """
    head = store.height

    def get_node(node_key: bytes) -> bytes | None:
        try:
            return store.get_node(node_key)
        except plyvel.Error as exc:  # LevelDB's own checksums or I/O
            version = int.from_bytes(node_key[:8], "big")
            raise AuditFailure(
                version,
                "store_integrity",
                f"state node {node_key.hex()}: LevelDB read failed ({exc})",
            ) from None

    t0 = time.perf_counter()
    versions = range(head, max(0, store.state_pruned_below) - 1, -1)
    done = 0
    current = head

    def report(entries: int) -> None:
        if progress is not None:
            progress(
                AuditProgress(
                    "state_tree", current, done, len(versions), entries, time.perf_counter() - t0
                )
            )

    walk = _StateWalk(get_node, report if progress is not None else None)
    entries = 0
    for v in versions:
        current = v
        try:
            header = store.get_header(v)
        except StoreError as exc:
            raise AuditFailure(v, "store_integrity", str(exc)) from None
        assert header is not None
        walk.check(v, header.state_root)
        if v == head:
            entries = walk.entries
        done += 1
        report(entries)
    return entries, len(versions)


def verify_state(
    datadir: Path | str, genesis: Genesis, progress: ProgressFn | None = None
) -> AuditReport:
    """Verify a node's stored state tree alone (no replay): see ``check_state_tree``."""
    report = AuditReport()
    t0 = time.perf_counter()
    store, tmp = open_store_readonly(datadir, genesis, report.notes)
    try:
        report.height = store.height
        header = store.get_header(store.height)
        if header is not None:
            report.head_block_id, report.state_root = header.block_id, header.state_root
        report.state_entries, report.state_versions = check_state_tree(store, progress)
    except AuditFailure as failure:
        report.failure = failure
    except StoreError as exc:
        report.failure = AuditFailure(store.height, "store_integrity", str(exc))
    finally:
        store.close()
        if tmp is not None:
            tmp.cleanup()
        report.elapsed_s = time.perf_counter() - t0
    return report


def replay_datadir(
    datadir: Path | str,
    genesis: Genesis,
    *,
    workdir: Path | str | None = None,
    progress: ProgressFn | None = None,
    check_state: bool = True,
) -> AuditReport:
    """``replay`` a node's data directory, then verify its stored state tree."""
    source = DatadirSource(datadir, genesis, check_state=check_state)
    try:
        return replay(source, genesis, workdir=workdir, progress=progress)
    finally:
        source.close()
