"""The stateful Merkle trees (ledger/merkle.py): ``MerkleAccumulator`` and ``MerkleTree``
agree with one-shot roots and proofs at every size, resume from a frontier, grow in chunks.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.merkle import (
    EMPTY_ROOT,
    MerkleAccumulator,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_leaf_hashes,
)
from tests.ledger.merkle_support import (
    DATA,
    MAX_N,
    TREE,
    ref_root,
)

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
