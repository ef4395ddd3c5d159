"""RFC 6962 / RFC 9162 Merkle trees: hashing, roots, inclusion and consistency proofs.

This module is the public entry point of the ledger's Merkle tree, byte for byte as RFC
9162 §2.1 (identical to RFC 6962 §2.1) defines it, and re-exports what its parts own:
ledger/merkle_hash.py (hashes, limits, ``ProofError``), ledger/merkle_proof.py (roots and
proof generation), ledger/merkle_verify.py (verification) and ledger/merkle_tree.py
(``MerkleAccumulator``, ``MerkleTree``). The normative description, with the JSON form
of proofs and the cross-language vectors in tests/vectors/merkle.json, is
docs/proofs-merkle.md.

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

from ledger.merkle_hash import EMPTY_ROOT, HASH_SIZE, MAX_SIZE, ProofError, leaf_hash, node_hash
from ledger.merkle_proof import consistency_proof, inclusion_proof, root, root_from_leaf_hashes
from ledger.merkle_tree import MerkleAccumulator, MerkleTree
from ledger.merkle_verify import (
    root_from_consistency_proof,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

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
