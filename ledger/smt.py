"""The authenticated state tree: a versioned, path-compressed, 16-ary sparse Merkle tree.

This module owns the tree's shape, its node encoding and node keys, batched updates,
reads and proof generation. Hashes, the ``Proof`` object and verification live in
ledger/smt_proof.py (re-exported here); the byte-exact spec is docs/proofs-smt.md.

Rules:

* Shape (Jellyfish-Merkle-like, a function of the key set alone): the subtree holding
  the keys with a given nibble prefix is nothing if there are none, a leaf if there is
  one, else an internal node with up to 16 children (the next nibble). So a leaf sits at
  the shallowest depth where its prefix is unique; there are no extension nodes (keys are
  SHA-256 outputs, so single-child chains are short and rare).
* Nodes are immutable and stored under ``NodeKey = version (8 bytes, BE) || depth (1
  byte) || path nibbles packed two per byte, high nibble first, a trailing odd nibble
  padded with 0``. An update writes new nodes at ``new_version`` only along changed
  paths; everything else is shared with older versions by reference (a child reference
  is its hash, the version it was written at, and whether it is a leaf).
* Every version has a root record at NodeKey(version, depth 0) even if its batch changed
  nothing (then it is a copy of the base's root node): ``root(version)`` is one read.
* The tree writes nothing: ``update`` returns the new nodes and the node keys its
  version made stale, and the caller commits them (in its block's write batch). Stale
  keys of the update that produced version u are unreachable from every version >= u,
  so deleting them when u falls out of the retention window keeps all newer versions
  whole (for a linear history of versions).
* Storage is trusted (it is our own database): reads do not re-hash what they read.
  Proofs are checked by the receiver with ``verify_proof``.
* No I/O except through the ``NodeReader`` passed in. Not thread-safe.

Node encoding (the values behind node keys):

* ``0x00``: the empty tree (only ever a root record).
* ``0x01 || key (32) || value``: a leaf.
* ``0x02 || bitmap (2, BE) || leafmap (2, BE) || n child hashes (32 each) || n child
  versions (8 each, BE)``: an internal node with n = popcount(bitmap) children; bit i
  (value 1 << i) of bitmap marks child i present, of leafmap marks it a leaf.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

from ledger.smt_proof import (
    EMPTY_ROOT,
    HASH_SIZE,
    KEY_NIBBLES,
    KEY_SIZE,
    LEAF_TAG,
    NODE_TAG,
    TERMINAL_EMPTY,
    TERMINAL_LEAF,
    TERMINAL_OTHER_LEAF,
    Proof,
    ProofError,
    ProofLevel,
    leaf_hash,
    nibble,
    node_hash,
    root_from_proof,
    value_hash,
    verify_proof,
)

__all__ = [
    "DEFAULT_CACHE_NODES",
    "EMPTY_ROOT",
    "HASH_SIZE",
    "KEY_SIZE",
    "KeyExistsError",
    "MemoryNodeStore",
    "MissingNodeError",
    "NodeError",
    "NodeReader",
    "OverlayReader",
    "Proof",
    "ProofError",
    "ProofLevel",
    "SparseMerkleTree",
    "TERMINAL_EMPTY",
    "TERMINAL_LEAF",
    "TERMINAL_OTHER_LEAF",
    "UpdateResult",
    "leaf_hash",
    "nibble",
    "node_hash",
    "node_key",
    "root_from_proof",
    "value_hash",
    "verify_proof",
]

MAX_VERSION = (1 << 64) - 1
DEFAULT_CACHE_NODES = 1 << 17

_T_EMPTY = 0
_T_LEAF = 1
_T_INTERNAL = 2
_EMPTY_NODE = b"\x00"
_LEAF_PREFIX = b"\x01"
_INTERNAL_PREFIX = b"\x02"

_sha256 = hashlib.sha256
# Hashers with a tag already absorbed: copy() + update() per piece is cheaper than hashing
# a concatenation (no temporary copies of a node's hash section), for the hot paths.
_leaf_hasher = _sha256(LEAF_TAG).copy
_node_hasher = _sha256(NODE_TAG).copy
_bisect_left = bisect.bisect_left
_DEPTH = [bytes([d]) for d in range(KEY_NIBBLES + 1)]
_BYTE = [bytes([b]) for b in range(256)]
_HIGH = [bytes([b & 0xF0]) for b in range(256)]
_EMPTY16: list[bytes] = [b""] * 16

# Bitmap -> positions of its set bits, filled lazily (most trees use few distinct maps).
_POSITIONS: dict[int, tuple[int, ...]] = {}


def _positions(bitmap: int) -> tuple[int, ...]:
    pos = _POSITIONS.get(bitmap)
    if pos is None:
        pos = _POSITIONS[bitmap] = tuple(i for i in range(16) if bitmap >> i & 1)
    return pos


class NodeError(ValueError):
    """A stored node is corrupt (cannot be decoded, or is not what its parent says)."""


class MissingNodeError(LookupError):
    """A node the tree needs is not in storage (unknown or pruned version)."""


class KeyExistsError(ValueError):
    """``update``: keys the caller required to be new (``must_be_new``) exist at the
    base version. ``keys``: all of them, in key order. Nothing was produced."""

    def __init__(self, keys: Collection[bytes]) -> None:
        self.keys: tuple[bytes, ...] = tuple(sorted(keys))
        shown = ", ".join(k.hex() for k in self.keys[:3])
        more = f" and {len(self.keys) - 3} more" if len(self.keys) > 3 else ""
        super().__init__(f"{len(self.keys)} key(s) already exist: {shown}{more}")


class NodeReader(Protocol):
    """Read access to the node store; ``None`` for an absent key."""

    def get_node(self, node_key: bytes) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What one ``update`` produced; the caller persists it (nothing is written yet).

    ``new_nodes``: node_key -> encoded node, to write together with the block.
    ``stale``: node keys no version >= ``version`` needs; delete them once ``version``
    is the oldest retained version (or older).
    """

    root: bytes
    new_nodes: dict[bytes, bytes]
    stale: list[bytes]
    version: int = 0


def _path(key: bytes, depth: int) -> bytes:
    """The first ``depth`` nibbles of ``key`` packed two per byte, odd one padded."""
    half = depth >> 1
    if depth & 1:
        return key[:half] + _HIGH[key[half]]
    return key[:half]


def node_key(version: int, depth: int, key: bytes) -> bytes:
    """NodeKey of the node at ``depth`` on ``key``'s path written at ``version``."""
    return version.to_bytes(8, "big") + _DEPTH[depth] + _path(key, depth)


def _check_internal(enc: bytes) -> bytes:
    """``enc`` if it is a well-formed internal node encoding, else NodeError."""
    if len(enc) < 5 or enc[0] != _T_INTERNAL:
        raise NodeError("expected an internal node")
    bitmap = enc[1] << 8 | enc[2]
    leafmap = enc[3] << 8 | enc[4]
    n = bitmap.bit_count()
    if not n or len(enc) != 5 + 40 * n or leafmap & ~bitmap or (n == 1 and leafmap):
        raise NodeError("corrupt internal node")
    return enc


def _decode_internal(enc: bytes) -> tuple[int, int, list[bytes], list[bytes]]:
    """(bitmap, leafmap, child hashes[16], child versions[16]), b"" for empty slots."""
    bitmap = enc[1] << 8 | enc[2]
    pos = _positions(bitmap)
    hashes = _EMPTY16[:]
    versions = _EMPTY16[:]
    off = 5
    voff = 5 + 32 * len(pos)
    for i in pos:
        hashes[i] = enc[off : off + 32]
        versions[i] = enc[voff : voff + 8]
        off += 32
        voff += 8
    return bitmap, enc[3] << 8 | enc[4], hashes, versions


def _internal_hash(enc: bytes) -> bytes:
    """Hash of an encoded internal node: its preimage is two slices of the encoding."""
    n = (enc[1] << 8 | enc[2]).bit_count()
    return _sha256(NODE_TAG + enc[1:3] + enc[5 : 5 + 32 * n]).digest()


def _node_hash_of(enc: bytes) -> bytes:
    """Hash of any encoded node (root records included)."""
    t = enc[0]
    if t == _T_INTERNAL:
        return _internal_hash(_check_internal(enc))
    if t == _T_LEAF and len(enc) >= 33:
        return _sha256(LEAF_TAG + enc[1:33] + _sha256(enc[33:]).digest()).digest()
    if t == _T_EMPTY and len(enc) == 1:
        return EMPTY_ROOT
    raise NodeError("corrupt node")


def _with_nibble(key: bytes, depth: int, nib: int) -> bytes:
    """``key`` with nibble ``depth`` replaced by ``nib`` (other nibbles kept)."""
    i = depth >> 1
    b = key[i]
    b = (b & 0xF0) | nib if depth & 1 else (nib << 4) | (b & 15)
    return key[:i] + _BYTE[b] + key[i + 1 :]


# A child reference while a batch runs: (hash, version bytes or None, is_leaf, key, value).
# Leaves produced by a batch are "pending" (version None, key and value set): where a
# leaf lands is known only once its parent knows whether it keeps other children (else
# the leaf is hoisted into the parent's place), so the parent writes it.
_Ref = tuple[bytes, bytes | None, bool, bytes | None, bytes | None]
# Sentinel (compared by identity): the subtree is unchanged, keep the old reference.
_SAME: _Ref = (b"", None, False, None, None)

# The C rendering of _Batch.one's common cases (ledger/_smt_fast.c), when it was built;
# DVP_PURE_PYTHON=1 turns it off. It returns NotImplemented, having changed nothing, for
# whatever it does not handle, and this module stays the tree's definition.
_fast: Any = None
if not os.environ.get("DVP_PURE_PYTHON"):
    try:
        from ledger import _smt_fast
    except ImportError:
        pass
    else:
        _smt_fast.setup(LEAF_TAG, NODE_TAG, _SAME)
        _fast = _smt_fast


class SparseMerkleTree:
    """Versioned 16-ary sparse Merkle tree over 32-byte keys, read through a NodeReader.

    Internal nodes are handled in their encoded form (child hashes and versions are
    slices of it) and kept in a bounded LRU cache, version || hash -> encoding (a parent
    refers to a child by both): a hash fixes a node's content and position, and (hash,
    version) also fixes its children's versions. So one cache can serve several readers
    (``with_reader``, e.g. speculative overlays), and cache entries are only bytes, which
    the garbage collector does not track (tuples there would be scanned by every young
    collection, and an update inserts a few per key).
    """

    def __init__(self, reader: NodeReader, cache_nodes: int = DEFAULT_CACHE_NODES) -> None:
        self._reader = reader
        self._get = reader.get_node
        self._cache_nodes = max(16, cache_nodes)
        self._cache: dict[bytes, bytes] = {}

    @property
    def reader(self) -> NodeReader:
        return self._reader

    def with_reader(self, reader: NodeReader) -> SparseMerkleTree:
        """A tree over another reader (e.g. an OverlayReader) sharing this node cache."""
        tree = SparseMerkleTree(reader, self._cache_nodes)
        tree._cache = self._cache
        return tree

    def clear_cache(self) -> None:
        self._cache.clear()

    # ------------------------------------------------------------------ reads

    def _root_record(self, version: int) -> bytes:
        if type(version) is not int or not 0 <= version <= MAX_VERSION:
            raise ValueError(f"version must be an integer in [0, 2**64-1], got {version!r}")
        enc = self._get(version.to_bytes(8, "big") + b"\x00")
        if not enc:
            raise MissingNodeError(f"no root record for version {version}")
        return enc

    def root(self, version: int) -> bytes:
        """Root hash of the tree at ``version`` (MissingNodeError if not stored)."""
        return _node_hash_of(self._root_record(version))

    def _node(self, h: bytes, v8: bytes, depth: int, key: bytes) -> bytes:
        """Encoding of the internal node with hash h written at v8, at ``depth`` on
        ``key``'s path."""
        ck = v8 + h
        enc = self._cache.get(ck)
        if enc is not None:
            return enc
        enc = self._get(v8 + _DEPTH[depth] + _path(key, depth))
        if enc is None:
            raise MissingNodeError(f"missing node at depth {depth}, version {v8.hex()}")
        self._cache[ck] = _check_internal(enc)
        return enc

    def _leaf(self, v8: bytes, depth: int, key: bytes) -> bytes:
        """Encoding of the leaf written at v8, at ``depth`` on ``key``'s path."""
        enc = self._get(v8 + _DEPTH[depth] + _path(key, depth))
        if enc is None:
            raise MissingNodeError(f"missing leaf at depth {depth}, version {v8.hex()}")
        if enc[0] != _T_LEAF or len(enc) < 33:
            raise NodeError("expected a leaf")
        return enc

    def _trim_cache(self) -> None:
        cache = self._cache
        excess = len(cache) - self._cache_nodes
        if excess > 0:
            # Evict the oldest eighth at once: dict order is insertion order, and hits and
            # rewrites move entries to the end, so the front is least recently used.
            for h in list(islice(cache, excess + self._cache_nodes // 8)):
                del cache[h]

    def _walk(
        self, key: bytes, version: int, want_proof: bool
    ) -> tuple[bytes | None, Proof | None]:
        """Follow key's path at version: (value or None, proof if asked)."""
        if type(key) is not bytes or len(key) != KEY_SIZE:
            raise ValueError(f"key must be {KEY_SIZE} bytes")
        enc = self._root_record(version)
        v8 = version.to_bytes(8, "big")
        levels: list[ProofLevel] = []
        t = enc[0]
        if t == _T_EMPTY:
            return None, (_proof(TERMINAL_EMPTY, levels, None, None) if want_proof else None)
        if t == _T_INTERNAL:
            _check_internal(enc)
        cache = self._cache
        depth = 0
        try:
            while t == _T_INTERNAL:
                bitmap = enc[1] << 8 | enc[2]
                b = key[depth >> 1]
                bit = 1 << (b & 15 if depth & 1 else b >> 4)
                n = bitmap.bit_count()
                rank = (bitmap & (bit - 1)).bit_count()
                ho = 5 + 32 * rank
                if want_proof:
                    skip = ho if bitmap & bit else -1
                    sibs = tuple(enc[o : o + 32] for o in range(5, 5 + 32 * n, 32) if o != skip)
                    levels.append(ProofLevel(bitmap, sibs))
                if not bitmap & bit:
                    proof = _proof(TERMINAL_EMPTY, levels, None, None) if want_proof else None
                    return None, proof
                vo = 5 + 32 * n + 8 * rank
                h = enc[ho : ho + 32]
                v8 = enc[vo : vo + 8]
                depth += 1
                if (enc[3] << 8 | enc[4]) & bit:
                    enc = self._leaf(v8, depth, key)
                    break
                ck = v8 + h
                e = cache.pop(ck, None)
                if e is not None:
                    cache[ck] = enc = e  # LRU: move to the end
                else:
                    enc = self._node(h, v8, depth, key)
                t = enc[0]
        finally:
            self._trim_cache()
        if enc[0] != _T_LEAF or len(enc) < 33:
            raise NodeError("expected a leaf")
        lkey = enc[1:33]
        value = enc[33:]
        found = value if lkey == key else None
        if not want_proof:
            return found, None
        kind = TERMINAL_LEAF if found is not None else TERMINAL_OTHER_LEAF
        return found, _proof(kind, levels, lkey, _sha256(value).digest())

    def get(self, key: bytes, version: int) -> bytes | None:
        """The value of ``key`` at ``version``, or None if absent."""
        return self._walk(key, version, False)[0]

    def prove(self, key: bytes, version: int) -> Proof:
        """A membership or non-membership proof for ``key`` against ``root(version)``."""
        proof = self._walk(key, version, True)[1]
        assert proof is not None
        return proof

    def get_with_proof(self, key: bytes, version: int) -> tuple[bytes | None, Proof]:
        """(value or None, proof) in one walk: what an RPC query returns."""
        value, proof = self._walk(key, version, True)
        assert proof is not None
        return value, proof

    def items(self, version: int) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) at ``version`` in key order (for tests, dumps and audits)."""
        enc = self._root_record(version)
        if enc[0] == _T_LEAF:
            yield enc[1:33], enc[33:]
        elif enc[0] == _T_INTERNAL:
            yield from self._items(_check_internal(enc), 0, bytes(KEY_SIZE))

    def _items(self, enc: bytes, depth: int, key: bytes) -> Iterator[tuple[bytes, bytes]]:
        bitmap, leafmap, hashes, versions = _decode_internal(enc)
        for nib in _positions(bitmap):
            child = _with_nibble(key, depth, nib)
            if leafmap >> nib & 1:
                leaf = self._leaf(versions[nib], depth + 1, child)
                yield leaf[1:33], leaf[33:]
            else:
                node = self._node(hashes[nib], versions[nib], depth + 1, child)
                yield from self._items(node, depth + 1, child)

    # ------------------------------------------------------------------ update

    def update(
        self,
        base_version: int | None,
        new_version: int,
        changes: Mapping[bytes, bytes | None],
        must_be_new: Collection[bytes] | None = None,
    ) -> UpdateResult:
        """Apply ``changes`` (value None = delete) to the tree at ``base_version`` (None:
        the empty tree) as ``new_version``. Writes nothing; see ``UpdateResult``.

        ``must_be_new``: keys of ``changes`` that must be absent at ``base_version``
        (e.g. commitments attested for the first time). If any is present, raises
        KeyExistsError naming every such key, and nothing is produced. The check rides
        on the batch walk, which reaches each changed key's old leaf or empty slot
        anyway, so it replaces a ``get`` per key at no measurable cost."""
        if type(new_version) is not int or not 0 <= new_version <= MAX_VERSION:
            raise ValueError(f"new_version must be an integer in [0, 2**64-1]: {new_version!r}")
        if base_version is not None:
            if type(base_version) is not int or not 0 <= base_version < new_version:
                raise ValueError("base_version must be None or an integer below new_version")
        for k, v in changes.items():  # before sorting: mixed key types would raise there
            if type(k) is not bytes or len(k) != KEY_SIZE:
                raise ValueError(f"keys must be {KEY_SIZE}-byte bytes")
            if v is not None and type(v) is not bytes:
                raise ValueError("values must be bytes or None")
        new_set: frozenset[bytes] = frozenset()
        if must_be_new:
            # Only changed keys are walked to, so only they can be checked.
            new_set = frozenset(must_be_new)
            if not new_set <= changes.keys():
                raise ValueError("must_be_new keys must be keys of changes")
        keys = sorted(changes)
        vals = list(map(changes.__getitem__, keys))
        batch = _Batch(self, new_version.to_bytes(8, "big"), keys, vals, new_set)
        try:
            root = batch.run(base_version)
        finally:
            self._trim_cache()
        if batch.existing:
            raise KeyExistsError(batch.existing)
        return UpdateResult(root, batch.new_nodes, batch.stale, new_version)


def _proof(kind: str, levels: list[ProofLevel], key: bytes | None, vh: bytes | None) -> Proof:
    """A Proof built from parts this module produced itself, skipping the structural
    checks of Proof's constructor (they are for proofs that come from outside)."""
    proof = object.__new__(Proof)
    object.__setattr__(proof, "terminal", kind)
    object.__setattr__(proof, "levels", tuple(levels))
    object.__setattr__(proof, "leaf_key", key)
    object.__setattr__(proof, "leaf_value_hash", vh)
    return proof


def _groups(keys: list[bytes], lo: int, hi: int, depth: int) -> list[tuple[int, int, int]]:
    """Split sorted keys[lo:hi] (sharing ``depth`` nibbles) by nibble ``depth``:
    [(nibble, start, end)...] in nibble order."""
    half = depth >> 1
    out = []
    if hi - lo <= 8:
        # Few keys (the lower levels): a linear scan beats bisecting.
        start = lo
        b = keys[lo][half]
        cur = b & 15 if depth & 1 else b >> 4
        for i in range(lo + 1, hi):
            b = keys[i][half]
            n = b & 15 if depth & 1 else b >> 4
            if n != cur:
                out.append((cur, start, i))
                start = i
                cur = n
        out.append((cur, start, hi))
        return out
    prefix = keys[lo][:half]
    i = lo
    left = bisect.bisect_left
    if depth & 1:
        while i < hi:
            b = keys[i][half]
            # The group: every key whose byte ``half`` is b (the high nibble is shared).
            if b == 255 or keys[hi - 1][half] == b:
                j = hi
            else:
                j = left(keys, prefix + _BYTE[b + 1], i, hi)
            out.append((b & 15, i, j))
            i = j
    else:
        while i < hi:
            n = keys[i][half] >> 4
            if n == 15 or keys[hi - 1][half] >> 4 == n:
                j = hi
            else:
                j = left(keys, prefix + _BYTE[(n + 1) << 4], i, hi)
            out.append((n, i, j))
            i = j
    return out


class _Batch:
    """One ``update``. Changes are sorted and partitioned recursively by nibble, so each
    touched node is read once and rewritten once. Where a single change is left (most of
    the tree below the top levels), it descends iteratively and splices the new child
    into each ancestor's encoding on the way back up."""

    __slots__ = (
        "tree",
        "v8",
        "keys",
        "vals",
        "new_nodes",
        "stale",
        "cache",
        "get",
        "must_be_new",
        "existing",
    )

    def __init__(
        self,
        tree: SparseMerkleTree,
        v8: bytes,
        keys: list[bytes],
        vals: list[bytes | None],
        must_be_new: frozenset[bytes] = frozenset(),
    ) -> None:
        self.tree = tree
        # Changed keys that must be absent at the base, and those found present. Every
        # present changed key is met exactly once, as the old leaf in one() or in
        # update_leaf() (the only places a walk reaches an existing leaf of a changed
        # key), so the check costs a set lookup per *existing* changed key only.
        self.must_be_new = must_be_new
        self.existing: list[bytes] = []
        self.v8 = v8
        self.keys = keys
        self.vals = vals
        self.new_nodes: dict[bytes, bytes] = {}
        self.stale: list[bytes] = []
        self.cache = tree._cache
        self.get = tree._get

    def run(self, base_version: int | None) -> bytes:
        root_key = self.v8 + b"\x00"
        n = len(self.keys)
        if base_version is None:
            old = _EMPTY_NODE
        else:
            old = self.tree._root_record(base_version)
            # The base's root record is always superseded by this version's own; the
            # depth-0 node of every version lives at its root record key, so nothing
            # below marks depth-0 nodes stale.
            self.stale.append(base_version.to_bytes(8, "big") + b"\x00")
        t = old[0]
        r: _Ref | None
        if not n:
            r = _SAME
        elif t == _T_EMPTY:
            r = self.build(self.keys, self.vals, 0, n, 0, None)
        elif t == _T_LEAF:
            r = self.update_leaf(old, None, None, 0, 0, n)
        else:
            h = _internal_hash(_check_internal(old))
            assert base_version is not None
            self.cache[base_version.to_bytes(8, "big") + h] = old
            if n == 1:
                r = self.one(h, base_version.to_bytes(8, "big"), 0, 0, 0)
            else:
                r = self.update_internal(h, base_version.to_bytes(8, "big"), 0, 0, n)
        if r is _SAME:
            # Nothing changed: this version's root record is a copy of the old root node
            # (its children keep their versions), so root(new_version) is still one read.
            self.new_nodes[root_key] = old
            return _node_hash_of(old)
        if r is None:
            self.new_nodes[root_key] = _EMPTY_NODE
            return EMPTY_ROOT
        if r[1] is None:  # a pending leaf becomes the root
            self.new_nodes[root_key] = _LEAF_PREFIX + r[3] + r[4]  # type: ignore[operator]
        # else: the new internal root was written under root_key already
        return r[0]

    # -- new subtrees --------------------------------------------------------------------

    def build(
        self,
        keys: list[bytes],
        vals: list[bytes | None],
        lo: int,
        hi: int,
        depth: int,
        known: tuple[bytes, bytes] | None,
    ) -> _Ref | None:
        """The subtree at ``depth`` holding keys[lo:hi] (None values skipped). ``known``
        is a (key, leaf hash) computed before (a leaf being moved)."""
        if hi - lo == 1:
            v = vals[lo]
            if v is None:
                return None
            k = keys[lo]
            if known is not None and known[0] == k:
                return (known[1], None, True, k, v)
            return (_sha256(LEAF_TAG + k + _sha256(v).digest()).digest(), None, True, k, v)
        hashes = _EMPTY16[:]
        versions = _EMPTY16[:]
        bitmap = leafmap = 0
        pending: list[_Ref] = []
        d1 = depth + 1
        for nib, glo, ghi in _groups(keys, lo, hi, depth):
            r = self.build(keys, vals, glo, ghi, d1, known)
            if r is None:
                continue
            bit = 1 << nib
            bitmap |= bit
            hashes[nib] = r[0]
            rv = r[1]
            if rv is None:  # a new leaf
                leafmap |= bit
                pending.append(r)
            else:
                versions[nib] = rv
        return self.finish(bitmap, leafmap, hashes, versions, pending, depth, keys[lo])

    def pair(self, depth: int, k1: bytes, v1: bytes, h1: bytes, k2: bytes, v2: bytes) -> _Ref:
        """The subtree at ``depth`` holding exactly two keys (an insert meeting a leaf)."""
        d = depth
        while True:  # the first nibble where the keys part (they differ somewhere)
            b1 = k1[d >> 1]
            b2 = k2[d >> 1]
            n1 = b1 & 15 if d & 1 else b1 >> 4
            n2 = b2 & 15 if d & 1 else b2 >> 4
            if n1 != n2:
                break
            d += 1
        v8 = self.v8
        new_nodes = self.new_nodes
        h2 = _sha256(LEAF_TAG + k2 + _sha256(v2).digest()).digest()
        d1 = d + 1
        half = d1 >> 1
        if d1 & 1:
            new_nodes[v8 + _DEPTH[d1] + k1[:half] + _HIGH[k1[half]]] = _LEAF_PREFIX + k1 + v1
            new_nodes[v8 + _DEPTH[d1] + k2[:half] + _HIGH[k2[half]]] = _LEAF_PREFIX + k2 + v2
        else:
            new_nodes[v8 + _DEPTH[d1] + k1[:half]] = _LEAF_PREFIX + k1 + v1
            new_nodes[v8 + _DEPTH[d1] + k2[:half]] = _LEAF_PREFIX + k2 + v2
        bitmap = (1 << n1) | (1 << n2)
        bm2 = bitmap.to_bytes(2, "big")
        hs = h1 + h2 if n1 < n2 else h2 + h1
        enc = b"".join((_INTERNAL_PREFIX, bm2, bm2, hs, v8, v8))
        h = _sha256(NODE_TAG + bm2 + hs).digest()
        new_nodes[v8 + _DEPTH[d] + _path(k1, d)] = enc
        self.cache[v8 + h] = enc
        while d > depth:  # single-child nodes down to where the keys part (rare)
            d -= 1
            b1 = k1[d >> 1]
            bm2 = (1 << (b1 & 15 if d & 1 else b1 >> 4)).to_bytes(2, "big")
            enc = b"".join((_INTERNAL_PREFIX, bm2, b"\x00\x00", h, v8))
            h = _sha256(NODE_TAG + bm2 + h).digest()
            new_nodes[v8 + _DEPTH[d] + _path(k1, d)] = enc
            self.cache[v8 + h] = enc
        return (h, v8, False, None, None)

    def finish(
        self,
        bitmap: int,
        leafmap: int,
        hashes: list[bytes],
        versions: list[bytes],
        pending: list[_Ref],
        depth: int,
        key: bytes,
    ) -> _Ref | None:
        """Write the internal node at ``depth`` on ``key``'s path from its 16 slots, or
        hoist its only child if that is a leaf. ``pending``: new leaves among them."""
        if not bitmap:
            return None
        d1 = depth + 1
        if leafmap == bitmap and not bitmap & (bitmap - 1):
            # A single child that is a leaf: the leaf takes this node's place.
            if pending:
                return pending[0]
            nib = bitmap.bit_length() - 1
            nk = versions[nib] + _DEPTH[d1] + _path(_with_nibble(key, depth, nib), d1)
            enc = self.tree._leaf(versions[nib], d1, _with_nibble(key, depth, nib))
            self.stale.append(nk)
            return (hashes[nib], None, True, enc[1:33], enc[33:])
        v8 = self.v8
        new_nodes = self.new_nodes
        if pending:
            dep = _DEPTH[d1]
            for p in pending:
                k = p[3]
                assert k is not None and p[4] is not None
                new_nodes[v8 + dep + _path(k, d1)] = _LEAF_PREFIX + k + p[4]
                b = k[depth >> 1]
                versions[b & 15 if depth & 1 else b >> 4] = v8
        bm2 = bitmap.to_bytes(2, "big")
        hs = b"".join(hashes)
        h = _sha256(NODE_TAG + bm2 + hs).digest()
        enc = b"".join((_INTERNAL_PREFIX, bm2, leafmap.to_bytes(2, "big"), hs, b"".join(versions)))
        new_nodes[v8 + _DEPTH[depth] + _path(key, depth)] = enc
        self.cache[v8 + h] = enc
        return (h, v8, False, None, None)

    # -- changed subtrees ----------------------------------------------------------------

    def update_leaf(
        self, enc: bytes, nk: bytes | None, h: bytes | None, depth: int, lo: int, hi: int
    ) -> _Ref | None:
        """The subtree at ``depth`` that was the single leaf ``enc`` with hash ``h``,
        stored under ``nk`` (None for the root, whose record run() handles)."""
        keys, vals = self.keys, self.vals
        lkey = enc[1:33]
        lval = enc[33:]
        sub_k = keys[lo:hi]
        sub_v = vals[lo:hi]
        i = bisect.bisect_left(sub_k, lkey)
        if i == len(sub_k) or sub_k[i] != lkey:
            sub_k.insert(i, lkey)
            sub_v.insert(i, lval)
            known = None if h is None else (lkey, h)
        else:
            known = None  # the batch gives the old leaf's key a value of its own
            if lkey in self.must_be_new:
                self.existing.append(lkey)
        r = self.build(sub_k, sub_v, 0, len(sub_k), depth, known)
        if r is not None and r[1] is None and r[3] == lkey and r[4] == lval:
            return _SAME  # only no-op changes: the leaf stays where it is
        if nk is not None:
            self.stale.append(nk)
        return r

    def update_internal(self, h: bytes, v8: bytes, depth: int, lo: int, hi: int) -> _Ref | None:
        """The subtree at ``depth`` whose internal node (hash h, written at v8) meets the
        changes keys[lo:hi], hi - lo >= 2.

        One pass over the changes, grouped by their nibble at ``depth`` (in nibble order,
        as the node's children are): each changed child is spliced into the node's two
        sections (hashes, versions) as the pieces of the old encoding between changed
        children are collected, so the node is neither decoded into 16 slots nor
        re-sliced once per change."""
        keys = self.keys
        key0 = keys[lo]
        half = depth >> 1
        odd = depth & 1
        prefix = key0[:half]  # every key in range shares it (and nibble depth-1 if odd)
        pk = _DEPTH[depth] + (prefix + _HIGH[key0[half]] if odd else prefix)
        ok = v8 + pk  # for a read on a cache miss, and the stale key
        cache = self.cache
        ck = v8 + h  # its cache key
        e = cache.get(ck)
        if e is not None:
            enc = e
            hit = True
        else:
            # Not put in the cache: a node a batch reaches is (nearly always) rewritten
            # by it, superseding this version of it at once.
            got = self.get(ok)
            if got is None:
                raise MissingNodeError(f"missing node at depth {depth}, version {v8.hex()}")
            enc = _check_internal(got)
            hit = False
        bitmap = enc[1] << 8 | enc[2]
        leafmap = enc[3] << 8 | enc[4]
        hend = 5 + 32 * bitmap.bit_count()
        d1 = depth + 1
        nv8 = self.v8
        new_bitmap = bitmap
        new_leafmap = leafmap
        # The new hash and version sections, as pieces: old runs of children, new ones.
        hparts: list[bytes] = []
        vparts: list[bytes] = []
        hpos = 5  # where the old children not yet copied start, in each section
        vpos = hend
        pending: list[_Ref] | None = None  # new leaves among the children, written below
        left = _bisect_left
        i = lo
        while i < hi:
            # The group keys[i:j]: the changes whose nibble at ``depth`` is nib.
            b = keys[i][half]
            j = i + 1
            if odd:
                nib = b & 15
                if hi - i <= 8:  # few keys (the lower levels): a scan beats bisecting
                    while j < hi and keys[j][half] == b:
                        j += 1
                elif b == 255 or keys[hi - 1][half] == b:
                    j = hi
                else:
                    j = left(keys, prefix + _BYTE[b + 1], j, hi)
            else:
                nib = b >> 4
                if hi - i <= 8:
                    while j < hi and keys[j][half] >> 4 == nib:
                        j += 1
                elif nib == 15 or keys[hi - 1][half] >> 4 == nib:
                    j = hi
                else:
                    j = left(keys, prefix + _BYTE[(nib + 1) << 4], j, hi)
            bit = 1 << nib
            rank = (bitmap & (bit - 1)).bit_count()
            o = 5 + 32 * rank
            q = hend + 8 * rank
            r: _Ref | None
            if bitmap & bit:
                ch = enc[o : o + 32]
                cv = enc[q : q + 8]
                if j - i == 1:
                    r = self.one(ch, cv, leafmap & bit, d1, i)
                elif leafmap & bit:
                    nk = cv + _DEPTH[d1] + _path(keys[i], d1)
                    leaf = self.tree._leaf(cv, d1, keys[i])
                    r = self.update_leaf(leaf, nk, ch, d1, i, j)
                else:
                    r = self.update_internal(ch, cv, d1, i, j)
                i = j
                if r is _SAME:
                    continue
                hparts.append(enc[hpos:o])
                vparts.append(enc[vpos:q])
                hpos = o + 32  # the old child is dropped
                vpos = q + 8
                if r is None:  # the child is gone
                    new_bitmap ^= bit
                    new_leafmap &= ~bit
                    continue
            else:
                r = self.build(keys, self.vals, i, j, d1, None)
                i = j
                if r is None:
                    continue  # only deletions of absent keys
                hparts.append(enc[hpos:o])
                vparts.append(enc[vpos:q])
                hpos = o
                vpos = q
                new_bitmap |= bit
            hparts.append(r[0])
            vparts.append(nv8)
            if r[1] is None:
                new_leafmap |= bit
                if pending is None:
                    pending = [r]
                else:
                    pending.append(r)
            elif new_leafmap & bit:  # a leaf became a node
                new_leafmap ^= bit
        if not hparts:
            return _SAME
        if depth:  # depth-0 nodes are root records, handled by run()
            self.stale.append(ok)
        if hit:
            cache.pop(ck, None)  # superseded: only older versions still refer to it
        if not new_bitmap:
            return None
        hparts.append(enc[hpos:hend])
        vparts.append(enc[vpos:])
        hs = b"".join(hparts)
        if new_leafmap == new_bitmap and not new_bitmap & (new_bitmap - 1):
            # A single child that is a leaf: the leaf takes this node's place.
            if pending:
                return pending[0]
            vs = b"".join(vparts)
            lk = _with_nibble(key0, depth, new_bitmap.bit_length() - 1)
            leaf = self.tree._leaf(vs, d1, lk)
            self.stale.append(vs + _DEPTH[d1] + _path(lk, d1))
            return (hs, None, True, leaf[1:33], leaf[33:])
        new_nodes = self.new_nodes
        if pending:
            dep = _DEPTH[d1]
            for p in pending:
                k = p[3]
                assert k is not None and p[4] is not None
                new_nodes[nv8 + dep + _path(k, d1)] = _LEAF_PREFIX + k + p[4]
        bm2 = new_bitmap.to_bytes(2, "big")
        ne = b"".join((_INTERNAL_PREFIX, bm2, new_leafmap.to_bytes(2, "big"), hs, b"".join(vparts)))
        hh = _node_hasher()
        hh.update(bm2)
        hh.update(hs)
        nh = hh.digest()
        new_nodes[nv8 + pk] = ne
        cache[nv8 + nh] = ne
        return (nh, nv8, False, None, None)

    def one(self, h: bytes, v8: bytes, is_leaf: int, depth: int, idx: int) -> _Ref | None:
        """The subtree at ``depth`` (hash h, written at v8; a leaf iff ``is_leaf``) meeting
        the single change keys[idx]: walk down to the slot, then splice the new child into
        each node's encoding on the way back up.

        This is the hot loop of update (at a million keys, nearly every key of a batch
        ends up here), so it is inlined by hand, and the last internal node on the path
        is finished on the spot for the common cases: a new key in an empty slot, a new
        key splitting a leaf, a new value for a key. Everything else (deletions, hoisting,
        long shared prefixes) goes through the general code below."""
        k = self.keys[idx]
        v = self.vals[idx]
        if _fast is not None and not is_leaf:
            r = _fast.one(
                self.cache,
                self.get,
                k,
                v,
                h,
                v8,
                depth,
                self.v8,
                self.new_nodes,
                self.stale,
                self.must_be_new,
                self.existing,
            )
            if r is not NotImplemented:
                return r  # type: ignore[no-any-return]
        cache = self.cache
        get = self.get
        nv8 = self.v8
        new_nodes = self.new_nodes
        stale = self.stale
        sha = _sha256
        join = b"".join
        # per internal node above the last one: (encoding, its cache key if it came from
        # the cache, node key, node key suffix, bit of the path child, offset of its hash, end
        # of the hash section, offset of its version)
        stack: list[tuple[bytes, bytes | None, bytes, bytes, int, int, int, int]] = []
        # The new child being spliced upwards: hash (None: removed), whether it is a
        # (pending, not yet written) leaf, and that leaf's key and value.
        rh: bytes | None
        rleaf = True
        rk = k
        rval = v
        if is_leaf:
            # The subtree is a single leaf (hash h) at ``depth``.
            half = depth >> 1
            pk = _DEPTH[depth] + (k[:half] + _HIGH[k[half]] if depth & 1 else k[:half])
            nk = v8 + pk
            leaf = get(nk)
            if leaf is None:
                raise MissingNodeError(f"missing leaf at depth {depth}, version {v8.hex()}")
            if leaf[0] != _T_LEAF or len(leaf) < 33:
                raise NodeError("expected a leaf")
            lkey = leaf[1:33]
            if lkey == k:
                if k in self.must_be_new:
                    self.existing.append(k)
                if v == leaf[33:]:
                    return _SAME
                if v is None:
                    rh = None
                else:
                    rh = sha(LEAF_TAG + k + sha(v).digest()).digest()
            else:
                if v is None:
                    return _SAME  # deleting a key that is not there
                rh = self.pair(depth, lkey, leaf[33:], h, k, v)[0]
                rleaf = False
            if depth:
                stale.append(nk)
        else:
            while True:
                # The internal node (hash h, written at v8) at ``depth`` on k's path. Its
                # node key suffix pk (depth || packed path) and node key ok are built once:
                # ok for the read on a cache miss and as the stale key (the node is
                # rewritten), pk for the new node key.
                half = depth >> 1
                b = k[half]
                if depth & 1:
                    pk = _DEPTH[depth] + k[:half] + _HIGH[b]
                    bit = 1 << (b & 15)
                else:
                    pk = _DEPTH[depth] + k[:half]
                    bit = 1 << (b >> 4)
                ok = v8 + pk
                ck = v8 + h  # its cache key
                e = cache.get(ck)
                if e is not None:
                    enc = e
                    old = ck
                    bitmap = enc[1] << 8 | enc[2]
                    leafmap = enc[3] << 8 | enc[4]
                    n = bitmap.bit_count()
                else:
                    # Not put in the cache: it is rewritten below, superseding it at once.
                    enc = get(ok)  # type: ignore[assignment]
                    if enc is None:
                        raise MissingNodeError(f"missing node at depth {depth}, version {v8.hex()}")
                    old = None
                    # _check_internal(), inlined
                    if len(enc) < 45 or enc[0] != _T_INTERNAL:
                        raise NodeError("expected an internal node")
                    bitmap = enc[1] << 8 | enc[2]
                    leafmap = enc[3] << 8 | enc[4]
                    n = bitmap.bit_count()
                    if len(enc) != 5 + 40 * n or leafmap & ~bitmap or (n == 1 and leafmap):
                        raise NodeError("corrupt internal node")
                rank = (bitmap & (bit - 1)).bit_count()
                ho = 5 + 32 * rank
                hend = 5 + 32 * n
                vo = hend + 8 * rank
                if bitmap & bit and not leafmap & bit:
                    # An internal child: go down.
                    stack.append((enc, old, ok, pk, bit, ho, hend, vo))
                    h = enc[ho : ho + 32]
                    v8 = enc[vo : vo + 8]
                    depth += 1
                    continue
                # The last internal node: the child slot is empty or holds a leaf, one
                # level down (at d1, whose node key path is p1, shared by that leaf).
                d1 = depth + 1
                h1 = d1 >> 1
                p1 = k[:h1] + _HIGH[k[h1]] if d1 & 1 else k[:h1]
                if not bitmap & bit:
                    if v is None:
                        return _SAME  # deleting a key that is not there
                    # A new key in an empty slot: its leaf goes in the slot.
                    hh = _leaf_hasher()
                    hh.update(k)
                    hh.update(sha(v).digest())
                    lh = hh.digest()
                    new_nodes[nv8 + _DEPTH[d1] + p1] = _LEAF_PREFIX + k + v
                    bm2 = (bitmap | bit).to_bytes(2, "big")
                    ne = join(
                        (
                            _INTERNAL_PREFIX,
                            bm2,
                            (leafmap | bit).to_bytes(2, "big"),
                            enc[5:ho],
                            lh,
                            enc[ho:vo],
                            nv8,
                            enc[vo:],
                        )
                    )
                    hh = _node_hasher()
                    hh.update(bm2)
                    hh.update(ne[5 : hend + 32])
                    rh = hh.digest()
                else:
                    lv8 = enc[vo : vo + 8]
                    nk = lv8 + _DEPTH[d1] + p1
                    leaf = get(nk)  # type: ignore[assignment]
                    if leaf is None:
                        raise MissingNodeError(f"missing leaf at depth {d1}, version {lv8.hex()}")
                    if leaf[0] != _T_LEAF or len(leaf) < 33:
                        raise NodeError("expected a leaf")
                    lkey = leaf[1:33]
                    if lkey == k:
                        if k in self.must_be_new:
                            self.existing.append(k)
                        if v == leaf[33:]:
                            return _SAME
                        stale.append(nk)  # the old leaf (below: every other case)
                        if v is None:  # a deletion: the general code below
                            stack.append((enc, old, ok, pk, bit, ho, hend, vo))
                            rh = None
                            break
                        # A new value: the new leaf replaces the old one in place.
                        hh = _leaf_hasher()
                        hh.update(k)
                        hh.update(sha(v).digest())
                        lh = hh.digest()
                        new_nodes[nv8 + _DEPTH[d1] + p1] = _LEAF_PREFIX + k + v
                        ne = join((enc[:ho], lh, enc[ho + 32 : vo], nv8, enc[vo + 8 :]))
                    else:
                        if v is None:
                            return _SAME  # deleting a key that is not there
                        stale.append(nk)
                        # A new key meets another key's leaf: a node holding both
                        # replaces the leaf. (d1 < 64: the keys share d1 nibbles.)
                        oh = enc[ho : ho + 32]
                        kb = k[h1]
                        lb = lkey[h1]
                        if d1 & 1:
                            kn = kb & 15
                            ln = lb & 15
                        else:
                            kn = kb >> 4
                            ln = lb >> 4
                        if kn == ln:  # they part further down (1 in 16): pair()
                            stack.append((enc, old, ok, pk, bit, ho, hend, vo))
                            rh = self.pair(d1, lkey, leaf[33:], oh, k, v)[0]
                            rleaf = False
                            break
                        # The usual split: the keys part at d1, so the new node's two
                        # children are the leaves, one more level down.
                        d2 = d1 + 1
                        h2 = d2 >> 1
                        dep2 = nv8 + _DEPTH[d2]
                        if d2 & 1:
                            new_nodes[dep2 + k[:h2] + _HIGH[k[h2]]] = _LEAF_PREFIX + k + v
                            new_nodes[dep2 + lkey[:h2] + _HIGH[lkey[h2]]] = leaf
                        else:
                            new_nodes[dep2 + k[:h2]] = _LEAF_PREFIX + k + v
                            new_nodes[dep2 + lkey[:h2]] = leaf
                        hh = _leaf_hasher()
                        hh.update(k)
                        hh.update(sha(v).digest())
                        lh = hh.digest()
                        sbm = ((1 << kn) | (1 << ln)).to_bytes(2, "big")
                        shs = lh + oh if kn < ln else oh + lh
                        sne = join((_INTERNAL_PREFIX, sbm, sbm, shs, nv8, nv8))
                        hh = _node_hasher()
                        hh.update(sbm)
                        hh.update(shs)
                        sh = hh.digest()
                        # (not cached: it is read again only if another key lands
                        # right here)
                        new_nodes[nv8 + _DEPTH[d1] + p1] = sne
                        # and in this node, the child turns from a leaf into a node
                        ne = join(
                            (
                                enc[:3],
                                (leafmap ^ bit).to_bytes(2, "big"),
                                enc[5:ho],
                                sh,
                                enc[ho + 32 : vo],
                                nv8,
                                enc[vo + 8 :],
                            )
                        )
                    hh = _node_hasher()
                    hh.update(enc[1:3])
                    hh.update(ne[5:hend])
                    rh = hh.digest()
                if depth:  # depth-0 nodes are root records, handled by run()
                    stale.append(ok)
                if old is not None:  # it came from the cache, where it is now superseded
                    cache.pop(old, None)
                new_nodes[nv8 + pk] = ne
                cache[nv8 + rh] = ne
                rleaf = False
                break
        # Back up: each node above (hash h, node key ok, node key suffix pk) gets its
        # path child ``bit`` (always present) replaced by the new child and is rewritten
        # at this batch's version, unless a lone leaf is left, which then takes the
        # node's place.
        while stack:
            enc, old, ok, pk, bit, ho, hend, vo = stack.pop()
            if pk[0]:  # (the depth) depth-0 nodes are root records, handled by run()
                stale.append(ok)
            if old is not None:  # it came from the cache, where it is now superseded
                cache.pop(old, None)
            leafmap = enc[3] << 8 | enc[4]
            if rh is not None and not rleaf:
                # The common case: a rewritten internal child in place of the old child
                # (or of the leaf a new key split, then the leafmap loses its bit). The
                # bitmap stays; the child's hash and version are spliced in place.
                if leafmap & bit:
                    head = enc[:3] + (leafmap ^ bit).to_bytes(2, "big") + enc[5:ho]
                else:
                    head = enc[:ho]
                ne = join((head, rh, enc[ho + 32 : vo], nv8, enc[vo + 8 :]))
                hh = _node_hasher()
                hh.update(enc[1:3])
                hh.update(ne[5:hend])
                rh = hh.digest()
                new_nodes[nv8 + pk] = ne
                cache[nv8 + rh] = ne
                continue
            # After a deletion: the child is gone, or it collapsed into a leaf (pending,
            # rleaf), which lands here or moves further up.
            bitmap = enc[1] << 8 | enc[2]
            depth = pk[0]
            if rh is None:  # the child is gone
                bitmap ^= bit
                leafmap &= ~bit
                hs = enc[5:ho] + enc[ho + 32 : hend]
                vs = enc[hend:vo] + enc[vo + 8 :]
                if leafmap == bitmap and not bitmap & (bitmap - 1):
                    if not bitmap:  # unreachable: a lone child holds >= 2 keys
                        continue
                    # One leaf is left: it moves up into this node's place.
                    left = _with_nibble(k, depth, bitmap.bit_length() - 1)
                    leaf = self.tree._leaf(vs, depth + 1, left)
                    stale.append(vs + _DEPTH[depth + 1] + _path(left, depth + 1))
                    rh = hs
                    rleaf = True
                    rk = leaf[1:33]
                    rval = leaf[33:]
                    continue
            else:
                if bitmap == bit:
                    continue  # the only child became a leaf: it moves up
                # The pending leaf lands here, one level down.
                hs = enc[5:ho] + rh + enc[ho + 32 : hend]
                vs = enc[hend:vo] + nv8 + enc[vo + 8 :]
                leafmap |= bit
                d1 = depth + 1
                h1 = d1 >> 1
                assert rval is not None
                new_nodes[nv8 + _DEPTH[d1] + (rk[:h1] + _HIGH[rk[h1]] if d1 & 1 else rk[:h1])] = (
                    _LEAF_PREFIX + rk + rval
                )
            bm2 = bitmap.to_bytes(2, "big")
            ne = join((_INTERNAL_PREFIX, bm2, leafmap.to_bytes(2, "big"), hs, vs))
            rh = sha(NODE_TAG + bm2 + hs).digest()
            rleaf = False
            new_nodes[nv8 + pk] = ne
            cache[nv8 + rh] = ne
        if rh is None:
            return None
        if rleaf:
            return (rh, None, True, rk, rval)
        return (rh, nv8, False, None, None)


# --------------------------------------------------------------------------- stores


class MemoryNodeStore:
    """Dict-backed node store: a NodeReader plus ``apply``/``prune`` (tests, benchmarks)."""

    def __init__(self, nodes: dict[bytes, bytes] | None = None) -> None:
        self._nodes: dict[bytes, bytes] = {} if nodes is None else nodes
        # The dict's own get is the reader: a Python-level method around it would cost
        # a call frame per node read, which shows in update throughput.
        self.get_node: Callable[[bytes], bytes | None] = self._nodes.get
        # version -> stale keys its update produced (JMT's stale node index)
        self.stale_index: dict[int, list[bytes]] = {}

    @property
    def nodes(self) -> dict[bytes, bytes]:
        """node_key -> encoded node."""
        return self._nodes

    @nodes.setter
    def nodes(self, nodes: dict[bytes, bytes]) -> None:
        self._nodes = nodes
        self.get_node = nodes.get

    def apply(self, result: UpdateResult) -> None:
        """Persist an update's nodes and remember its stale keys for ``prune``."""
        self.nodes.update(result.new_nodes)
        if result.stale:
            self.stale_index.setdefault(result.version, []).extend(result.stale)

    def prune(self, oldest_kept: int) -> int:
        """Delete nodes only versions < ``oldest_kept`` need; return how many."""
        removed = 0
        for version in [v for v in self.stale_index if v <= oldest_kept]:
            for k in self.stale_index.pop(version):
                if self.nodes.pop(k, None) is not None:
                    removed += 1
        return removed

    def __len__(self) -> int:
        return len(self.nodes)


class OverlayReader:
    """A NodeReader over ``base`` with pending, not yet committed ``new_nodes`` dicts on
    top (later dicts win), to execute block h+1 on top of an uncommitted block h."""

    def __init__(self, base: NodeReader, *pending: Mapping[bytes, bytes]) -> None:
        self.base = base
        self.pending = list(pending)

    def push(self, nodes: Mapping[bytes, bytes]) -> None:
        self.pending.append(nodes)

    def get_node(self, node_key: bytes) -> bytes | None:
        for nodes in reversed(self.pending):
            enc = nodes.get(node_key)
            if enc is not None:
                return enc
        return self.base.get_node(node_key)
