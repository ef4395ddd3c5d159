"""Is a ledger store whole? The check a node runs before it serves, and its full form.

``check_ledger(ledger)`` is what a node runs at every start (``node/stores.py``), before
it reports ready; ``check_ledger(ledger, recent=None)`` is the full check of ``dvp store
check``. Both expect a store opened with ``verify_tables=True``: LevelDB's checksums of
every table, log record and manifest entry were read then, so bit rot anywhere is
already found. What a checksum cannot show is checked here: that the records make one
certified chain, and that the indexes and the state tree agree with it.

Start-up check (``recent = RECENT_BLOCKS``):

- every height 0..head has a header, block, app-metadata and block-id entry, and every
  height 1..head a certificate, none above (key counts and end keys: a table LevelDB
  lost with a damaged manifest would leave a hole below the committed height);
- block 0 is the genesis file's block (its id, from the genesis file alone);
- for the newest ``recent`` heights (fewer when they hold more than ``RECENT_TXS``
  transactions, see ``RECENT_BLOCKS``): the header decodes at its height and links to its
  parent's id; its tx count and tx root are its transactions'; the certificate
  verifies against the validator set in force at that height (the chain record stored
  with its parent, back to genesis); the app metadata decodes; the block-id, tx and
  attested-commitment ("K") indexes point at the block; its transaction chunks follow
  one another and its tx-tree node record is its transactions' tree (ledger/tx_tree.py);
- the root record of every retained state version hashes to its header's state root.

Full check (``recent=None``): the same for every height, every node of every retained
state version re-hashed (``ledger.audit_state``), and no tx or attested-commitment index
entry, transaction chunk or tx-tree node record that no block explains (their counts
equal the transactions, ATTESTs and chunks seen).

A pruned store (``Store.prune_bodies``, ``[ledger] retain_blocks``) keeps block bodies
from ``bodies_from`` on, recorded in its metadata: bodies below it are expected to be
absent (and one present there is stray), never reported as damage. At pruned heights
the header, certificate, app metadata and block-id index are checked as above; the
transactions cannot be, so the full check compares the tx index's size with the
headers' tx counts there and skips the attested-commitment count (an ATTEST count
needs the bodies). A store joined by state sync (``ledger.state_snapshot``) is such a
store whose tx index starts at its lowest kept body (``Store.tx_indexed_from``) and whose
state versions start at its snapshot height; it has no attested-commitment index.

A finding raises ``StoreDamage`` naming the store, what is wrong and where (a height, a
transaction, a state version). It never re-executes blocks: that is the auditor's
replay (``dvp audit replay``), which trusts the store for nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ledger import merkle, tx_tree
from ledger.audit_report import AuditFailure, AuditProgress, ProgressFn
from ledger.audit_state import check_state_tree
from ledger.chain import Ledger
from ledger.errors import DecodeError, StoreDamage, ValidationError
from ledger.kv import KV_ERRORS
from ledger.state import decode_app_meta, genesis_execution
from ledger.store import Store
from ledger.store_format import (
    P_APP,
    P_ATTESTED,
    P_BLOCK,
    P_BLOCK_ID,
    P_CERT,
    P_CHUNK,
    P_HEADER,
    P_TX,
    P_TX_TREE,
    h8,
    leveldb_reason,
)
from ledger.types import ZERO_HASH, Block, BlockHeader, TxKind

#: Heights whose records a node checks one by one at every start: the newest 64 (16
#: pipeline windows, more than the 8 state versions a node keeps), or fewer, down to
#: ``RECENT_MIN_BLOCKS``, when they hold more than ``RECENT_TXS`` transactions. Measured
#: (100,000 attestations in 500-tx blocks, shared 2-core machine): ~16 us per
#: transaction, mostly decoding them and two index reads each; 20,000 keep a start
#: under load to ~0.3 s.
RECENT_BLOCKS = 64
RECENT_TXS = 20_000
RECENT_MIN_BLOCKS = 8


@dataclass
class StoreCheck:
    """What ``check_ledger`` covered (it raises ``StoreDamage`` on a finding)."""

    path: str
    height: int
    blocks: int = 0  # heights whose records were checked one by one
    transactions: int = 0  # their transactions (tx and K index entries checked)
    state_versions: int = 0
    state_entries: int | None = None  # leaves re-hashed (full check only)
    elapsed_s: float = 0.0
    full: bool = False


def check_ledger(
    ledger: Ledger, *, recent: int | None = RECENT_BLOCKS, progress: ProgressFn | None = None
) -> StoreCheck:
    """Check ``ledger``'s store (see the module docstring); ``recent=None``: in full."""
    store = ledger.store
    report = StoreCheck(str(store.path), store.height, full=recent is None)
    t0 = time.perf_counter()
    try:
        _check(ledger, recent, report, progress, t0)
    except AuditFailure as failure:
        where = "state version" if failure.check == "state_tree" else "height"
        raise _damage(store, f"{where} {failure.height}", failure.message) from None
    except StoreDamage as exc:
        raise _damage(store, "", str(exc)) from None
    except KV_ERRORS as exc:
        raise _damage(store, "", f"LevelDB read failed: {leveldb_reason(exc)}") from None
    report.elapsed_s = time.perf_counter() - t0
    return report


def _damage(store: Store, where: str, what: str) -> StoreDamage:
    prefix = f"{store.path}: "
    what = what.removeprefix(prefix)
    return StoreDamage(f"{prefix}{what}" + (f" ({where})" if where else ""))


def _check(
    ledger: Ledger,
    recent: int | None,
    report: StoreCheck,
    progress: ProgressFn | None,
    t0: float,
) -> None:
    store = ledger.store
    head = store.height
    _check_key_spans(store)
    genesis_id = genesis_execution(ledger.genesis).block.block_id
    if store.get_block_id(0) != genesis_id:
        raise _damage(
            store, "height 0", "block 0 is not the genesis file's block (or the header is damaged)"
        )
    report.blocks = 1
    lo = 1 if recent is None else _window(store, recent)
    attests = 0
    indexed = 0  # transactions the tx index must hold (from ``tx_indexed_from`` on)
    prev_id = store.get_block_id(lo - 1) if head >= 1 else ZERO_HASH
    total = head - lo + 1
    for h in range(lo, min(store.bodies_from, head + 1)):
        header = store.get_header(h)
        assert header is not None and prev_id is not None
        _check_header(ledger, h, header, prev_id)
        prev_id = header.block_id
        report.blocks += 1
        report.transactions += header.tx_count
        if h >= store.tx_indexed_from:
            indexed += header.tx_count
    # "X" chunks and "P" node records the kept bodies explain (block 0's is not read below)
    genesis = store.get_header(0)
    assert genesis is not None
    genesis_txs = genesis.tx_count if store.bodies_from == 0 else 0
    body_records = [tx_tree.chunk_count(genesis_txs) - 1, int(genesis_txs > tx_tree.CHUNK_TXS)]
    for block in store.iter_blocks(max(lo, store.bodies_from), head):
        assert prev_id is not None
        attests += _check_block(ledger, block, prev_id)
        body_records[0] += tx_tree.chunk_count(len(block.txs)) - 1
        body_records[1] += len(block.txs) > tx_tree.CHUNK_TXS
        prev_id = block.block_id
        report.blocks += 1
        report.transactions += len(block.txs)
        if block.height >= store.tx_indexed_from:
            indexed += len(block.txs)
        if progress is not None:
            progress(
                AuditProgress(
                    "blocks",
                    block.height,
                    report.blocks,
                    total,
                    report.transactions,
                    time.perf_counter() - t0,
                )
            )
    if recent is None:
        _check_index_counts(store, head, indexed, attests)
        _check_body_record_counts(store, head, *body_records)
    report.state_entries, report.state_versions = check_state_tree(
        store, progress, roots_only=recent is not None
    )
    if recent is not None:
        report.state_entries = None


def _window(store: Store, recent: int) -> int:
    """The lowest height the start-up check reads block by block (see RECENT_BLOCKS)."""
    head = store.height
    lo = max(1, head - recent + 1)
    txs = 0
    for h in range(head, lo - 1, -1):
        header = store.get_header(h)
        assert header is not None
        txs += header.tx_count
        if txs > RECENT_TXS and head - h + 1 >= RECENT_MIN_BLOCKS:
            return h
    return lo


def _check_key_spans(store: Store) -> None:
    """Exactly one header, block, app-metadata and block-id entry per height 0..head and
    one certificate per height 1..head."""
    head = store.height
    for prefix, what, first in (
        (P_HEADER, "header", 0),
        (P_BLOCK, "block", store.bodies_from),
        (P_APP, "app metadata", 0),
        (P_CERT, "certificate", 1),
    ):
        count, lo, hi = store.key_span(prefix)
        want = head - first + 1
        if want <= 0 and count == 0:
            continue
        if count != want or lo != prefix + h8(first) or hi != prefix + h8(head):
            raise _damage(
                store,
                f"heights {first}..{head}",
                f"{count} {what} records where {want} belong (first "
                f"{_height_of(lo)}, last {_height_of(hi)}): records are missing or stray",
            )
    count, _lo, _hi = store.key_span(P_BLOCK_ID)
    if count != head + 1:
        raise _damage(
            store,
            f"heights 0..{head}",
            f"the block-id index holds {count} entries for {head + 1} blocks",
        )


def _height_of(key: bytes | None) -> str:
    return "none" if key is None else str(int.from_bytes(key[1:9], "big"))


def _check_block(ledger: Ledger, block: Block, prev_id: bytes) -> int:
    """One height's records (the block was read through the store's sealed reads);
    returns how many ATTESTs it holds."""
    store, h, header = ledger.store, block.height, block.header
    where = f"height {h}"
    _check_header(ledger, h, header, prev_id)
    tx_ids = block.tx_ids
    if merkle.root(tx_ids) != header.tx_root:
        raise _damage(store, where, "the transactions do not hash to the header's tx root")
    nodes = tx_tree.upper_nodes(tx_ids)
    if nodes:  # (a block of one chunk has no node record, and one would be stray)
        if store.get_tx_tree_nodes(h) != nodes:
            raise _damage(store, where, "the tx-tree node record is not the transactions' tree")
    elif store.has_tx_tree_nodes(h):
        raise _damage(store, where, "a tx-tree node record is stored for a block of one chunk")
    attests = 0
    for pos, tx in enumerate(block.txs):
        if store.tx_location(tx_ids[pos]) != (h, pos):
            raise _damage(
                store,
                f"{where}, transaction {pos}",
                f"the tx index entry of {tx_ids[pos].hex()[:16]}... does not point here",
            )
        if tx.kind == TxKind.ATTEST and store.attestation_indexed:
            attests += 1
            commitment: bytes = tx.payload.commitment  # type: ignore[union-attr]
            if store.attested_height(commitment) != h:
                raise _damage(
                    store,
                    f"{where}, transaction {pos}",
                    f"the attested-commitment index entry of {commitment.hex()[:16]}... "
                    f"does not point here",
                )
    return attests


def _check_header(ledger: Ledger, h: int, header: BlockHeader, prev_id: bytes) -> None:
    """Height ``h``'s records other than its body: the link, the certificate, the app
    metadata and the block-id index (all a pruned height still has)."""
    store = ledger.store
    where = f"height {h}"
    if header.height != h:
        raise _damage(store, where, f"the header says height {header.height}")
    if header.prev_block_id != prev_id:
        raise _damage(store, where, f"the header does not link to block {h - 1}'s id")
    if header.chain_id != ledger.chain_id:
        raise _damage(store, where, f"the header names chain {header.chain_id!r}")
    cert = store.get_certificate(h)
    assert cert is not None
    try:
        _start, validators = ledger.epoch_at(h)
        cert.verify(ledger.chain_id, validators, header.block_id)
    except (ValidationError, DecodeError) as exc:
        raise _damage(store, where, f"the commit certificate does not verify: {exc}") from None
    except KeyError:
        raise _damage(store, where, "no validator set is recorded for this height") from None
    meta = store.app_meta(h)
    assert meta is not None
    try:
        decode_app_meta(meta)
    except DecodeError as exc:
        raise _damage(store, where, f"the app metadata does not decode: {exc}") from None
    if store.height_of_block(header.block_id) != h:
        raise _damage(store, where, "the block-id index does not point to this height")


def _check_body_record_counts(store: Store, head: int, chunks: int, nodes: int) -> None:
    """After every kept body was read: no transaction chunk or tx-tree node record that
    no kept body explains (a pruned height's would be stray)."""
    _check_counts(
        store,
        f"heights {store.bodies_from}..{head}",
        [(P_CHUNK, "transaction chunks", chunks), (P_TX_TREE, "tx-tree node records", nodes)],
    )


def _check_counts(store: Store, where: str, wants: list[tuple[bytes, str, int]]) -> None:
    for prefix, what, want in wants:
        count, _lo, _hi = store.key_span(prefix)
        if count != want:
            raise _damage(store, where, f"{what}: {count} entries, the blocks explain {want}")


def _check_index_counts(store: Store, head: int, txs: int, attests: int) -> None:
    """After every block's entries were found: no entry that no block explains."""
    wants = [(P_TX, "the tx index", txs)]
    # (an ATTEST count needs every body; genesis has no transactions)
    if store.attestation_indexed and store.bodies_from <= 1:
        wants.append((P_ATTESTED, "the attested index", attests))
    _check_counts(store, f"heights 0..{head}", wants)
