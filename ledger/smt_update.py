"""Batched updates of the state tree: one pass that rewrites each touched node once.

This module owns ``_Batch``, what ``SparseMerkleTree.update`` (ledger/smt.py) runs: the
sorted changes are partitioned by nibble down the tree; new subtrees are built, changed
ones spliced, and the new nodes and the stale node keys collected for the caller to
persist. Where a single change is left it hands over to ``update_one``
(ledger/smt_update_one.py, with its C fast path). Node layout, checks and keys:
ledger/smt_node.py. A batch reads through its tree's reader and shares its node cache.
"""

from __future__ import annotations

import bisect
import hashlib
from typing import TYPE_CHECKING

from ledger.smt_node import (
    BYTE,
    DEPTH,
    EMPTY16,
    EMPTY_NODE,
    HIGH,
    INTERNAL_PREFIX,
    LEAF_PREFIX,
    T_EMPTY,
    T_LEAF,
    check_internal,
    internal_hash,
    node_hash_of,
    path,
    with_nibble,
)
from ledger.smt_proof import EMPTY_ROOT, LEAF_TAG, NODE_TAG
from ledger.smt_storage import MissingNodeError
from ledger.smt_update_one import _SAME, _node_hasher, _Ref, update_one

if TYPE_CHECKING:
    from ledger.smt import SparseMerkleTree

_sha256 = hashlib.sha256
_bisect_left = bisect.bisect_left


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
                j = left(keys, prefix + BYTE[b + 1], i, hi)
            out.append((b & 15, i, j))
            i = j
    else:
        while i < hi:
            n = keys[i][half] >> 4
            if n == 15 or keys[hi - 1][half] >> 4 == n:
                j = hi
            else:
                j = left(keys, prefix + BYTE[(n + 1) << 4], i, hi)
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
            old = EMPTY_NODE
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
        elif t == T_EMPTY:
            r = self.build(self.keys, self.vals, 0, n, 0, None)
        elif t == T_LEAF:
            r = self.update_leaf(old, None, None, 0, 0, n)
        else:
            h = internal_hash(check_internal(old))
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
            return node_hash_of(old)
        if r is None:
            self.new_nodes[root_key] = EMPTY_NODE
            return EMPTY_ROOT
        if r[1] is None:  # a pending leaf becomes the root
            self.new_nodes[root_key] = LEAF_PREFIX + r[3] + r[4]  # type: ignore[operator]
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
        hashes = EMPTY16[:]
        versions = EMPTY16[:]
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
            new_nodes[v8 + DEPTH[d1] + k1[:half] + HIGH[k1[half]]] = LEAF_PREFIX + k1 + v1
            new_nodes[v8 + DEPTH[d1] + k2[:half] + HIGH[k2[half]]] = LEAF_PREFIX + k2 + v2
        else:
            new_nodes[v8 + DEPTH[d1] + k1[:half]] = LEAF_PREFIX + k1 + v1
            new_nodes[v8 + DEPTH[d1] + k2[:half]] = LEAF_PREFIX + k2 + v2
        bitmap = (1 << n1) | (1 << n2)
        bm2 = bitmap.to_bytes(2, "big")
        hs = h1 + h2 if n1 < n2 else h2 + h1
        enc = b"".join((INTERNAL_PREFIX, bm2, bm2, hs, v8, v8))
        h = _sha256(NODE_TAG + bm2 + hs).digest()
        new_nodes[v8 + DEPTH[d] + path(k1, d)] = enc
        self.cache[v8 + h] = enc
        while d > depth:  # single-child nodes down to where the keys part (rare)
            d -= 1
            b1 = k1[d >> 1]
            bm2 = (1 << (b1 & 15 if d & 1 else b1 >> 4)).to_bytes(2, "big")
            enc = b"".join((INTERNAL_PREFIX, bm2, b"\x00\x00", h, v8))
            h = _sha256(NODE_TAG + bm2 + h).digest()
            new_nodes[v8 + DEPTH[d] + path(k1, d)] = enc
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
            nk = versions[nib] + DEPTH[d1] + path(with_nibble(key, depth, nib), d1)
            enc = self.tree._leaf(versions[nib], d1, with_nibble(key, depth, nib))
            self.stale.append(nk)
            return (hashes[nib], None, True, enc[1:33], enc[33:])
        v8 = self.v8
        new_nodes = self.new_nodes
        if pending:
            for k in self.write_leaves(pending, d1):
                b = k[depth >> 1]
                versions[b & 15 if depth & 1 else b >> 4] = v8
        bm2 = bitmap.to_bytes(2, "big")
        hs = b"".join(hashes)
        h = _sha256(NODE_TAG + bm2 + hs).digest()
        enc = b"".join((INTERNAL_PREFIX, bm2, leafmap.to_bytes(2, "big"), hs, b"".join(versions)))
        new_nodes[v8 + DEPTH[depth] + path(key, depth)] = enc
        self.cache[v8 + h] = enc
        return (h, v8, False, None, None)

    # The single-change hot path (ledger/smt_update_one.py), a method of the batch.
    one = update_one

    def write_leaves(self, pending: list[_Ref], depth: int) -> list[bytes]:
        """Write the new leaves ``pending`` (children of one node) at ``depth``, at this
        batch's version; their keys, in order."""
        new_nodes = self.new_nodes
        prefix = self.v8 + DEPTH[depth]
        keys = []
        for p in pending:
            k = p[3]
            v = p[4]
            assert k is not None and v is not None
            new_nodes[prefix + path(k, depth)] = LEAF_PREFIX + k + v
            keys.append(k)
        return keys

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
        pk = DEPTH[depth] + (prefix + HIGH[key0[half]] if odd else prefix)
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
            enc = check_internal(got)
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
                    j = left(keys, prefix + BYTE[b + 1], j, hi)
            else:
                nib = b >> 4
                if hi - i <= 8:
                    while j < hi and keys[j][half] >> 4 == nib:
                        j += 1
                elif nib == 15 or keys[hi - 1][half] >> 4 == nib:
                    j = hi
                else:
                    j = left(keys, prefix + BYTE[(nib + 1) << 4], j, hi)
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
                    nk = cv + DEPTH[d1] + path(keys[i], d1)
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
            lk = with_nibble(key0, depth, new_bitmap.bit_length() - 1)
            leaf = self.tree._leaf(vs, d1, lk)
            self.stale.append(vs + DEPTH[d1] + path(lk, d1))
            return (hs, None, True, leaf[1:33], leaf[33:])
        new_nodes = self.new_nodes
        if pending:
            self.write_leaves(pending, d1)
        bm2 = new_bitmap.to_bytes(2, "big")
        ne = b"".join((INTERNAL_PREFIX, bm2, new_leafmap.to_bytes(2, "big"), hs, b"".join(vparts)))
        hh = _node_hasher()
        hh.update(bm2)
        hh.update(hs)
        nh = hh.digest()
        new_nodes[nv8 + pk] = ne
        cache[nv8 + nh] = ne
        return (nh, nv8, False, None, None)
