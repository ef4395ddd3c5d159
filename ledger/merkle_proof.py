"""Merkle roots and proof generation over a list of leaves (RFC 9162 §2.1.1-§2.1.4).

Part of ``ledger.merkle`` (the public entry point, which re-exports this module's names;
the rules are in its docstring). This module owns the root of a leaf list and the proof
walks (inclusion path, consistency proof) shared by the one-shot functions here and by
``MerkleTree`` (ledger/merkle_tree.py), which only obtain subtree roots differently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ledger.merkle_hash import (
    _LEAF_PREFIX,
    _NODE_PREFIX,
    EMPTY_ROOT,
    HASH_SIZE,
    _sha256,
    _split,
)

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
