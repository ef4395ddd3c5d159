"""Merkle proof verification (RFC 9162 §2.1.3.2, §2.1.4.2): root_from_* and verify_*.

Part of ``ledger.merkle`` (the public entry point, which re-exports this module's names;
the rules are in its docstring). This module owns checking proofs against a (size, root)
pair: ``root_from_inclusion_proof`` / ``root_from_consistency_proof`` recompute a root
(ProofError on malformed input) and ``verify_inclusion`` / ``verify_consistency`` compare
it (never raise).
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.merkle_hash import (
    _NODE_PREFIX,
    EMPTY_ROOT,
    HASH_SIZE,
    ProofError,
    _check_proof_hashes,
    _is_hash,
    _is_size,
    _sha256,
    leaf_hash,
)

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
