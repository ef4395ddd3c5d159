"""Tests for ledger/merkle.py: RFC 6962 / RFC 9162 Merkle trees, published and generated vectors.

Evidence, strongest first: the published Certificate Transparency / transparency-dev
vectors (here); exhaustive agreement with tests/ledger/merkle_reference.py (the RFC
recursions transcribed literally) for every proof up to 64 leaves, and property tests that
every corruption is rejected and that no input makes a verifier raise
(tests/ledger/test_merkle_proofs.py); the accumulator and the full tree
(tests/ledger/test_merkle_tree.py); and tests/vectors/merkle.json, the cross-language
vectors, which are generated from the reference (never from the library) and compared
byte for byte so the file cannot drift (here).

Regenerate the vectors file after an intentional change with:  python -m tests.ledger.test_merkle
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from ledger.merkle import (
    EMPTY_ROOT,
    MerkleAccumulator,
    MerkleTree,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    root_from_consistency_proof,
    root_from_leaf_hashes,
    verify_consistency,
    verify_inclusion,
)
from tests.ledger import merkle_reference as ref
from tests.ledger.merkle_support import (
    flip,
    hx,
    unhx,
)

VECTORS_PATH = Path(__file__).parent.parent / "vectors" / "merkle.json"


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
