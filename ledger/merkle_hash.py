"""RFC 9162 §2.1 hashing for the ledger's Merkle trees, and what every other part shares.

Part of ``ledger.merkle`` (the public entry point, which re-exports this module's names;
the rules are in its docstring). This module owns the hash functions (leaf and interior
node, with their one-byte prefixes), the empty root, the size limits, ``ProofError`` and
the input checks that proof generation and verification share.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ledger import codec

HASH_SIZE = codec.HASH_SIZE
"""Length in bytes of every hash in this module (SHA-256)."""

MAX_SIZE = codec.UINT64_MAX
"""Largest tree size or leaf index accepted by verifiers (uint64, as in other RFC 9162 code)."""

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1)."""

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"
# Bound once: the hot loops below call it millions of times.
_sha256 = hashlib.sha256

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
