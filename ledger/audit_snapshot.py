"""The auditor's replay of a pruned store: from a certified snapshot, not from genesis.

Part of ``ledger.audit`` (``replay`` calls ``replay_from_snapshot`` for a data directory
whose store pruned block bodies, ``Store.bodies_from > 0``). A pruned store keeps every
header, certificate and app-metadata record, the newest state versions and the bodies
from ``bodies_from`` on, so the replay:

1. **Certified headers from genesis to the snapshot height s.** Header 0 is the genesis
   file's; for every h in 1..s: the chain link (chain id, height, previous block id),
   the validator set named by header h-1's ``next_validator_set_hash`` (the set itself
   is read from the chain record stored with block h-1 and must hash to it, so nothing
   unpinned is trusted), header h's certificate against that set, and header h's
   history root against the block ids seen so far; where the body is kept, its
   transactions against the header's tx root (they are not re-executed: no state
   before s is kept to execute them on).
2. **The snapshot.** s is the lowest height whose state version the store still holds
   whole and above which every body is kept: ``max(state_pruned_below, bodies_from -
   1)``. The stored state tree (every retained version, s included) is re-hashed node
   by node first (``check_state_tree``), and version s's root must be header s's state
   root, which step 1 proved certified.
3. **Replay s+1..head** exactly as from genesis: each certificate against the set in
   force, strict re-execution (``validate_block``: signatures, rules, every header
   field), on an in-memory overlay of the executions over the snapshot's tree.

What it trusts that a replay from genesis does not (docs/PROOFS.md §13): that the
transactions below s were valid (their effect is the certified state root s), and,
for replay protection of those transactions, the store's tx index below s (a tx id
the index lacks would be accepted again). Blocks below s cannot be re-executed: their
bodies are gone; replay from genesis against an archive node for that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

from ledger import merkle
from ledger.audit_report import (
    AuditFailure,
    AuditProgress,
    AuditReport,
    ProgressFn,
    rule_failure,
)
from ledger.errors import (
    DecodeError,
    ProtocolVersionError,
    RuleError,
    StoreError,
    ValidationError,
)
from ledger.header_link import LinkFailure, check_link
from ledger.smt import OverlayReader, SparseMerkleTree
from ledger.state import SeenTxs, decode_app_meta, genesis_execution, load_state, validate_block
from ledger.store import Store
from ledger.types import BlockHeader, Genesis

_T = TypeVar("_T")


def snapshot_height(store: Store) -> int:
    """The height the replay of a pruned store starts from (see the module docstring)."""
    return min(store.height, max(store.state_pruned_below, store.bodies_from - 1))


def _read(what: Callable[[], _T | None], h: int) -> _T:
    try:
        value = what()
    except (StoreError, DecodeError) as exc:
        raise AuditFailure(h, "store_integrity", str(exc)) from None
    if value is None:
        raise AuditFailure(h, "store_integrity", "the record is missing")
    return value


def _header(store: Store, h: int) -> BlockHeader:
    return _read(partial(store.get_header, h), h)


def _certified_headers(
    store: Store,
    genesis: Genesis,
    upto: int,
    report: AuditReport,
    t0: float,
    progress: ProgressFn | None,
) -> tuple[BlockHeader, merkle.MerkleTree]:
    """Step 1: headers 0..``upto`` proven from genesis; (header ``upto``, their ids)."""
    chain_id = genesis.chain_id
    prev = _header(store, 0)
    if prev != genesis_execution(genesis).block.header:
        raise AuditFailure(
            0, "genesis", "block 0 is not the genesis file's block (wrong genesis file?)"
        )
    history = merkle.MerkleTree()
    history.append(merkle.leaf_hash(prev.block_id))
    for h in range(1, upto + 1):
        header = _header(store, h)
        meta = _read(partial(store.app_meta, h - 1), h - 1)
        try:
            prev_meta = decode_app_meta(meta)
        except DecodeError as exc:
            raise AuditFailure(h - 1, "store_integrity", f"app metadata: {exc}") from None
        cert = _read(partial(store.get_certificate, h), h)
        try:
            check_link(chain_id, prev, prev_meta, header, cert, history.root(h))
        except LinkFailure as exc:
            raise AuditFailure(exc.height, exc.kind, exc.message) from None
        if h >= store.bodies_from:  # a kept body below the snapshot: the certified one?
            block = _read(partial(store.get_block, h), h)
            if block.header != header or merkle.root(block.tx_ids) != header.tx_root:
                raise AuditFailure(h, "tx_root", "the kept transactions are not the header's")
        history.append(merkle.leaf_hash(header.block_id))
        prev = header
        report.blocks += 1
        if progress is not None:
            progress(AuditProgress("headers", h, h, upto, 0, time.perf_counter() - t0))
    return prev, history


def replay_from_snapshot(
    store: Store,
    genesis: Genesis,
    report: AuditReport,
    t0: float,
    progress: ProgressFn | None,
) -> None:
    """Steps 1 and 3 of the module docstring (the caller re-hashed the state tree, step 2,
    first). Raises ``AuditFailure`` at the first finding; fills ``report``."""
    head = store.height
    start = snapshot_height(store)
    header, history = _certified_headers(store, genesis, start, report, t0, progress)
    overlay = OverlayReader(store)
    tree = SparseMerkleTree(overlay)
    if tree.root(start) != header.state_root:
        raise AuditFailure(
            start, "state_root", "the stored state's root is not the certified header's"
        )

    def seen_before(tx_id: bytes) -> bool:
        loc = store.tx_location(tx_id)
        return loc is not None and loc[0] <= start

    meta = _read(lambda: store.app_meta(start), start)
    try:
        parent = load_state(
            genesis.chain_id,
            start,
            header,
            meta,
            tree,
            SeenTxs([], seen_before, lambda: start),
        )
    except DecodeError as exc:
        raise AuditFailure(start, "store_integrity", f"the snapshot does not load: {exc}") from None
    report.notes.append(
        f"the store's block bodies below height {store.bodies_from} are pruned: verified "
        f"the certified headers 0..{start} from genesis and the state at height {start} "
        f"against header {start}, then re-executed blocks {start + 1}..{head}; replay "
        f"against an archive node to re-execute from genesis"
    )
    for h in range(start + 1, head + 1):
        try:
            block = store.get_block(h)
            cert = store.get_certificate(h)
        except StoreError as exc:
            raise AuditFailure(h, "store_integrity", str(exc)) from None
        assert block is not None and cert is not None
        if block.header.prev_block_id != header.block_id:
            raise AuditFailure(h, "chain_link", f"prev_block_id is not the id of block {h - 1}")
        try:
            cert.verify(genesis.chain_id, parent.validators_at(h), block.block_id)
        except ValidationError as exc:
            raise AuditFailure(h, "certificate", str(exc)) from None
        if cert.height != h:
            raise AuditFailure(h, "certificate", "the certificate names another height")
        valid = {tx.tx_id for tx in block.txs if tx.signature_ok()}
        try:
            ex = validate_block(parent, block, valid.__contains__)
        except RuleError as err:
            raise rule_failure(h, err, block, parent.key_index) from None
        except ProtocolVersionError as exc:
            raise AuditFailure(h, "protocol_version", str(exc)) from None
        overlay.push(ex.update.new_nodes)
        parent, header = ex.state, block.header
        if header.history_root != history.root(h):
            raise AuditFailure(
                h, "history_consistency", "the history root is not that of the block ids"
            )
        history.append(merkle.leaf_hash(header.block_id))
        report.blocks += 1
        report.transactions += len(block.txs)
        report.count_consent(block.txs)
        if progress is not None:
            progress(
                AuditProgress(
                    "replay",
                    h,
                    h - start,
                    head - start,
                    report.transactions,
                    time.perf_counter() - t0,
                )
            )
    report.height = head
    report.head_block_id = header.block_id
    report.state_root = header.state_root
