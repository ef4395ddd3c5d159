"""Merkle proofs (ledger/merkle.py) against the reference: every proof up to 64 leaves, every
corruption rejected, no input that makes a verifier raise, sizes up to 2**64 - 1.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import (
    EMPTY_ROOT,
    MAX_SIZE,
    MerkleAccumulator,
    MerkleTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from tests.ledger import merkle_reference as ref
from tests.ledger.merkle_support import (
    DATA,
    MAX_N,
    TREE,
    flip,
    ref_root,
)

# --------------------------------------------------------------------------- exhaustive, n <= 64


@pytest.mark.parametrize("n", range(1, MAX_N + 1))
def test_every_inclusion_proof_matches_reference(n: int) -> None:
    leaves = DATA[:n]
    r = ref_root(n)
    tree = MerkleTree.from_leaves(leaves)
    assert root(leaves) == tree.root() == TREE.root(n) == r
    for i in range(n):
        want = ref.path(i, leaves)
        assert inclusion_proof(leaves, i) == want
        assert tree.inclusion_proof(i) == want
        assert TREE.inclusion_proof(i, n) == want
        assert root_from_inclusion_proof(leaf_hash(leaves[i]), i, n, want) == r
        assert verify_inclusion(leaves[i], i, n, want, r)
        assert ref.verify_inclusion(leaves[i], i, n, want, r)


@pytest.mark.parametrize("n", range(1, MAX_N + 1))
def test_every_consistency_proof_matches_reference(n: int) -> None:
    leaves = DATA[:n]
    new_root = ref_root(n)
    tree = MerkleTree.from_leaves(leaves)
    for m in range(0, n + 1):
        want = ref.proof(m, leaves)
        old_root = ref_root(m)
        assert consistency_proof(leaves, m) == want
        assert tree.consistency_proof(m) == want
        assert TREE.consistency_proof(m, n) == want
        assert verify_consistency(m, n, want, old_root, new_root)
        if m > 0:
            assert root_from_consistency_proof(m, n, want, old_root) == new_root
        if 0 < m < n:
            assert ref.verify_consistency(m, n, want, old_root, new_root)


# --------------------------------------------------------------------------- rejection

sizes = st.integers(1, len(DATA))


@st.composite
def inclusion_cases(draw: st.DrawFn) -> tuple[int, int, list[bytes], bytes]:
    n = draw(sizes)
    i = draw(st.integers(0, n - 1))
    return i, n, TREE.inclusion_proof(i, n), TREE.root(n)


@st.composite
def consistency_cases(draw: st.DrawFn) -> tuple[int, int, list[bytes], bytes, bytes]:
    n = draw(st.integers(2, len(DATA)))
    m = draw(st.integers(1, n - 1))
    return m, n, TREE.consistency_proof(m, n), TREE.root(m), TREE.root(n)


def test_every_single_byte_mutation_is_rejected() -> None:
    # Exhaustive for one proof of each kind: every position of every hash, every xor delta.
    i, n = 5, 13
    proof, r = TREE.inclusion_proof(i, n), TREE.root(n)
    for k in range(len(proof)):
        for pos in range(32):
            for delta in range(1, 256):
                bad = [*proof[:k], flip(proof[k], pos, delta), *proof[k + 1 :]]
                assert not verify_inclusion(DATA[i], i, n, bad, r)
    m, n = 6, 13
    proof = TREE.consistency_proof(m, n)
    old, new = TREE.root(m), TREE.root(n)
    for k in range(len(proof)):
        for pos in range(32):
            for delta in range(1, 256):
                bad = [*proof[:k], flip(proof[k], pos, delta), *proof[k + 1 :]]
                assert not verify_consistency(m, n, bad, old, new)


@settings(max_examples=300, deadline=None)
@given(inclusion_cases(), st.data())
def test_inclusion_mutations_rejected(
    case: tuple[int, int, list[bytes], bytes], data: st.DataObject
) -> None:
    i, n, proof, r = case
    leaf = DATA[i]
    assert verify_inclusion(leaf, i, n, proof, r)
    if proof:
        k = data.draw(st.integers(0, len(proof) - 1))
        pos = data.draw(st.integers(0, 31))
        delta = data.draw(st.integers(1, 255))
        bad = [*proof[:k], flip(proof[k], pos, delta), *proof[k + 1 :]]
        assert not verify_inclusion(leaf, i, n, bad, r)
        assert not ref.verify_inclusion(leaf, i, n, bad, r)
        assert not verify_inclusion(leaf, i, n, proof[1:], r)
        assert not verify_inclusion(leaf, i, n, proof[:-1], r)
    extra = data.draw(st.sampled_from([r, leaf_hash(leaf), bytes(32), b"", b"\x00" * 33]))
    assert not verify_inclusion(leaf, i, n, [*proof, extra], r)
    assert not verify_inclusion(leaf, i, n, [extra, *proof], r)
    # Changed leaf, root.
    assert not verify_inclusion(leaf + b"x", i, n, proof, r)
    assert not verify_inclusion(DATA[(i + 1) % len(DATA)], i, n, proof, r)
    assert not verify_inclusion(leaf, i, n, proof, flip(r, data.draw(st.integers(0, 31)), 1))
    assert not verify_inclusion(leaf, i, n, proof, TREE.root(n - 1))
    # Changed index: within one tree size each index has its own left/right pattern.
    j = data.draw(st.integers(-3, n + 3).filter(lambda j: j != i))
    assert not verify_inclusion(leaf, j, n, proof, r)


@settings(max_examples=300, deadline=None)
@given(inclusion_cases(), st.integers(0, 2 * len(DATA)))
def test_inclusion_changed_size(case: tuple[int, int, list[bytes], bytes], n2: int) -> None:
    """A changed size is rejected unless it gives the same hashing pattern.

    RFC 6962 proofs do not commit to the tree size: if (i, n2) combines the proof hashes on
    the same sides as (i, n), the computation is identical and the old root comes out. This
    pins that exact boundary (it is why size and root must come from one signed head).
    """
    i, n, proof, r = case
    if n2 == n:
        return
    same_shape = i < n2 and ref.inclusion_shape(i, n2) == ref.inclusion_shape(i, n)
    assert verify_inclusion(DATA[i], i, n2, proof, r) == same_shape


def test_inclusion_proofs_do_not_commit_to_size() -> None:
    # The documented example: leaf 0's proof in the 3-leaf tree, presented for size 4.
    proof, r3 = TREE.inclusion_proof(0, 3), TREE.root(3)
    assert verify_inclusion(DATA[0], 0, 4, proof, r3)
    assert not verify_inclusion(DATA[0], 0, 4, proof, TREE.root(4))


@settings(max_examples=300, deadline=None)
@given(consistency_cases(), st.data())
def test_consistency_mutations_rejected(
    case: tuple[int, int, list[bytes], bytes, bytes], data: st.DataObject
) -> None:
    m, n, proof, old, new = case
    assert verify_consistency(m, n, proof, old, new)
    k = data.draw(st.integers(0, len(proof) - 1))
    pos = data.draw(st.integers(0, 31))
    delta = data.draw(st.integers(1, 255))
    bad = [*proof[:k], flip(proof[k], pos, delta), *proof[k + 1 :]]
    assert not verify_consistency(m, n, bad, old, new)
    assert not ref.verify_consistency(m, n, bad, old, new)
    assert not verify_consistency(m, n, proof[1:], old, new)
    assert not verify_consistency(m, n, proof[:-1], old, new)
    assert not verify_consistency(m, n, [], old, new)
    extra = data.draw(st.sampled_from([old, new, proof[0], bytes(32), b""]))
    assert not verify_consistency(m, n, [*proof, extra], old, new)
    assert not verify_consistency(m, n, [extra, *proof], old, new)
    assert not verify_consistency(m, n, proof, new, old)
    assert not verify_consistency(m, n, proof, flip(old, pos, delta), new)
    assert not verify_consistency(m, n, proof, old, flip(new, pos, delta))
    assert not verify_consistency(n, m, proof, old, new)
    # A wrong old root is caught outright when the proof carries the old tree's pieces; when
    # old_size is a power of two the old root is the proof's starting point instead, so it
    # leads to a different new root. Either way it never yields the real new root.
    try:
        derived = root_from_consistency_proof(m, n, proof, flip(old, pos, delta))
    except ProofError:
        assert m & (m - 1) != 0
    else:
        assert m & (m - 1) == 0 and derived != new


@settings(max_examples=300, deadline=None)
@given(consistency_cases(), st.integers(0, 2 * len(DATA)), st.integers(0, 2 * len(DATA)))
def test_consistency_changed_sizes(
    case: tuple[int, int, list[bytes], bytes, bytes], m2: int, n2: int
) -> None:
    """Changed sizes are rejected unless they give the same hashing pattern (see above)."""
    m, n, proof, old, new = case
    for mm, nn in ((m2, n), (m, n2), (m2, n2)):
        if (mm, nn) == (m, n):
            continue
        same_shape = 0 < mm < nn and ref.consistency_shape(mm, nn) == ref.consistency_shape(m, n)
        assert verify_consistency(mm, nn, proof, old, new) == same_shape


garbage = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(MAX_SIZE - 2, MAX_SIZE + 2),
    st.floats(),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.lists(st.one_of(st.binary(max_size=40), st.integers(), st.none()), max_size=5),
    st.tuples(st.binary(min_size=32, max_size=32)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
hashes = st.binary(min_size=32, max_size=32)
counts = st.one_of(st.integers(0, 40), garbage)
proofs = st.one_of(st.lists(hashes, max_size=8), garbage)
roots = st.one_of(hashes, garbage)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=40), garbage), counts, counts, proofs, roots)
def test_verify_inclusion_never_raises(
    leaf: Any, index: Any, size: Any, proof: Any, r: Any
) -> None:
    assert verify_inclusion(leaf, index, size, proof, r) in (True, False)


@settings(max_examples=500, deadline=None)
@given(counts, counts, proofs, roots, roots)
def test_verify_consistency_never_raises(
    old_size: Any, new_size: Any, proof: Any, old: Any, new: Any
) -> None:
    assert verify_consistency(old_size, new_size, proof, old, new) in (True, False)


def check_synthetic_proofs(n: int, i: int, m: int, rng: random.Random) -> None:
    """Proofs of random hashes for sizes no tree here could hold, judged by the reference.

    The reference rebuilds the roots structurally (mirroring PATH / SUBPROOF), so this checks
    the library's bit-twiddling verifiers against it at any size up to 2**64 - 1.
    """
    rand = [rng.randbytes(32) for _ in range(70)]
    leaf = rng.randbytes(8)
    path = rand[: len(ref.inclusion_shape(i, n))]
    r = ref.root_from_path(leaf, i, n, path)
    assert r is not None
    assert root_from_inclusion_proof(leaf_hash(leaf), i, n, path) == r
    assert verify_inclusion(leaf, i, n, path, r)
    assert not verify_inclusion(leaf, i, n, path, flip(r, 0, 1))
    shape = ref.consistency_shape(m, n)
    cproof = rand[: len(shape) - (shape[0] == "old-root")]
    old_root = rand[-1]
    roots = ref.roots_from_proof(m, n, cproof, old_root)
    assert roots is not None
    assert verify_consistency(m, n, cproof, *roots)
    assert root_from_consistency_proof(m, n, cproof, roots[0]) == roots[1]
    assert not verify_consistency(m, n, cproof, roots[0], flip(roots[1], 0, 1))


@settings(max_examples=200, deadline=None)
@given(st.integers(2, MAX_SIZE), st.data(), st.randoms(use_true_random=False))
def test_huge_sizes_agree_with_reference(n: int, data: st.DataObject, rng: random.Random) -> None:
    i = data.draw(st.integers(0, n - 1))
    m = data.draw(st.integers(1, n - 1))
    check_synthetic_proofs(n, i, m, rng)


def test_longest_possible_proofs() -> None:
    # The proof-length cap (65 hashes) must admit the longest genuine proofs at the uint64
    # limit: 64 hashes for inclusion, 65 for consistency (seed + a full-height path).
    assert len(ref.inclusion_shape(0, MAX_SIZE)) == 64
    shape = ref.consistency_shape(3, MAX_SIZE)
    assert shape[0] == "seed" and len(shape) == 65  # every entry is a sent hash
    for n, i, m in [
        (MAX_SIZE, 0, 3),
        (MAX_SIZE, MAX_SIZE - 1, MAX_SIZE - 1),
        (1 << 63, 5, 1 << 62),
    ]:
        check_synthetic_proofs(n, i, m, random.Random(n ^ i ^ m))
    # Garbage is judged without raising, even at and beyond the limits.
    assert not verify_inclusion(b"x", 0, MAX_SIZE + 1, [], bytes(32))
    assert not verify_inclusion(b"x", 0, MAX_SIZE, [bytes(32)] * 66, bytes(32))
    assert not verify_consistency(3, MAX_SIZE, [bytes(32)] * 66, bytes(32), bytes(32))


def test_root_from_inclusion_proof_errors() -> None:
    proof, lh = TREE.inclusion_proof(3, 10), leaf_hash(DATA[3])
    assert issubclass(ProofError, ValueError)
    assert root_from_inclusion_proof(lh, 3, 10, proof) == TREE.root(10)
    bad_calls: list[tuple[Any, Any, Any, Any]] = [
        (lh, 10, 10, proof),  # index == size
        (lh, -1, 10, proof),
        (lh, 0, 0, []),  # nothing is in the empty tree
        (lh, True, 10, proof),  # bool is not an index
        (lh, 3, MAX_SIZE + 1, proof),
        (lh, 3, 10, proof[:-1]),  # too short
        (lh, 3, 10, [*proof, proof[0]]),  # too long
        (lh, 3, 10, [proof[0][:31], *proof[1:]]),  # 31-byte hash
        (lh, 3, 10, [bytearray(proof[0]), *proof[1:]]),  # not bytes
        (lh, 3, 10, b"".join(proof)),  # a byte string is not a list of hashes
        (lh[:31], 3, 10, proof),
        (lh, 3, 10, range(10**18)),  # a hostile huge sequence is refused before copying
    ]
    for call in bad_calls:
        with pytest.raises(ProofError):
            root_from_inclusion_proof(*call)


def test_consistency_edge_cases() -> None:
    r5, r4, junk = TREE.root(5), TREE.root(4), b"\x42" * 32
    # The empty tree is a prefix of every tree; its root is SHA-256("").
    assert verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    assert verify_consistency(0, 5, [], EMPTY_ROOT, r5)
    assert not verify_consistency(0, 0, [], EMPTY_ROOT, junk)
    assert not verify_consistency(0, 5, [], junk, r5)
    assert not verify_consistency(0, 5, [r5], EMPTY_ROOT, r5)
    # Equal sizes: empty proof and equal roots.
    assert verify_consistency(5, 5, [], r5, r5)
    assert not verify_consistency(5, 5, [], r5, r4)
    assert not verify_consistency(5, 5, [r5], r5, r5)
    # Going back in time, empty proofs, mis-sized roots.
    assert not verify_consistency(5, 4, [], r5, r4)
    assert not verify_consistency(1, 2, [], TREE.root(1), TREE.root(2))
    assert not verify_consistency(5, 5, [], r5[:31], r5[:31])
    assert root_from_consistency_proof(5, 5, [], r5) == r5
    for old_size, new_size, proof, old_root in [
        (0, 5, [], EMPTY_ROOT),  # nothing to derive from the empty tree
        (5, 4, [], r5),
        (5, 5, [r5], r5),
        (4, 5, [], r4),
        (3, 5, TREE.consistency_proof(3, 5), r4),  # does not reproduce the old root
        (3, 5, TREE.consistency_proof(3, 5), TREE.root(3)[:31]),
        (3, 5, TREE.consistency_proof(3, 5)[:-1], TREE.root(3)),
    ]:
        with pytest.raises(ProofError):
            root_from_consistency_proof(old_size, new_size, proof, old_root)


def test_generator_preconditions() -> None:
    for call in (
        lambda: inclusion_proof([], 0),
        lambda: inclusion_proof(DATA[:3], 3),
        lambda: inclusion_proof(DATA[:3], -1),
        lambda: consistency_proof(DATA[:3], 4),
        lambda: consistency_proof(DATA[:3], -1),
        lambda: TREE.inclusion_proof(0, 0),
        lambda: TREE.inclusion_proof(0, len(DATA) + 1),
        lambda: TREE.consistency_proof(5, 4),
        lambda: TREE.root(len(DATA) + 1),
        lambda: TREE.leaf_hash(len(DATA)),
        lambda: root_from_leaf_hashes([b"short"]),
        lambda: MerkleTree([b"short"]),
        lambda: MerkleAccumulator().append(b"short"),
    ):
        with pytest.raises(ValueError):
            call()
    assert consistency_proof([], 0) == []
    assert root([]) == root_from_leaf_hashes([]) == MerkleTree().root() == EMPTY_ROOT
