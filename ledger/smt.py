"""The authenticated state tree: a versioned, path-compressed, 16-ary sparse Merkle tree.

This module owns ``SparseMerkleTree``: the tree's shape, its reads and proof generation,
and the entry point of updates. It is the public entry point of the tree and re-exports
what its parts own:

* ledger/smt_node.py: the stored node format (encodings, node keys, checks);
* ledger/smt_storage.py: ``NodeReader``, ``UpdateResult``, ``MissingNodeError``,
  ``MemoryNodeStore``, ``OverlayReader``;
* ledger/smt_update.py and ledger/smt_update_one.py: batched updates (and the loading of
  their C fast path, ledger/_smt_fast.c);
* ledger/smt_proof.py: hashes, the ``Proof`` object and verification.

The byte-exact spec is docs/proofs-smt.md.

Rules:

* Shape (Jellyfish-Merkle-like, a function of the key set alone): the subtree holding
  the keys with a given nibble prefix is nothing if there are none, a leaf if there is
  one, else an internal node with up to 16 children (the next nibble). So a leaf sits at
  the shallowest depth where its prefix is unique; there are no extension nodes (keys are
  SHA-256 outputs, so single-child chains are short and rare).
* Nodes are immutable and stored under node keys (version, depth, path: their layout and
  the node encodings are ledger/smt_node.py). An update writes new nodes at
  ``new_version`` only along changed paths; everything else is shared with older
  versions by reference (a child reference is its hash, the version it was written at,
  and whether it is a leaf).
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
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from itertools import islice

from ledger.codec import UINT64_MAX
from ledger.smt_node import (
    DEPTH,
    T_EMPTY,
    T_INTERNAL,
    T_LEAF,
    NodeError,
    check_internal,
    check_leaf,
    decode_internal,
    node_hash_of,
    node_key,
    path,
    positions,
    with_nibble,
)
from ledger.smt_node import node_hash_of as _node_hash_of  # noqa: F401 (scripts/bounds)
from ledger.smt_proof import (
    EMPTY_ROOT,
    HASH_SIZE,
    KEY_SIZE,
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
from ledger.smt_storage import (
    MemoryNodeStore,
    MissingNodeError,
    NodeReader,
    OverlayReader,
    UpdateResult,
)
from ledger.smt_update import _Batch

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

MAX_VERSION = UINT64_MAX
DEFAULT_CACHE_NODES = 1 << 17


class KeyExistsError(ValueError):
    """``update``: keys the caller required to be new (``must_be_new``) exist at the
    base version. ``keys``: all of them, in key order. Nothing was produced."""

    def __init__(self, keys: Collection[bytes]) -> None:
        self.keys: tuple[bytes, ...] = tuple(sorted(keys))
        shown = ", ".join(k.hex() for k in self.keys[:3])
        more = f" and {len(self.keys) - 3} more" if len(self.keys) > 3 else ""
        super().__init__(f"{len(self.keys)} key(s) already exist: {shown}{more}")


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
        return node_hash_of(self._root_record(version))

    def _node(self, h: bytes, v8: bytes, depth: int, key: bytes) -> bytes:
        """Encoding of the internal node with hash h written at v8, at ``depth`` on
        ``key``'s path."""
        ck = v8 + h
        enc = self._cache.get(ck)
        if enc is not None:
            return enc
        enc = self._get(v8 + DEPTH[depth] + path(key, depth))
        if enc is None:
            raise MissingNodeError(f"missing node at depth {depth}, version {v8.hex()}")
        self._cache[ck] = check_internal(enc)
        return enc

    def _leaf(self, v8: bytes, depth: int, key: bytes) -> bytes:
        """Encoding of the leaf written at v8, at ``depth`` on ``key``'s path."""
        enc = self._get(v8 + DEPTH[depth] + path(key, depth))
        if enc is None:
            raise MissingNodeError(f"missing leaf at depth {depth}, version {v8.hex()}")
        return check_leaf(enc)

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
        if t == T_EMPTY:
            return None, (_proof(TERMINAL_EMPTY, levels, None, None) if want_proof else None)
        if t == T_INTERNAL:
            check_internal(enc)
        cache = self._cache
        depth = 0
        try:
            while t == T_INTERNAL:
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
        check_leaf(enc)
        lkey = enc[1:33]
        value = enc[33:]
        found = value if lkey == key else None
        if not want_proof:
            return found, None
        kind = TERMINAL_LEAF if found is not None else TERMINAL_OTHER_LEAF
        return found, _proof(kind, levels, lkey, value_hash(value))

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
        if enc[0] == T_LEAF:
            yield enc[1:33], enc[33:]
        elif enc[0] == T_INTERNAL:
            yield from self._items(check_internal(enc), 0, bytes(KEY_SIZE))

    def _items(self, enc: bytes, depth: int, key: bytes) -> Iterator[tuple[bytes, bytes]]:
        bitmap, leafmap, hashes, versions = decode_internal(enc)
        for nib in positions(bitmap):
            child = with_nibble(key, depth, nib)
            if leafmap >> nib & 1:
                leaf = self._leaf(versions[nib], depth + 1, child)
                yield leaf[1:33], leaf[33:]
            else:
                node = self._node(hashes[nib], versions[nib], depth + 1, child)
                yield from self._items(node, depth + 1, child)

    def items_after(self, version: int, after: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """``items(version)`` from the first key above ``after`` (None: from the start),
        skipping whole subtrees below it: a state snapshot is served in pages, each page
        starting where the last one ended."""
        if after is None:
            yield from self.items(version)
            return
        if type(after) is not bytes or len(after) != KEY_SIZE:
            raise ValueError(f"after must be a {KEY_SIZE}-byte key")
        enc = self._root_record(version)
        if enc[0] == T_LEAF:
            if enc[1:33] > after:
                yield enc[1:33], enc[33:]
        elif enc[0] == T_INTERNAL:
            yield from self._items_after(check_internal(enc), 0, bytes(KEY_SIZE), after)

    def _items_after(
        self, enc: bytes, depth: int, key: bytes, after: bytes
    ) -> Iterator[tuple[bytes, bytes]]:
        # ``key``'s first ``depth`` nibbles equal ``after``'s: children left of
        # ``after``'s nibble hold only smaller keys, those right of it only larger ones.
        bitmap, leafmap, hashes, versions = decode_internal(enc)
        bound = nibble(after, depth)
        for nib in positions(bitmap):
            if nib < bound:
                continue
            child = with_nibble(key, depth, nib)
            if leafmap >> nib & 1:
                leaf = self._leaf(versions[nib], depth + 1, child)
                if leaf[1:33] > after:
                    yield leaf[1:33], leaf[33:]
                continue
            node = self._node(hashes[nib], versions[nib], depth + 1, child)
            if nib == bound:
                yield from self._items_after(node, depth + 1, child, after)
            else:
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
