"""Stateful Merkle trees: the history accumulator and the full tree with fast proofs.

Part of ``ledger.merkle`` (the public entry point, which re-exports this module's names;
the rules are in its docstring). This module owns ``MerkleAccumulator`` (only the O(log n)
frontier: the chain's history root) and ``MerkleTree`` (all leaf hashes plus cached
subtree roots: roots of past sizes and proofs in O(log n) hashes).
"""

from __future__ import annotations

from collections.abc import Iterable

from ledger.merkle_hash import (
    _NODE_PREFIX,
    EMPTY_ROOT,
    HASH_SIZE,
    MAX_SIZE,
    _is_hash,
    _is_size,
    _sha256,
    leaf_hash,
)
from ledger.merkle_proof import _consistency_path, _fold, _inclusion_path

# MerkleTree caches the roots of full subtrees of at least 2**_CACHE_HEIGHT leaves only.
# Smaller ones are recomputed from the leaf hashes (at most 2**_CACHE_HEIGHT - 1 hashes),
# which keeps the cache at ~1/8 of the leaf count instead of doubling memory.
_CACHE_HEIGHT = 4

# --------------------------------------------------------------------------- accumulator


class MerkleAccumulator:
    """Append-only Merkle tree that keeps only its O(log n) frontier (a compact range [0, n)).

    The frontier holds the roots of the full power-of-two subtrees that the binary
    representation of ``size`` splits the leaves into, largest (leftmost) first: one hash
    per set bit of ``size``. append and root are O(log n). Used for the chain's history
    root, where the leaf DATA are earlier block ids and nothing else is kept: append
    ``leaf_hash(block_id)``, never the bare id (that would drop the 0x00 leaf prefix and
    give a different, non-RFC tree).
    """

    __slots__ = ("_size", "_frontier")

    def __init__(self, size: int = 0, frontier: Iterable[bytes] = ()) -> None:
        """Resume from a saved (size, frontier).

        Requires 0 <= size <= MAX_SIZE and exactly popcount(size) 32-byte hashes, largest
        subtree first (else ValueError).
        """
        hashes = list(frontier)
        if not _is_size(size):
            raise ValueError(f"bad size {size!r}")
        if len(hashes) != size.bit_count() or not all(_is_hash(h) for h in hashes):
            raise ValueError(f"size {size} needs {size.bit_count()} frontier hashes of 32 bytes")
        self._size = size
        self._frontier = hashes

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def frontier(self) -> list[bytes]:
        """Copy of the frontier hashes, largest subtree first."""
        return list(self._frontier)

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf by its leaf HASH. Requires a 32-byte hash (else ValueError)."""
        if not _is_hash(leaf_hash):
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes")
        if self._size >= MAX_SIZE:
            raise ValueError("tree is full")
        h, s = leaf_hash, self._size
        # Each trailing 1 bit of the old size is a full subtree of the new leaf's height
        # that now has a right sibling: merge them, like a binary carry.
        while s & 1:
            h = _sha256(_NODE_PREFIX + self._frontier.pop() + h).digest()
            s >>= 1
        self._frontier.append(h)
        self._size += 1

    def root(self) -> bytes:
        """Return MTH of all appended leaves (EMPTY_ROOT when empty)."""
        if not self._frontier:
            return EMPTY_ROOT
        # The RFC tree puts the largest full subtree on the left and recurses on the rest,
        # so the root folds the frontier from the right.
        r = self._frontier[-1]
        for h in reversed(self._frontier[:-1]):
            r = _sha256(_NODE_PREFIX + h + r).digest()
        return r

    def __repr__(self) -> str:
        return f"MerkleAccumulator(size={self._size})"


# --------------------------------------------------------------------------- full tree


class MerkleTree:
    """All leaf hashes of a growing tree, with cached full-subtree roots, for fast proofs.

    Keeps a copy of the leaf hashes and the root of every full, aligned power-of-two subtree
    of at least 2**4 leaves. Any subtree root the RFC recursion asks for is then at most
    ~log2(n) cached hashes folded together, so roots of past sizes, inclusion proofs and
    consistency proofs cost O(log n) hashes, not O(n). Append is amortised O(1).
    """

    __slots__ = ("_leaves", "_levels")

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        """Build from leaf HASHES (not data). Requires 32-byte hashes (else ValueError)."""
        self._leaves: list[bytes] = []
        # _levels[j][i] = root of leaves [i * 2**h, (i + 1) * 2**h) with h = _CACHE_HEIGHT + j.
        self._levels: list[list[bytes]] = []
        self.extend(leaf_hashes)

    @classmethod
    def from_leaves(cls, leaves: Iterable[bytes]) -> MerkleTree:
        """Build from leaf DATA."""
        return cls(leaf_hash(d) for d in leaves)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._leaves)

    def __len__(self) -> int:
        return len(self._leaves)

    def leaf_hash(self, index: int) -> bytes:
        """Return the leaf hash at ``index``. Requires 0 <= index < size."""
        self._check_index(index, self.size)
        return self._leaves[index]

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf by its leaf HASH. Requires a 32-byte hash (else ValueError)."""
        self.extend((leaf_hash,))

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        """Append leaves by their leaf HASHES. Requires 32-byte hashes (else ValueError)."""
        new = list(leaf_hashes)
        if not all(_is_hash(h) for h in new):
            raise ValueError(f"leaf hashes must be {HASH_SIZE}-byte bytes")
        if len(self._leaves) + len(new) > MAX_SIZE:
            raise ValueError("tree is full")
        self._leaves.extend(new)
        # Complete the newly finished chunks of 2**_CACHE_HEIGHT leaves, then pair upwards;
        # only complete pairs are ever hashed, so each level stays a list of full subtrees.
        chunk = 1 << _CACHE_HEIGHT
        if not self._levels:
            self._levels.append([])
        first = self._levels[0]
        leaves = self._leaves
        for start in range(len(first) * chunk, len(leaves) - chunk + 1, chunk):
            first.append(_fold(leaves[start : start + chunk]))
        sha, prefix = _sha256, _NODE_PREFIX
        j = 0
        while len(self._levels[j]) >= 2:
            below = self._levels[j]
            if j + 1 == len(self._levels):
                self._levels.append([])
            above = self._levels[j + 1]
            done = 2 * len(above)
            if done + 2 > len(below):
                # Nothing new at this height, so nothing new above it either.
                break
            above.extend(
                sha(prefix + a + b).digest()
                for a, b in zip(below[done::2], below[done + 1 :: 2], strict=False)
            )
            j += 1

    def _full(self, height: int, index: int) -> bytes:
        """Root of leaves [index * 2**height, (index + 1) * 2**height), which must exist."""
        if height >= _CACHE_HEIGHT:
            return self._levels[height - _CACHE_HEIGHT][index]
        start = index << height
        return _fold(self._leaves[start : start + (1 << height)])

    def _subtree_root(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi]) for a node range of an RFC tree. Requires 0 <= lo < hi <= size.

        Node ranges are aligned: lo is a multiple of a power of two >= hi - lo. So the range
        splits into aligned full subtrees of the sizes of the set bits of hi - lo, largest
        first, and the RFC recursion folds them from the right.
        """
        parts: list[bytes] = []
        while lo < hi:
            height = (hi - lo).bit_length() - 1
            parts.append(self._full(height, lo >> height))
            lo += 1 << height
        r = parts[-1]
        for h in reversed(parts[:-1]):
            r = _sha256(_NODE_PREFIX + h + r).digest()
        return r

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if type(index) is not int or not 0 <= index < size:
            raise ValueError(f"index {index!r} out of range for tree size {size}")

    def _check_size(self, size: int | None) -> int:
        if size is None:
            return self.size
        if type(size) is not int or not 0 <= size <= self.size:
            raise ValueError(f"size {size!r} out of range 0..{self.size}")
        return size

    def root(self, size: int | None = None) -> bytes:
        """Return MTH of the first ``size`` leaves (default: all).

        Requires 0 <= size <= self.size (else ValueError). Past sizes are served from the
        same cache, e.g. the history root as of an earlier height.
        """
        n = self._check_size(size)
        if n == 0:
            return EMPTY_ROOT
        return self._subtree_root(0, n)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """Return PATH(index, D[size]) (default size: all leaves), leaf to root.

        Requires 0 <= index < size <= self.size (else ValueError).
        """
        n = self._check_size(size)
        self._check_index(index, n)
        return _inclusion_path(index, n, self._subtree_root)

    def consistency_proof(self, old_size: int, size: int | None = None) -> list[bytes]:
        """Return PROOF(old_size, D[size]) (default size: all leaves).

        Requires 0 <= old_size <= size <= self.size (else ValueError).
        """
        n = self._check_size(size)
        if type(old_size) is not int or not 0 <= old_size <= n:
            raise ValueError(f"old_size {old_size!r} out of range 0..{n}")
        return _consistency_path(old_size, n, self._subtree_root)

    def __repr__(self) -> str:
        return f"MerkleTree(size={self.size})"
