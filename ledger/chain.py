"""The ledger as a node or auditor uses it: store + state tree + rules, in one object.

``Ledger`` owns the committed head (``head``), a chain of *pending* executions above it
(blocks proposed or prepared but not yet certified, at most one per height), and the
state tree that reads through both. It is the only path by which blocks reach the store.

Rules:
- ``commit`` persists a block only with a certificate that verifies against the
  validator set in force at its height, re-executing the block unless the identical
  block is already pending (executed and validated earlier).
- Pending executions are speculative: a new execution at height h discards every pending
  one at >= h, so the state tree's overlay only ever holds one branch.
- State-tree versions older than ``retain_versions`` are pruned after each commit;
  proofs can be served for every retained height. ``state_pin`` (set while a peer
  fetches a state snapshot, node/sync.py) keeps every version from it on as well.
- With ``retain_blocks = N > 0`` the bodies (transactions) of blocks more than N below
  the head are pruned after each commit, at most ``PRUNE_BODIES_PER_COMMIT`` per commit
  (so a node that turns pruning on catches up over many commits, never in one long
  stall); headers, certificates, app metadata, indexes and state stay
  (``Store.prune_bodies``). 0 keeps every body (an archive node).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from ledger.errors import RuleError, StoreError, ValidationError
from ledger.kv import KV
from ledger.smt import OverlayReader, SparseMerkleTree
from ledger.state import (
    Execution,
    LedgerState,
    SeenTxs,
    decode_app_meta,
    execute,
    execute_genesis,
    load_state,
    validate_block,
)
from ledger.store import Store
from ledger.types import Block, CommitCertificate, Genesis, Transaction, ValidatorSet

# Proofs are served at the newest certified height. 8 older versions cover the pipeline
# of in-flight blocks; every retained version keeps the nodes its successors rewrote
# (~1.5 MB per 2,000-attestation block at 10^6 entries), so a long retention would
# dominate disk use.
DEFAULT_RETAIN_VERSIONS = 8
# Bodies pruned after one commit: more than one per commit so that pruning catches up
# when switched on, few enough that one commit's pruning stays a single small batch.
PRUNE_BODIES_PER_COMMIT = 16


class Ledger:
    """A chain on disk plus speculative executions above its committed head."""

    def __init__(
        self,
        store: Store,
        genesis: Genesis,
        retain_versions: int = DEFAULT_RETAIN_VERSIONS,
        retain_blocks: int = 0,
    ) -> None:
        self.store = store
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        self.retain_versions = max(1, retain_versions)
        self.retain_blocks = retain_blocks
        self._overlay = OverlayReader(store)
        self.tree = SparseMerkleTree(self._overlay)
        self.pending: dict[int, Execution] = {}
        self.state_pin: int | None = None
        if store.importing:
            raise StoreError(
                f"{store.path} holds an unfinished state-sync import: start the node with "
                f"state sync again (it restarts the import) or empty the data directory"
            )
        if store.height < 0:
            ex = execute_genesis(genesis, SparseMerkleTree(store))
            store.commit(ex.block, None, ex.update.new_nodes, ex.update.stale, ex.state.app_meta())
        self.head = self._load(store.height)

    @property
    def retain_blocks(self) -> int:
        """0: an archive (every body kept); N: the newest N bodies (see the docstring)."""
        return self._retain_blocks

    @retain_blocks.setter
    def retain_blocks(self, value: int) -> None:
        self._retain_blocks = max(0, value)
        self.store.retain_blocks_hint = self._retain_blocks

    @classmethod
    def open(
        cls,
        path: Path | str,
        genesis: Genesis,
        *,
        create: bool = True,
        retain_versions: int = DEFAULT_RETAIN_VERSIONS,
        verify_tables: bool = False,
        tick: Callable[[int], None] | None = None,
    ) -> Ledger:
        """Open (``create``: or initialise) the store at ``path``; ``verify_tables`` and
        ``tick``: see ``Store.open``."""
        store = Store.open(
            path,
            chain_id=genesis.chain_id,
            genesis_hash=genesis.hash,
            create=create,
            verify_tables=verify_tables,
            tick=tick,
        )
        try:
            return cls(store, genesis, retain_versions)
        except BaseException:
            store.close()
            raise

    @classmethod
    def open_kv(
        cls,
        db: KV,
        genesis: Genesis,
        *,
        create: bool = True,
        retain_versions: int = DEFAULT_RETAIN_VERSIONS,
        name: str = "<memory>",
    ) -> Ledger:
        """``open`` over an already open ``KV`` (e.g. the simulator's ``MemoryKV``)."""
        store = Store.open_kv(
            db, chain_id=genesis.chain_id, genesis_hash=genesis.hash, create=create, name=name
        )
        try:
            return cls(store, genesis, retain_versions)
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reads

    def _load(self, height: int) -> LedgerState:
        header = self.store.get_header(height)
        meta = self.store.app_meta(height)
        if header is None or meta is None:
            raise StoreError(f"height {height} has no header or app metadata")
        state = load_state(self.chain_id, height, header, meta, self.tree, self._seen())
        return replace(state, never_attested=self._never_attested())

    def _never_attested(self) -> Callable[[bytes], bool] | None:
        """``LedgerState.never_attested`` of a committed state: the store's index, if
        it has one (a committed state is at or below the store's height, and records are
        never deleted, so "not in the index" means "never attested at that height")."""
        store = self.store
        return store.never_attested if store.attestation_indexed else None

    def _seen(self) -> SeenTxs:
        """``tx_seen`` of a committed state: the store's tx index alone."""
        store = self.store
        return SeenTxs([], store.tx_committed, lambda: store.height)

    @property
    def height(self) -> int:
        return self.head.height

    @property
    def tip(self) -> LedgerState:
        """The newest state: the highest pending execution, else the committed head."""
        if self.pending:
            return self.pending[max(self.pending)].state
        return self.head

    def state_at(self, height: int) -> LedgerState:
        """The committed head or a pending state at ``height`` (KeyError otherwise)."""
        if height == self.head.height:
            return self.head
        return self.pending[height].state

    def validators_at(self, height: int) -> ValidatorSet:
        """The set in force at ``height``; known up to the validator-change delay ahead."""
        return self.epoch_at(height)[1]

    def epoch_at(self, height: int) -> tuple[int, ValidatorSet]:
        """(first height of the validator set in force at ``height``, that set).

        Heights above the head are answered from the tip (changes are scheduled at
        least ``pipeline_window + 1`` heights ahead, so in-flight heights are known);
        committed heights from the chain record stored beside their parent block.
        """
        if height > self.head.height:
            return self.tip.chain.epoch_at(height)
        if height <= 0:
            return 0, self.genesis.validators
        meta = self.store.app_meta(height - 1)
        if meta is None:
            raise KeyError(height)
        return decode_app_meta(meta).chain.epoch_at(height)

    # ------------------------------------------------------------------ execution

    def _set_pending(self, ex: Execution) -> None:
        for h in [h for h in self.pending if h >= ex.height]:
            del self.pending[h]
        self.pending[ex.height] = ex
        self._rebuild_overlay()

    def _rebuild_overlay(self) -> None:
        self._overlay.pending = [self.pending[h].update.new_nodes for h in sorted(self.pending)]

    def discard_pending(self, from_height: int) -> None:
        """Forget speculative executions at >= ``from_height`` (e.g. after a view change)."""
        for h in [h for h in self.pending if h >= from_height]:
            del self.pending[h]
        self._rebuild_overlay()

    def state_of_block(self, block_id: bytes) -> LedgerState | None:
        """The head or pending state whose block is ``block_id`` (None if unknown)."""
        if self.head.block_id == block_id:
            return self.head
        for ex in self.pending.values():
            if ex.block.block_id == block_id:
                return ex.state
        return None

    def build(
        self,
        txs: Iterable[Transaction],
        *,
        time_ms: int,
        proposer: bytes,
        verified: Callable[[bytes], bool] | None = None,
        parent_block_id: bytes | None = None,
    ) -> Execution:
        """Build the next block from ``txs`` (invalid ones are dropped) and keep it pending.

        The parent is the tip, or the head/pending block ``parent_block_id`` (pending
        blocks above it are discarded). ``KeyError`` if that parent is unknown.
        """
        parent = self.tip
        if parent_block_id is not None and parent.block_id != parent_block_id:
            found = self.state_of_block(parent_block_id)
            if found is None:
                raise KeyError(parent_block_id)
            parent = found
            self.discard_pending(parent.height + 1)
        ex = execute(
            parent,
            txs,
            time_ms=max(time_ms, parent.time_ms + 1),
            proposer=proposer,
            strict=False,
            verified=verified,
        )
        self._set_pending(ex)
        return ex

    def validate(self, block: Block, verified: Callable[[bytes], bool] | None = None) -> Execution:
        """Re-execute a proposed block on its parent (head or pending) and keep it pending.

        Raises ``RuleError`` if the block is invalid or its parent is unknown.
        """
        existing = self.pending.get(block.height)
        if existing is not None and existing.block.block_id == block.block_id:
            return existing
        try:
            parent = self.state_at(block.height - 1)
        except KeyError:
            raise RuleError(
                "unknown_parent", f"no state at height {block.height - 1} to execute on"
            ) from None
        ex = validate_block(parent, block, verified)
        self._set_pending(ex)
        return ex

    def commit(
        self,
        block: Block,
        certificate: CommitCertificate,
        verified: Callable[[bytes], bool] | None = None,
    ) -> Execution:
        """Verify ``certificate``, execute ``block`` if needed, persist both atomically."""
        h = block.height
        if h != self.head.height + 1:
            raise StoreError(f"cannot commit height {h}: the ledger is at {self.head.height}")
        validators = self.head.validators_at(h)
        try:
            certificate.verify(self.chain_id, validators, block.block_id)
        except ValidationError as exc:
            raise RuleError("bad_certificate", str(exc)) from None
        if certificate.height != h:
            raise RuleError("bad_certificate", "certificate height does not match the block")
        pending = self.pending.get(h)
        if pending is None or pending.block.block_id != block.block_id:
            self.discard_pending(h)
            pending = validate_block(self.head, block, verified)
            self.pending[h] = pending
            self._rebuild_overlay()
        ex = pending
        self.store.commit(
            ex.block, certificate, ex.update.new_nodes, ex.update.stale, ex.state.app_meta()
        )
        del self.pending[h]
        self._rebuild_overlay()
        # Its SeenTxs drops this block's ids (and its ancestors') at the next look-up: the
        # store's tx index holds them now, and its attestations are in the store's index.
        self.head = replace(ex.state, never_attested=self._never_attested())
        oldest = h - self.retain_versions
        if self.state_pin is not None:
            oldest = min(oldest, self.state_pin)
        if oldest > self.store.state_pruned_below:
            self.store.prune_state(oldest)
        self.prune_bodies(PRUNE_BODIES_PER_COMMIT)
        return ex

    def prune_bodies(self, max_blocks: int | None = None) -> int:
        """Prune the bodies ``retain_blocks`` asks to drop (none for an archive), at most
        ``max_blocks`` of them; returns how many were deleted."""
        if self.retain_blocks <= 0:
            return 0
        floor = self.store.height - self.retain_blocks + 1
        if floor <= self.store.bodies_from:
            return 0
        return self.store.prune_bodies(floor, max_blocks=max_blocks)
