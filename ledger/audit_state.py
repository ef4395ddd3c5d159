"""The auditor's check of a stored state tree: every reachable node re-hashed.

Part of ``ledger.audit`` (the public entry point, which re-exports this module's names).
This module owns ``check_state_tree`` (``verify_state`` in ledger/audit.py runs it on a
data directory): every retained version's root record must hash to its header's state
root, and every node reachable from it must hash to what its parent stores. The node
format it checks against is ledger/smt_node.py's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import plyvel

from ledger.audit_report import (
    AuditFailure,
    AuditProgress,
    ProgressFn,
)
from ledger.errors import StoreError
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
from ledger.store import Store

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

    def check(self, version: int, state_root: bytes, descend: bool = True) -> None:
        """Verify version ``version`` against the certified ``state_root`` (with
        ``descend=False``, its root record only)."""
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
        if descend and enc[:1] == INTERNAL_PREFIX:
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


def check_state_tree(
    store: Store, progress: ProgressFn | None = None, *, roots_only: bool = False
) -> tuple[int, int]:
    """Verify the store's state tree: (entries at the head, versions checked).

    Every retained version (``state_pruned_below`` .. head) must have a root that equals
    its header's state root, and every node reachable from them must hash to what its
    parent says (with ``roots_only``, the root records alone: the node's start-up
    check; entries are then 0). Raises ``AuditFailure("state_tree" |
    "store_integrity")``.
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
        walk.check(v, header.state_root, descend=not roots_only)
        if v == head:
            entries = walk.entries
        done += 1
        report(entries)
    return entries, len(versions)
