"""One change below a node of the state tree: the hot path of an update, and its C twin.

This module owns ``update_one``, which is ``_Batch.one`` of ledger/smt_update.py: a
single change that reaches a subtree, walked down to its slot and spliced back up into
each node's encoding. At a million keys nearly every key of a batch ends here, so it is
inlined by hand. It also owns the batch's child references (``_Ref``, the ``_SAME``
sentinel) and loads the C rendering of its common cases (ledger/_smt_fast.c, ``_fast``),
which answers NotImplemented for whatever it does not handle: this Python code stays the
definition. Node layout, checks and keys: ledger/smt_node.py.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Protocol

from ledger.smt_node import (
    DEPTH,
    HIGH,
    INTERNAL_PREFIX,
    LEAF_PREFIX,
    check_internal,
    check_leaf,
    path,
    with_nibble,
)
from ledger.smt_proof import LEAF_TAG, NODE_TAG
from ledger.smt_storage import MissingNodeError

_sha256 = hashlib.sha256
# Hashers with a tag already absorbed: copy() + update() per piece is cheaper than hashing
# a concatenation (no temporary copies of a node's hash section), for the hot paths.
_leaf_hasher = _sha256(LEAF_TAG).copy
_node_hasher = _sha256(NODE_TAG).copy

# A child reference while a batch runs: (hash, version bytes or None, is_leaf, key, value).
# Leaves produced by a batch are "pending" (version None, key and value set): where a
# leaf lands is known only once its parent knows whether it keeps other children (else
# the leaf is hoisted into the parent's place), so the parent writes it.
_Ref = tuple[bytes, bytes | None, bool, bytes | None, bytes | None]
# Sentinel (compared by identity): the subtree is unchanged, keep the old reference.
_SAME: _Ref = (b"", None, False, None, None)


class TreeNodes(Protocol):
    """What a batch reads of its tree (``ledger.smt.SparseMerkleTree``), declared here so
    the update modules need not import the tree module that imports them."""

    _cache: dict[bytes, bytes]

    def _get(self, node_key: bytes) -> bytes | None: ...

    def _root_record(self, version: int) -> bytes: ...

    def _leaf(self, v8: bytes, depth: int, key: bytes) -> bytes: ...


class _Batch(Protocol):
    """What ``update_one`` uses of its batch (``ledger.smt_update._Batch``, which calls
    it as its ``one`` method); a Protocol so this module need not import that one."""

    tree: TreeNodes
    v8: bytes
    must_be_new: frozenset[bytes]
    existing: list[bytes]
    keys: list[bytes]
    vals: list[bytes | None]
    new_nodes: dict[bytes, bytes]
    stale: list[bytes]
    cache: dict[bytes, bytes]

    def get(self, node_key: bytes) -> bytes | None: ...

    def pair(self, depth: int, k1: bytes, v1: bytes, h1: bytes, k2: bytes, v2: bytes) -> _Ref: ...


# The C rendering of update_one's common cases (ledger/_smt_fast.c), when it was built;
# DVP_PURE_PYTHON=1 turns it off. It returns NotImplemented, having changed nothing, for
# whatever it does not handle, and this module stays the definition.
_fast: Any = None
if not os.environ.get("DVP_PURE_PYTHON"):
    try:
        from ledger import _smt_fast
    except ImportError:
        pass
    else:
        _smt_fast.setup(LEAF_TAG, NODE_TAG, _SAME)
        _fast = _smt_fast


def fast_path_in_use() -> bool:
    """True if the C rendering was built and is not turned off (``dvp --version``)."""
    return _fast is not None


def update_one(
    self: _Batch, h: bytes, v8: bytes, is_leaf: int, depth: int, idx: int
) -> _Ref | None:
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
        pk = DEPTH[depth] + (k[:half] + HIGH[k[half]] if depth & 1 else k[:half])
        nk = v8 + pk
        leaf = get(nk)
        if leaf is None:
            raise MissingNodeError(f"missing leaf at depth {depth}, version {v8.hex()}")
        check_leaf(leaf)
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
                pk = DEPTH[depth] + k[:half] + HIGH[b]
                bit = 1 << (b & 15)
            else:
                pk = DEPTH[depth] + k[:half]
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
                check_internal(enc)
                bitmap = enc[1] << 8 | enc[2]
                leafmap = enc[3] << 8 | enc[4]
                n = bitmap.bit_count()
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
            p1 = k[:h1] + HIGH[k[h1]] if d1 & 1 else k[:h1]
            if not bitmap & bit:
                if v is None:
                    return _SAME  # deleting a key that is not there
                # A new key in an empty slot: its leaf goes in the slot.
                hh = _leaf_hasher()
                hh.update(k)
                hh.update(sha(v).digest())
                lh = hh.digest()
                new_nodes[nv8 + DEPTH[d1] + p1] = LEAF_PREFIX + k + v
                bm2 = (bitmap | bit).to_bytes(2, "big")
                ne = join(
                    (
                        INTERNAL_PREFIX,
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
                nk = lv8 + DEPTH[d1] + p1
                leaf = get(nk)
                if leaf is None:
                    raise MissingNodeError(f"missing leaf at depth {d1}, version {lv8.hex()}")
                check_leaf(leaf)
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
                    new_nodes[nv8 + DEPTH[d1] + p1] = LEAF_PREFIX + k + v
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
                    dep2 = nv8 + DEPTH[d2]
                    if d2 & 1:
                        new_nodes[dep2 + k[:h2] + HIGH[k[h2]]] = LEAF_PREFIX + k + v
                        new_nodes[dep2 + lkey[:h2] + HIGH[lkey[h2]]] = leaf
                    else:
                        new_nodes[dep2 + k[:h2]] = LEAF_PREFIX + k + v
                        new_nodes[dep2 + lkey[:h2]] = leaf
                    hh = _leaf_hasher()
                    hh.update(k)
                    hh.update(sha(v).digest())
                    lh = hh.digest()
                    sbm = ((1 << kn) | (1 << ln)).to_bytes(2, "big")
                    shs = lh + oh if kn < ln else oh + lh
                    sne = join((INTERNAL_PREFIX, sbm, sbm, shs, nv8, nv8))
                    hh = _node_hasher()
                    hh.update(sbm)
                    hh.update(shs)
                    sh = hh.digest()
                    # (not cached: it is read again only if another key lands
                    # right here)
                    new_nodes[nv8 + DEPTH[d1] + p1] = sne
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
                left = with_nibble(k, depth, bitmap.bit_length() - 1)
                leaf = self.tree._leaf(vs, depth + 1, left)
                stale.append(vs + DEPTH[depth + 1] + path(left, depth + 1))
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
            new_nodes[nv8 + DEPTH[d1] + (rk[:h1] + HIGH[rk[h1]] if d1 & 1 else rk[:h1])] = (
                LEAF_PREFIX + rk + rval
            )
        bm2 = bitmap.to_bytes(2, "big")
        ne = join((INTERNAL_PREFIX, bm2, leafmap.to_bytes(2, "big"), hs, vs))
        rh = sha(NODE_TAG + bm2 + hs).digest()
        rleaf = False
        new_nodes[nv8 + pk] = ne
        cache[nv8 + rh] = ne
    if rh is None:
        return None
    if rleaf:
        return (rh, None, True, rk, rval)
    return (rh, nv8, False, None, None)
