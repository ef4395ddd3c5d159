"""Deliberately slow, obviously correct RFC 6962 §2.1 Merkle tree, for tests only.

Every function transcribes the RFC's recursive definitions (MTH, PATH, PROOF/SUBPROOF)
literally, on lists of leaf DATA, with hashlib directly. It shares no code with
ledger/merkle.py, so agreement between the two is evidence, not tautology (compare
transparency-dev's merkle/testonly/reference_test.go). Exponential-free but quadratic-ish:
use it only on small trees.

The verifiers here are structural: they rebuild the roots by mirroring the PATH and SUBPROOF
recursions, not by the bit-twiddling algorithms of RFC 9162 §2.1.3.2 / §2.1.4.2 that the
library implements, so they check those algorithms independently.
"""

from __future__ import annotations

import hashlib


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _k(n: int) -> int:
    """The largest power of two smaller than n (RFC 6962 §2.1), by counting. Requires n > 1."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(d: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 §2.1 over leaf DATA."""
    n = len(d)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + d[0])
    k = _k(n)
    return _h(b"\x01" + mth(d[0:k]) + mth(d[k:n]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 6962 §2.1.1. Requires 0 <= m < len(d)."""
    n = len(d)
    assert 0 <= m < n
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return path(m, d[0:k]) + [mth(d[k:n])]
    return path(m - k, d[k:n]) + [mth(d[0:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) of RFC 6962 §2.1.2. Requires 0 < m <= len(d)."""
    n = len(d)
    assert 0 < m <= n
    if m == n:
        return [] if b else [mth(d)]
    k = _k(n)
    if m <= k:
        return subproof(m, d[0:k], b) + [mth(d[k:n])]
    return subproof(m - k, d[k:n], False) + [mth(d[0:k])]


def proof(m: int, d: list[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) = SUBPROOF(m, D[n], true); empty for m == 0 (trivially consistent)."""
    if m == 0:
        return []
    return subproof(m, d, True)


def inclusion_shape(m: int, n: int) -> list[str]:
    """Side of each PATH(m, D[n]) hash relative to the running hash, leaf to root.

    "R": the proof hash is the right child; "L": it is the left child. Two (index, size)
    pairs with equal shapes accept exactly the same proofs. Requires 0 <= m < n.
    """
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return inclusion_shape(m, k) + ["R"]
    return inclusion_shape(m - k, n - k) + ["L"]


def consistency_shape(m: int, n: int, b: bool = True) -> list[str]:
    """What a verifier does with each hash of SUBPROOF(m, D[n], b), in proof order.

    First the start: "old-root" (b true: the verifier's old root, nothing sent) or "seed"
    (a proof hash that starts both roots). Then per later hash: "R" (right sibling, new root
    only) or "L" (left sibling, both roots). Equal shapes accept exactly the same proofs.
    Requires 0 < m <= n.
    """
    if m == n:
        return ["old-root"] if b else ["seed"]
    k = _k(n)
    if m <= k:
        return consistency_shape(m, k, b) + ["R"]
    return consistency_shape(m - k, n - k, False) + ["L"]


def root_from_path(leaf: bytes, m: int, n: int, p: list[bytes]) -> bytes | None:
    """Root implied by inclusion proof p for leaf DATA at m in a size-n tree, or None if p
    has the wrong length. Mirrors PATH. Requires 0 <= m < n."""

    def rec(m: int, n: int, p: list[bytes]) -> bytes | None:
        if n == 1:
            return _h(b"\x00" + leaf) if not p else None
        if not p:
            return None
        k = _k(n)
        if m < k:
            left = rec(m, k, p[:-1])
            return None if left is None else _h(b"\x01" + left + p[-1])
        right = rec(m - k, n - k, p[:-1])
        return None if right is None else _h(b"\x01" + p[-1] + right)

    return rec(m, n, p)


def verify_inclusion(leaf: bytes, m: int, n: int, p: list[bytes], root: bytes) -> bool:
    """Structural check of an inclusion proof. Requires 0 <= m < n."""
    return root_from_path(leaf, m, n, p) == root


def roots_from_proof(m: int, n: int, p: list[bytes], old_root: bytes) -> tuple[bytes, bytes] | None:
    """(old root, new root) implied by consistency proof p, or None if p has the wrong
    length. Mirrors SUBPROOF. Requires 0 < m < n."""

    def rec(m: int, n: int, b: bool, p: list[bytes]) -> tuple[bytes, bytes] | None:
        if m == n:
            if b:
                return (old_root, old_root) if not p else None
            return (p[0], p[0]) if len(p) == 1 else None
        if not p:
            return None
        k = _k(n)
        if m <= k:
            sub = rec(m, k, b, p[:-1])
            return None if sub is None else (sub[0], _h(b"\x01" + sub[1] + p[-1]))
        sub = rec(m - k, n - k, False, p[:-1])
        if sub is None:
            return None
        return _h(b"\x01" + p[-1] + sub[0]), _h(b"\x01" + p[-1] + sub[1])

    return rec(m, n, True, p)


def verify_consistency(m: int, n: int, p: list[bytes], old_root: bytes, new_root: bytes) -> bool:
    """Structural check of a consistency proof. Requires 0 < m < n."""
    return roots_from_proof(m, n, p, old_root) == (old_root, new_root)
