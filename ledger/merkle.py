"""RFC 6962 / RFC 9162 Merkle trees: hashing, roots, inclusion and consistency proofs.

This module owns the ledger's Merkle tree, byte for byte as RFC 9162 §2.1 (identical to
RFC 6962 §2.1) defines it. The normative description, with the JSON form of proofs and the
cross-language vectors in tests/vectors/merkle.json, is docs/proofs-merkle.md.

Rules:

* Hash = SHA-256. Leaf hash = SHA-256(0x00 || data); interior node =
  SHA-256(0x01 || left || right); the empty tree's root = SHA-256(b""). The one-byte
  prefixes keep a leaf from ever being passed off as an interior node (second preimages).
* Tree shape: a tree of n > 1 leaves splits at k, the largest power of two strictly smaller
  than n; left = first k leaves, right = the remaining n - k. An odd node is never
  duplicated, so distinct leaf lists never share a root (Bitcoin's duplication makes
  [a, b, c] and [a, b, c, c] collide).
* Proof hashes are ordered from the leaf towards the root (RFC 9162 §2.1.3.1, §2.1.4.1).
* ``verify_*`` never raise: any bad, malformed or wrongly typed input gives False.
  ``root_from_*`` raise ``ProofError`` on malformed input. Proof *generators* raise plain
  ``ValueError`` when the caller breaks a precondition (that is a bug, not a bad proof).
* Sizes and indices are limited to the uint64 range so every proof we accept can be
  checked by RFC 9162 implementations in other languages (they use uint64).
* A proof verifies a (size, root) pair only together: RFC 6962 proofs do not by themselves
  commit to the tree size (e.g. a proof for leaf 0 in a 3-leaf tree also "verifies" leaf 0
  of a 4-leaf tree whose claimed root is the 3-leaf root). Callers must take size and root
  from the same signed tree head.
* Pure computation: no I/O, no clocks, no randomness; only hashlib for hashing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "MAX_SIZE",
    "MerkleAccumulator",
    "MerkleTree",
    "ProofError",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_consistency_proof",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
"""Length in bytes of every hash in this module (SHA-256)."""

MAX_SIZE = (1 << 64) - 1
"""Largest tree size or leaf index accepted by verifiers (uint64, as in other RFC 9162 code)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
# Bound once: the hot loops below call it millions of times.
_sha256 = hashlib.sha256

# MerkleTree caches the roots of full subtrees of at least 2**_CACHE_HEIGHT leaves only.
# Smaller ones are recomputed from the leaf hashes (at most 2**_CACHE_HEIGHT - 1 hashes),
# which keeps the cache at ~1/8 of the leaf count instead of doubling memory.
_CACHE_HEIGHT = 4

# No valid proof for a uint64-sized tree is longer: an inclusion proof has at most 64 hashes,
# a consistency proof at most 65 (the old tree's last subtree plus its inclusion proof).
_MAX_PROOF_HASHES = 65


class ProofError(ValueError):
    """A proof, or the sizes/indices/hashes that come with it, is malformed or inconsistent."""


# --------------------------------------------------------------------------- hashing


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 6962 leaf hash SHA-256(0x00 || data) of leaf DATA."""
    return _sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the interior node hash SHA-256(0x01 || left || right)."""
    return _sha256(_NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """Return k, the largest power of two strictly smaller than n. Requires n >= 2."""
    return 1 << ((n - 1).bit_length() - 1)


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE


def _is_size(value: object) -> bool:
    # bool is an int subclass; True as a tree size is a caller bug, never a valid input.
    return type(value) is int and 0 <= value <= MAX_SIZE


def _check_proof_hashes(proof: object) -> list[bytes]:
    """Return proof as a list of 32-byte hashes or raise ProofError."""
    # bytes/str are Sequences too (of ints/chars): never a list of hashes.
    if not isinstance(proof, Sequence) or isinstance(proof, (bytes, bytearray, str)):
        raise ProofError("proof must be a sequence of hashes")
    # Checked before copying, so a hostile huge sequence costs nothing.
    if len(proof) > _MAX_PROOF_HASHES:
        raise ProofError(f"proof has more than {_MAX_PROOF_HASHES} hashes")
    hashes = list(proof)
    for i, h in enumerate(hashes):
        if not _is_hash(h):
            raise ProofError(f"proof[{i}] is not a {HASH_SIZE}-byte hash")
    return hashes


# --------------------------------------------------------------------------- roots


def _fold(level: list[bytes]) -> bytes:
    """MTH over leaf hashes already known to be 32-byte bytes. Requires a non-empty list.

    Computed level by level, carrying an odd last node up unchanged. That is the same tree
    as the RFC's "split at the largest power of two below n" recursion: the full power-of-two
    subtrees on the left pair off exactly, and the ragged right edge is what gets carried.
    """
    sha, prefix = _sha256, _NODE_PREFIX
    while len(level) > 1:
        # strict=False: an odd last node has no partner and is carried up below.
        pairs = zip(level[0::2], level[1::2], strict=False)
        nxt = [sha(prefix + a + b).digest() for a, b in pairs]
        if len(level) & 1:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Return MTH over leaves whose leaf HASHES are ``hashes`` (RFC 9162 §2.1.1).

    Requires every element to be a 32-byte bytes object (else ValueError).
    """
    level = list(hashes)
    for h in level:
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise ValueError(f"leaf hashes must be {HASH_SIZE}-byte bytes")
    return _fold(level) if level else EMPTY_ROOT


def root(leaves: Sequence[bytes]) -> bytes:
    """Return the Merkle tree hash MTH(D[n]) of leaf DATA ``leaves`` (EMPTY_ROOT if none)."""
    if not leaves:
        return EMPTY_ROOT
    return _fold(_leaf_hashes_of(leaves))


def _leaf_hashes_of(leaves: Sequence[bytes]) -> list[bytes]:
    sha, prefix = _sha256, _LEAF_PREFIX
    return [sha(prefix + d).digest() for d in leaves]


# --------------------------------------------------------------------------- proof shapes

# A SubtreeRoot callback returns MTH(D[lo:hi]) for a node range [lo, hi) of the tree. Proof
# generation is the same walk for the one-shot functions and for MerkleTree; only the way a
# subtree root is obtained differs.
SubtreeRoot = Callable[[int, int], bytes]


def _inclusion_path(index: int, size: int, subroot: SubtreeRoot) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1, iteratively. Requires 0 <= index < size."""
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            path.append(subroot(lo + k, hi))
            hi = lo + k
        else:
            path.append(subroot(lo, lo + k))
            lo += k
    # The walk went root to leaf; proofs are ordered leaf to root.
    path.reverse()
    return path


def _consistency_path(old_size: int, size: int, subroot: SubtreeRoot) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true) of RFC 9162 §2.1.4.1, iteratively.

    Requires 0 <= old_size <= size. Sizes 0 and ``size`` give the empty proof.
    """
    if old_size == 0 or old_size == size:
        return []
    proof: list[bytes] = []
    lo, hi = 0, size
    # b of SUBPROOF: true while the current subtree's old part is the whole old tree
    # (its root is then known to the verifier and is not sent).
    whole_old_tree = True
    while True:
        m = old_size - lo
        if m == hi - lo:
            if not whole_old_tree:
                proof.append(subroot(lo, hi))
            break
        k = _split(hi - lo)
        if m <= k:
            proof.append(subroot(lo + k, hi))
            hi = lo + k
        else:
            proof.append(subroot(lo, lo + k))
            lo += k
            whole_old_tree = False
    # SUBPROOF emits the deepest element first.
    proof.reverse()
    return proof


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Return the inclusion proof (audit path) for leaf ``index`` in the tree of leaf DATA.

    Requires 0 <= index < len(leaves) (else ValueError). Costs len(leaves) - 1 hashes
    (the siblings partition the other leaves); use MerkleTree for repeated proofs.
    """
    size = len(leaves)
    if type(index) is not int or not 0 <= index < size:
        raise ValueError(f"index {index!r} out of range for tree size {size}")
    hashes = _leaf_hashes_of(leaves)
    return _inclusion_path(index, size, lambda lo, hi: _fold(hashes[lo:hi]))


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """Return the RFC 9162 §2.1.4.1 consistency proof from the first ``old_size`` leaves.

    Requires 0 <= old_size <= len(leaves) (else ValueError). The proof is empty when
    old_size is 0 or len(leaves).
    """
    size = len(leaves)
    if type(old_size) is not int or not 0 <= old_size <= size:
        raise ValueError(f"old_size {old_size!r} out of range for tree size {size}")
    hashes = _leaf_hashes_of(leaves)
    return _consistency_path(old_size, size, lambda lo, hi: _fold(hashes[lo:hi]))


# --------------------------------------------------------------------------- verification


def _inclusion_proof_length(index: int, size: int) -> int:
    """Number of hashes in PATH(index, D[size]). Requires 0 <= index < size."""
    # Below the level where the paths to `index` and to the last leaf part, every level
    # contributes a sibling ("inner"); above it, only levels where `index` is a right child
    # do, because a left child on the right edge has no sibling there ("border").
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Return the root implied by an inclusion proof (RFC 9162 §2.1.3.2 steps 1-4).

    Requires 0 <= index < size <= MAX_SIZE, a 32-byte leaf hash, and exactly the number of
    32-byte proof hashes PATH(index, D[size]) has; otherwise raises ProofError.
    """
    if not _is_size(size) or not _is_size(index) or index >= size:
        raise ProofError(f"index {index!r} out of range for tree size {size!r}")
    if not _is_hash(leaf_hash):
        raise ProofError(f"leaf hash must be {HASH_SIZE} bytes")
    path = _check_proof_hashes(proof)
    want = _inclusion_proof_length(index, size)
    if len(path) != want:
        raise ProofError(f"proof has {len(path)} hashes, want {want}")
    sha, prefix = _sha256, _NODE_PREFIX
    fn, sn = index, size - 1
    r = leaf_hash
    for p in path:
        if sn == 0:  # unreachable after the length check; kept as RFC step 4.a
            raise ProofError("proof too long")
        if fn & 1 or fn == sn:
            r = sha(prefix + p + r).digest()
            if not fn & 1:
                # Skip the levels where this node is a lone left child on the right edge:
                # it is carried up unchanged, so no proof hash is consumed there.
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha(prefix + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:  # unreachable after the length check; kept as RFC step 5
        raise ProofError("proof too short")
    return r


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """True iff ``proof`` shows leaf DATA ``leaf`` at ``index`` in the tree (size, root).

    Never raises: malformed or wrongly typed input of any kind returns False.
    """
    if not isinstance(leaf, bytes) or not _is_hash(root):
        return False
    try:
        return root_from_inclusion_proof(leaf_hash(leaf), index, size, proof) == root
    except ProofError:
        return False


def _consistency_proof_length(old_size: int, size: int) -> int:
    """Number of hashes in PROOF(old_size, D[size]). Requires 0 < old_size < size."""
    # The proof is the old tree's last full subtree (omitted when that subtree is the whole
    # old tree, i.e. old_size is a power of two) plus that subtree's inclusion proof in the
    # new tree, both taken at the subtree's height.
    level = (old_size & -old_size).bit_length() - 1
    index = (old_size - 1) >> level
    length = _inclusion_proof_length(index, ((size - 1) >> level) + 1)
    return length + (1 if index else 0)


def _consistency_roots(
    old_size: int, size: int, proof: Sequence[bytes], old_root: bytes
) -> tuple[bytes, bytes]:
    """RFC 9162 §2.1.4.2 steps 1-6: return (fr, sr), the old and new roots the proof implies.

    Requires 0 < old_size < size <= MAX_SIZE, 32-byte hashes and the exact proof length;
    otherwise raises ProofError.
    """
    path = _check_proof_hashes(proof)
    if not path:
        raise ProofError("empty consistency proof")
    want = _consistency_proof_length(old_size, size)
    if len(path) != want:
        raise ProofError(f"proof has {len(path)} hashes, want {want}")
    # Step 2: a power-of-two old tree is a full subtree of the new one; its root is the
    # starting point and is not repeated in the proof.
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    sha, prefix = _sha256, _NODE_PREFIX
    fn, sn = old_size - 1, size - 1
    # Step 4: climb to the last full subtree of the old tree.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # unreachable after the length check; kept as RFC step 6
            raise ProofError("proof too long")
        if fn & 1 or fn == sn:
            fr = sha(prefix + c + fr).digest()
            sr = sha(prefix + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = sha(prefix + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:  # unreachable after the length check; kept as RFC step 7
        raise ProofError("proof too short")
    return fr, sr


def root_from_consistency_proof(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes
) -> bytes:
    """Return the new tree's root implied by a consistency proof from a trusted old root.

    Lets a client that trusts (old_size, old_root) learn the only new root consistent with
    it. Requires 0 < old_size <= new_size <= MAX_SIZE and a 32-byte old_root. Raises
    ProofError if the input is malformed or the proof does not reproduce old_root. (When
    old_size is a power of two the old tree is one subtree of the new tree and old_root is
    the starting point of the computation, so a wrong old_root gives a wrong new root
    instead of an error; the result must always be compared with a trusted new root.)
    old_size == new_size requires an empty proof and returns old_root. old_size == 0 is
    rejected: an empty old tree is consistent with every tree, so nothing can be derived.
    """
    if not _is_size(old_size) or not _is_size(new_size) or not 0 < old_size <= new_size:
        raise ProofError(f"bad sizes: old {old_size!r}, new {new_size!r}")
    if not _is_hash(old_root):
        raise ProofError(f"old root must be {HASH_SIZE} bytes")
    if old_size == new_size:
        if _check_proof_hashes(proof):
            raise ProofError("proof must be empty when old_size == new_size")
        return old_root
    fr, sr = _consistency_roots(old_size, new_size, proof, old_root)
    if fr != old_root:
        raise ProofError("proof does not reproduce the old root")
    return sr


def verify_consistency(
    old_size: int, new_size: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes
) -> bool:
    """True iff ``proof`` shows the tree (old_size, old_root) is a prefix of (new_size, new_root).

    RFC 9162 §2.1.4.2 for 0 < old_size < new_size. Edge cases (the RFC leaves them open):
    old_size == new_size needs an empty proof and equal roots; old_size == 0 needs an empty
    proof and old_root == EMPTY_ROOT (stricter than transparency-dev, which ignores
    old_root there). Never raises: malformed input of any kind returns False.
    """
    if not _is_size(old_size) or not _is_size(new_size) or old_size > new_size:
        return False
    if not _is_hash(old_root) or not _is_hash(new_root):
        return False
    try:
        if old_size == 0:
            return (
                not _check_proof_hashes(proof)
                and old_root == EMPTY_ROOT
                and (new_size > 0 or new_root == EMPTY_ROOT)
            )
        return root_from_consistency_proof(old_size, new_size, proof, old_root) == new_root
    except ProofError:
        return False


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
