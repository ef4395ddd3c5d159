"""Tests for ledger/merkle.py: RFC 6962 / RFC 9162 Merkle trees.

Evidence, strongest first: the published Certificate Transparency / transparency-dev
vectors; exhaustive agreement with tests/ledger/merkle_reference.py (the RFC recursions transcribed
literally) for every proof up to 64 leaves; property tests that every corruption is
rejected and that no input makes a verifier raise; and tests/vectors/merkle.json, the
cross-language vectors, which are generated from the reference (never from the library)
and compared byte for byte so the file cannot drift.

Regenerate the vectors file after an intentional change with:  python -m tests.ledger.test_merkle
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from functools import cache
from pathlib import Path
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
    node_hash,
    root,
    root_from_consistency_proof,
    root_from_inclusion_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from tests.ledger import merkle_reference as ref

VECTORS_PATH = Path(__file__).parent.parent / "vectors" / "merkle.json"


def hx(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def unhx(hexes: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


# --------------------------------------------------------------------------- published vectors

# Leaf inputs of the CT / transparency-dev RFC 6962 tests (merkle/testonly, verify_test.go).
RFC_LEAVES = [
    bytes.fromhex(x)
    for x in [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ]
]

# Published roots of the first n leaves, n = 0..8.
RFC_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

# Published inclusion proofs as (0-based leaf index, tree size, path). Upstream lists the
# leaf 1-based: {1, 8}, {6, 8}, {3, 3}, {2, 5} and the trivial {1, 1}.
RFC_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]

# Published consistency proofs as (old size, new size, proof).
RFC_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]


def test_hash_primitives() -> None:
    assert EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = b"L" * 32, b"R" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    # Domain separation: two leaves' concatenated hashes, presented as one leaf, is not the
    # node above them.
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert root([a + b]) != root([b"a", b"b"]) == node_hash(a, b)


@pytest.mark.parametrize("n", range(9))
def test_published_roots(n: int) -> None:
    want = bytes.fromhex(RFC_ROOTS[n])
    assert ref.mth(RFC_LEAVES[:n]) == want  # the literal RFC transcription agrees ...
    assert root(RFC_LEAVES[:n]) == want  # ... and so does the library, every way
    assert root_from_leaf_hashes([leaf_hash(d) for d in RFC_LEAVES[:n]]) == want
    assert MerkleTree.from_leaves(RFC_LEAVES).root(n) == want
    acc = MerkleAccumulator()
    for d in RFC_LEAVES[:n]:
        acc.append(leaf_hash(d))
    assert acc.root() == want


@pytest.mark.parametrize(("index", "size", "path"), RFC_INCLUSION)
def test_published_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    leaves = RFC_LEAVES[:size]
    want = unhx(path)
    assert ref.path(index, leaves) == want
    assert inclusion_proof(leaves, index) == want
    assert MerkleTree.from_leaves(RFC_LEAVES).inclusion_proof(index, size) == want
    assert verify_inclusion(leaves[index], index, size, want, bytes.fromhex(RFC_ROOTS[size]))


@pytest.mark.parametrize(("old", "new", "proof"), RFC_CONSISTENCY)
def test_published_consistency_proofs(old: int, new: int, proof: list[str]) -> None:
    want = unhx(proof)
    old_root, new_root = bytes.fromhex(RFC_ROOTS[old]), bytes.fromhex(RFC_ROOTS[new])
    assert ref.proof(old, RFC_LEAVES[:new]) == want
    assert consistency_proof(RFC_LEAVES[:new], old) == want
    assert MerkleTree.from_leaves(RFC_LEAVES).consistency_proof(old, new) == want
    assert verify_consistency(old, new, want, old_root, new_root)
    assert root_from_consistency_proof(old, new, want, old_root) == new_root


def test_docs_example() -> None:
    # docs/proofs-merkle.md §3: in the 7-leaf tree, d2's proof is [h(d3), h(0,1), h(4..6)]
    # and d6's is [h(4,5), h(0..3)].
    d = [b"d%d" % i for i in range(7)]
    h = [leaf_hash(x) for x in d]
    assert inclusion_proof(d, 2) == [h[3], node_hash(h[0], h[1]), root(d[4:7])]
    assert inclusion_proof(d, 6) == [node_hash(h[4], h[5]), root(d[0:4])]
    assert root(d) == node_hash(root(d[0:4]), node_hash(node_hash(h[4], h[5]), h[6]))


# --------------------------------------------------------------------------- exhaustive, n <= 64

MAX_N = 64
# Distinct leaves: with repeated leaves a proof for one position can honestly verify for
# another, which would blur the "changed index is rejected" properties below.
DATA = [b"leaf %d" % i for i in range(300)]
TREE = MerkleTree.from_leaves(DATA)


@cache
def ref_root(n: int) -> bytes:
    return ref.mth(DATA[:n])


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


def flip(h: bytes, pos: int, delta: int) -> bytes:
    b = bytearray(h)
    b[pos] ^= delta
    return bytes(b)


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


# --------------------------------------------------------------------------- accumulator, tree

LEAF_HASHES = [leaf_hash(d) for d in DATA]


def test_accumulator_matches_every_prefix() -> None:
    acc = MerkleAccumulator()
    assert acc.root() == EMPTY_ROOT and acc.size == 0 and acc.frontier == []
    for k, h in enumerate(LEAF_HASHES, start=1):
        acc.append(h)
        assert acc.size == k
        assert len(acc.frontier) == k.bit_count()
        assert acc.root() == TREE.root(k)
        if k <= MAX_N:
            assert acc.root() == ref_root(k)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2000), st.data())
def test_accumulator_resumes_from_frontier(n: int, data: st.DataObject) -> None:
    hs = [leaf_hash(b"%d" % i) for i in range(n)]
    split = data.draw(st.integers(0, n))
    first = MerkleAccumulator()
    for h in hs[:split]:
        first.append(h)
    resumed = MerkleAccumulator(first.size, first.frontier)
    for h in hs[split:]:
        resumed.append(h)
    assert resumed.size == n
    assert resumed.root() == root_from_leaf_hashes(hs)


def test_accumulator_rejects_bad_frontier() -> None:
    good = MerkleAccumulator()
    for h in LEAF_HASHES[:5]:
        good.append(h)
    assert MerkleAccumulator(5, good.frontier).root() == TREE.root(5)
    for size, frontier in [
        (5, good.frontier[:1]),
        (4, good.frontier),
        (-1, []),
        (5, [good.frontier[0], b"x"]),
    ]:
        with pytest.raises(ValueError):
            MerkleAccumulator(size, frontier)


def test_tree_grown_in_chunks_equals_bulk() -> None:
    rng = random.Random(6962)
    hs = [leaf_hash(b"%d" % i) for i in range(5000)]
    bulk = MerkleTree(hs)
    grown = MerkleTree()
    while grown.size < len(hs):
        step = rng.choice([1, 1, 2, 3, 16, 17, 100, 513])
        grown.extend(hs[grown.size : grown.size + step])
    grown.append(leaf_hash(b"extra"))
    bulk.append(leaf_hash(b"extra"))
    hs.append(leaf_hash(b"extra"))
    assert len(grown) == len(bulk) == len(hs)
    assert grown.root() == bulk.root() == root_from_leaf_hashes(hs)
    data = [b"%d" % i for i in range(5000)] + [b"extra"]
    for _ in range(40):
        n = rng.randint(1, len(hs))
        i = rng.randrange(n)
        m = rng.randint(0, n)
        assert grown.root(n) == root_from_leaf_hashes(hs[:n])
        assert grown.inclusion_proof(i, n) == inclusion_proof(data[:n], i)
        assert grown.consistency_proof(m, n) == consistency_proof(data[:n], m)
        assert grown.leaf_hash(i) == hs[i]


# --------------------------------------------------------------------------- vectors file

VECTOR_TREE_SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 70]


def _inclusion_entry(
    leaves: list[bytes], i: int, n: int, note: str | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "leaf_index": i,
        "tree_size": n,
        "leaf": leaves[i].hex(),
        "leaf_hash": ref.mth([leaves[i]]).hex(),
        "proof": hx(ref.path(i, leaves[:n])),
        "root": ref.mth(leaves[:n]).hex(),
        "valid": True,
    }
    if note:
        entry["note"] = note
    return entry


def _consistency_entry(leaves: list[bytes], m: int, n: int) -> dict[str, Any]:
    return {
        "old_size": m,
        "new_size": n,
        "old_root": ref.mth(leaves[:m]).hex(),
        "new_root": ref.mth(leaves[:n]).hex(),
        "proof": hx(ref.proof(m, leaves[:n])),
        "valid": True,
    }


def _ref_verify_inclusion_entry(e: dict[str, Any]) -> bool:
    """The reference's verdict on a vector, with the RFC's own preconditions applied."""
    i, n, proof = e["leaf_index"], e["tree_size"], unhx(e["proof"])
    if not 0 <= i < n or any(len(h) != 32 for h in proof):
        return False
    leaf = bytes.fromhex(e["leaf"])
    return ref.verify_inclusion(leaf, i, n, proof, bytes.fromhex(e["root"]))


def _ref_verify_consistency_entry(e: dict[str, Any]) -> bool:
    m, n, proof = e["old_size"], e["new_size"], unhx(e["proof"])
    old, new = bytes.fromhex(e["old_root"]), bytes.fromhex(e["new_root"])
    if len(old) != 32 or len(new) != 32 or any(len(h) != 32 for h in proof) or not 0 <= m <= n:
        return False
    if m == 0:
        return not proof and old == ref.mth([]) and (n > 0 or new == old)
    if m == n:
        return not proof and old == new
    return ref.verify_consistency(m, n, proof, old, new)


def _mutate(entry: dict[str, Any], note: str, **changes: Any) -> dict[str, Any]:
    bad = {**entry, **changes, "valid": False, "note": note}
    if "leaf" in changes:
        bad["leaf_hash"] = ref.mth([bytes.fromhex(changes["leaf"])]).hex()
    return bad


def _flip_hex(h: str, pos: int, delta: int) -> str:
    return flip(bytes.fromhex(h), pos, delta).hex()


def _inclusion_mutations(e: dict[str, Any], other_root: str) -> list[dict[str, Any]]:
    p, i, n = e["proof"], e["leaf_index"], e["tree_size"]
    muts = [
        _mutate(e, "proof[0] byte 0 xor 0x08", proof=[_flip_hex(p[0], 0, 8), *p[1:]]),
        _mutate(e, "last proof hash, byte 31 xor 0x01", proof=[*p[:-1], _flip_hex(p[-1], 31, 1)]),
        _mutate(e, "leaf_index + 1", leaf_index=i + 1),
        _mutate(e, "leaf_index - 1", leaf_index=i - 1),
        _mutate(e, "tree_size * 2", tree_size=n * 2),
        _mutate(e, "leaf_index = tree_size", leaf_index=n),
        _mutate(e, "last proof hash removed", proof=p[:-1]),
        _mutate(e, "root appended to proof", proof=[*p, e["root"]]),
        _mutate(e, "proof[0] and proof[1] swapped", proof=[p[1], p[0], *p[2:]]),
        _mutate(e, "proof[0] is 31 bytes", proof=[p[0][:62], *p[1:]]),
        _mutate(e, "different leaf", leaf=e["leaf"] + "00"),
        _mutate(e, "root of another tree size", root=other_root),
    ]
    return muts


def _consistency_mutations(e: dict[str, Any]) -> list[dict[str, Any]]:
    p, m, n = e["proof"], e["old_size"], e["new_size"]
    return [
        _mutate(e, "proof[0] byte 0 xor 0x10", proof=[_flip_hex(p[0], 0, 16), *p[1:]]),
        _mutate(e, "last proof hash, byte 31 xor 0x80", proof=[*p[:-1], _flip_hex(p[-1], 31, 128)]),
        _mutate(e, "old_size + 1", old_size=m + 1),
        _mutate(e, "old_size - 1", old_size=m - 1),
        _mutate(e, "new_size * 2", new_size=n * 2),
        _mutate(e, "old and new size swapped", old_size=n, new_size=m),
        _mutate(e, "old and new root swapped", old_root=e["new_root"], new_root=e["old_root"]),
        _mutate(e, "old_root byte 0 xor 0x01", old_root=_flip_hex(e["old_root"], 0, 1)),
        _mutate(e, "last proof hash removed", proof=p[:-1]),
        _mutate(e, "empty proof", proof=[]),
        _mutate(e, "new root prepended to proof", proof=[e["new_root"], *p]),
    ]


def build_vectors() -> dict[str, Any]:
    """The cross-language vectors, computed with the reference implementation only."""
    seq = [b"dvp merkle vector %d" % i for i in range(max(VECTOR_TREE_SIZES))]
    trees = []
    for name, leaves, incl_pairs, cons_pairs in [
        (
            "rfc6962",
            RFC_LEAVES,
            [(i, n) for n in range(1, 9) for i in range(n)],
            [(m, n) for n in range(1, 9) for m in range(0, n + 1)],
        ),
        (
            "sequential",
            seq,
            sorted(
                {
                    (i, n)
                    for n in VECTOR_TREE_SIZES
                    for i in (0, 1, n // 2, n - 2, n - 1)
                    if 0 <= i < n
                }
            ),
            sorted(
                {(m, n) for n in (8, 17, 32, 33, 64, 70) for m in VECTOR_TREE_SIZES if m < n}
                | {(0, 70), (70, 70)}
            ),
        ),
    ]:
        inclusion = [_inclusion_entry(leaves, i, n) for i, n in incl_pairs]
        consistency = [_consistency_entry(leaves, m, n) for m, n in cons_pairs]
        # A few deliberately broken proofs per tree, built from genuine ones.
        i, n = (5, 8) if name == "rfc6962" else (37, 70)
        base = _inclusion_entry(leaves, i, n)
        inclusion += _inclusion_mutations(base, ref.mth(leaves[: n - 1]).hex())
        m, n = (6, 8) if name == "rfc6962" else (37, 70)
        consistency += _consistency_mutations(_consistency_entry(leaves, m, n))
        for e in inclusion:
            assert _ref_verify_inclusion_entry(e) == e["valid"], e
        for e in consistency:
            assert _ref_verify_consistency_entry(e) == e["valid"], e
        trees.append(
            {
                "name": name,
                "leaves": [d.hex() for d in leaves],
                "roots": [ref.mth(leaves[:k]).hex() for k in range(len(leaves) + 1)],
                "inclusion": inclusion,
                "consistency": consistency,
            }
        )
    return {
        "description": (
            "RFC 6962 / RFC 9162 Merkle tree test vectors for the dvp ledger. "
            "Specification: docs/PROOFS.md (Merkle section, drafted in docs/proofs-merkle.md)."
        ),
        "hash": "SHA-256",
        "leaf_hash": "SHA-256(0x00 || leaf)",
        "node_hash": "SHA-256(0x01 || left || right)",
        "empty_root": ref.mth([]).hex(),
        "encoding": (
            "byte strings are lowercase hex; roots[k] is the root of the first k leaves; "
            "proof hashes are ordered from the leaf towards the root; entries with "
            '"valid": false are deliberately broken and must be rejected'
        ),
        "trees": trees,
    }


def render_vectors() -> str:
    return json.dumps(build_vectors(), indent=2) + "\n"


def test_vectors_file_is_current() -> None:
    assert VECTORS_PATH.read_text(encoding="utf-8") == render_vectors(), (
        "tests/vectors/merkle.json is stale; regenerate with: python -m tests.ledger.test_merkle"
    )


def test_vectors_file_against_library() -> None:
    doc = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    assert doc["empty_root"] == EMPTY_ROOT.hex()
    assert doc["trees"][0]["roots"] == RFC_ROOTS
    seen = {True: 0, False: 0}
    for tree in doc["trees"]:
        leaves = unhx(tree["leaves"])
        big = MerkleTree.from_leaves(leaves)
        assert [root(leaves[:k]).hex() for k in range(len(leaves) + 1)] == tree["roots"]
        for e in tree["inclusion"]:
            proof = unhx(e["proof"])
            leaf = bytes.fromhex(e["leaf"])
            ok = verify_inclusion(
                leaf, e["leaf_index"], e["tree_size"], proof, bytes.fromhex(e["root"])
            )
            assert ok == e["valid"], e
            if e["valid"]:
                assert hx(big.inclusion_proof(e["leaf_index"], e["tree_size"])) == e["proof"]
                assert leaf_hash(leaf).hex() == e["leaf_hash"]
            seen[ok] += 1
        for e in tree["consistency"]:
            m, n, proof = e["old_size"], e["new_size"], unhx(e["proof"])
            ok = verify_consistency(
                m, n, proof, bytes.fromhex(e["old_root"]), bytes.fromhex(e["new_root"])
            )
            assert ok == e["valid"], e
            if e["valid"]:
                assert hx(big.consistency_proof(m, n)) == e["proof"]
            seen[ok] += 1
    assert seen[True] > 100 and seen[False] > 40


def main() -> None:
    VECTORS_PATH.parent.mkdir(parents=True, exist_ok=True)
    VECTORS_PATH.write_text(render_vectors(), encoding="utf-8")
    print(f"wrote {VECTORS_PATH}", file=sys.stderr)


if __name__ == "__main__":
    main()
