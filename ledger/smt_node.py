"""The state tree's stored node format: the one definition of node encodings and node keys.

This module owns how a node of the sparse Merkle tree (ledger/smt.py) is laid out in
storage, how it is checked when read back, and how its hash is computed from the stored
bytes. Everything that parses or builds stored nodes uses it: the tree's reads and
updates (ledger/smt.py, ledger/smt_update.py, ledger/smt_update_one.py) and the auditor
(ledger/audit_state.py). The C fast path (ledger/_smt_fast.c) necessarily re-implements
the same layout in C; its comments point here, and tests/ledger/test_smt_fast.py checks
that the two produce the same bytes.

Node encoding (the values behind node keys):

* ``0x00``: the empty tree (only ever a root record).
* ``0x01 || key (32) || value``: a leaf.
* ``0x02 || bitmap (2, BE) || leafmap (2, BE) || n child hashes (32 each) || n child
  versions (8 each, BE)``: an internal node with n = popcount(bitmap) >= 1 children; bit
  i (value 1 << i) of bitmap marks child i present, of leafmap marks it a leaf
  (leafmap is a subset of bitmap, and a lone child is never a leaf: it would have been
  hoisted into its parent's place).

Node key: ``version (8, BE) || depth (1) || path``, the path being the first ``depth``
nibbles of a key on the node's path packed two per byte, high nibble first, a trailing
odd nibble padded with 0. A version's root record is at depth 0 (path empty).

The hot loops of the tree read fields of an internal node in place (``enc[1] << 8 |
enc[2]`` is the bitmap, child hash i at ``INTERNAL_HEADER + HASH_SIZE * i``): slicing
there is what makes them fast. They take the offsets from this layout and check every
node they read with ``check_internal``/``check_leaf``; nothing else decides whether stored
bytes are a valid node.
"""

from __future__ import annotations

import hashlib

from ledger.smt_proof import EMPTY_ROOT, HASH_SIZE, KEY_NIBBLES, KEY_SIZE, LEAF_TAG, NODE_TAG

T_EMPTY = 0
T_LEAF = 1
T_INTERNAL = 2
EMPTY_NODE = b"\x00"
LEAF_PREFIX = b"\x01"
INTERNAL_PREFIX = b"\x02"

VERSION_SIZE = 8
LEAF_HEADER = 1 + KEY_SIZE  # tag, key: the value follows
INTERNAL_HEADER = 5  # tag, bitmap (2), leafmap (2): the child hashes follow
CHILD_SIZE = HASH_SIZE + VERSION_SIZE  # per child: its hash and its version

ROOT_DEPTH = b"\x00"  # the depth byte of a root record's node key (its path is empty)

DEPTH = [bytes([d]) for d in range(KEY_NIBBLES + 1)]
"""DEPTH[d]: the depth byte of a node key."""
BYTE = [bytes([b]) for b in range(256)]
HIGH = [bytes([b & 0xF0]) for b in range(256)]
"""HIGH[b]: byte b with its low nibble cleared (a packed path's odd last nibble)."""
EMPTY16: list[bytes] = [b""] * 16
"""Sixteen empty child slots, copied to start a node's slot lists."""

_sha256 = hashlib.sha256

# Bitmap -> positions of its set bits, filled lazily (most trees use few distinct maps).
_POSITIONS: dict[int, tuple[int, ...]] = {}


class NodeError(ValueError):
    """A stored node is corrupt (cannot be decoded, or is not what its parent says)."""


def positions(bitmap: int) -> tuple[int, ...]:
    """The child slots set in ``bitmap``, in child order."""
    pos = _POSITIONS.get(bitmap)
    if pos is None:
        pos = _POSITIONS[bitmap] = tuple(i for i in range(16) if bitmap >> i & 1)
    return pos


# --------------------------------------------------------------------------- node keys


def path(key: bytes, depth: int) -> bytes:
    """The first ``depth`` nibbles of ``key`` packed two per byte, odd one padded."""
    half = depth >> 1
    if depth & 1:
        return key[:half] + HIGH[key[half]]
    return key[:half]


def node_key(version: int, depth: int, key: bytes) -> bytes:
    """NodeKey of the node at ``depth`` on ``key``'s path written at ``version``."""
    return version.to_bytes(VERSION_SIZE, "big") + DEPTH[depth] + path(key, depth)


def root_key(version: int) -> bytes:
    """NodeKey of the root record of ``version`` (depth 0)."""
    return version.to_bytes(VERSION_SIZE, "big") + ROOT_DEPTH


def with_nibble(key: bytes, depth: int, nib: int) -> bytes:
    """``key`` with nibble ``depth`` replaced by ``nib`` (other nibbles kept)."""
    i = depth >> 1
    b = key[i]
    b = (b & 0xF0) | nib if depth & 1 else (nib << 4) | (b & 15)
    return key[:i] + BYTE[b] + key[i + 1 :]


# --------------------------------------------------------------------------- encodings


def encode_leaf(key: bytes, value: bytes) -> bytes:
    """The encoding of the leaf holding ``key`` -> ``value``."""
    return LEAF_PREFIX + key + value


def encode_internal(bitmap: int, leafmap: int, hashes: bytes, versions: bytes) -> bytes:
    """The encoding of an internal node from its maps and its two sections (the present
    children's hashes, then their versions, in child order)."""
    return b"".join(
        (INTERNAL_PREFIX, bitmap.to_bytes(2, "big"), leafmap.to_bytes(2, "big"), hashes, versions)
    )


def check_leaf(enc: bytes) -> bytes:
    """``enc`` if it is a leaf encoding, else NodeError."""
    if len(enc) < LEAF_HEADER or enc[0] != T_LEAF:
        raise NodeError("expected a leaf")
    return enc


def check_internal(enc: bytes) -> bytes:
    """``enc`` if it is a well-formed internal node encoding, else NodeError."""
    if len(enc) < INTERNAL_HEADER or enc[0] != T_INTERNAL:
        raise NodeError("expected an internal node")
    bitmap = enc[1] << 8 | enc[2]
    leafmap = enc[3] << 8 | enc[4]
    n = bitmap.bit_count()
    if (
        not n
        or len(enc) != INTERNAL_HEADER + CHILD_SIZE * n
        or leafmap & ~bitmap
        or (n == 1 and leafmap)
    ):
        raise NodeError("corrupt internal node")
    return enc


def decode_internal(enc: bytes) -> tuple[int, int, list[bytes], list[bytes]]:
    """(bitmap, leafmap, child hashes[16], child versions[16]), b"" for empty slots.
    Requires a checked encoding (``check_internal``)."""
    bitmap = enc[1] << 8 | enc[2]
    pos = positions(bitmap)
    hashes = EMPTY16[:]
    versions = EMPTY16[:]
    off = INTERNAL_HEADER
    voff = INTERNAL_HEADER + HASH_SIZE * len(pos)
    for i in pos:
        hashes[i] = enc[off : off + HASH_SIZE]
        versions[i] = enc[voff : voff + VERSION_SIZE]
        off += HASH_SIZE
        voff += VERSION_SIZE
    return bitmap, enc[3] << 8 | enc[4], hashes, versions


# --------------------------------------------------------------------------- hashes


def leaf_hash_of(enc: bytes) -> bytes:
    """Hash of a (checked) leaf encoding."""
    return _sha256(LEAF_TAG + enc[1:LEAF_HEADER] + _sha256(enc[LEAF_HEADER:]).digest()).digest()


def internal_hash(enc: bytes) -> bytes:
    """Hash of a (checked) internal node encoding: its preimage is two slices of it."""
    n = (enc[1] << 8 | enc[2]).bit_count()
    return _sha256(NODE_TAG + enc[1:3] + enc[INTERNAL_HEADER : INTERNAL_HEADER + 32 * n]).digest()


def node_hash_of(enc: bytes) -> bytes:
    """Hash of any encoded node (root records included); NodeError if it is corrupt."""
    t = enc[0]
    if t == T_INTERNAL:
        return internal_hash(check_internal(enc))
    if t == T_LEAF and len(enc) >= LEAF_HEADER:
        return leaf_hash_of(enc)
    if t == T_EMPTY and len(enc) == 1:
        return EMPTY_ROOT
    raise NodeError("corrupt node")
