"""Tests of the state tree (ledger/smt.py) and its proofs (ledger/smt_proof.py).

The tree is checked against an independent, deliberately naive transcription of the
spec in docs/proofs-smt.md (``ref_root`` and ``ref_nodes`` below use hashlib and
plain recursion over a dict, no code from ledger/), so agreement is evidence rather than
tautology. tests/vectors/smt.json is regenerated here and compared byte for byte;
regenerate it after an intended format change with ``python -m tests.ledger.test_smt``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ledger.smt import (
    EMPTY_ROOT,
    KeyExistsError,
    MemoryNodeStore,
    MissingNodeError,
    NodeError,
    OverlayReader,
    Proof,
    ProofError,
    ProofLevel,
    SparseMerkleTree,
    UpdateResult,
    node_key,
    root_from_proof,
    verify_proof,
)
from ledger.smt_proof import MAX_PROOF_BYTES

VECTORS = Path(__file__).parent.parent / "vectors" / "smt.json"

# --------------------------------------------------------------------------- reference


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _nib(key: bytes, i: int) -> int:
    return key[i // 2] >> 4 if i % 2 == 0 else key[i // 2] & 0x0F


def _ref_subtree(items: list[tuple[bytes, bytes]], depth: int) -> bytes:
    if len(items) == 1:
        key, value = items[0]
        return _h(b"dvp/smt/leaf/v1\x00" + key + _h(value))
    bitmap = 0
    children = b""
    for n in range(16):
        sub = [kv for kv in items if _nib(kv[0], depth) == n]
        if sub:
            bitmap |= 1 << n
            children += _ref_subtree(sub, depth + 1)
    return _h(b"dvp/smt/node/v1\x00" + bitmap.to_bytes(2, "big") + children)


def ref_root(model: Mapping[bytes, bytes]) -> bytes:
    """Root of the key set, straight from the spec's definitions."""
    if not model:
        return bytes(32)
    return _ref_subtree(sorted(model.items()), 0)


def _ref_path(nibbles: list[int]) -> bytes:
    padded = nibbles + [0] * (len(nibbles) % 2)
    return bytes(padded[i] << 4 | padded[i + 1] for i in range(0, len(padded), 2))


def ref_nodes(store: MemoryNodeStore, version: int) -> dict[bytes, bytes]:
    """Every stored node reachable from version's root record, found by decoding node
    encodings as the spec describes (independent of ledger.smt's readers)."""
    out: dict[bytes, bytes] = {}
    root_key = version.to_bytes(8, "big") + b"\x00"
    enc = store.nodes[root_key]
    out[root_key] = enc

    def walk(enc: bytes, nibbles: list[int]) -> None:
        if enc[0] != 2:
            return
        bitmap = int.from_bytes(enc[1:3], "big")
        leafmap = int.from_bytes(enc[3:5], "big")
        present = [i for i in range(16) if bitmap >> i & 1]
        n = len(present)
        assert len(enc) == 5 + 40 * n and leafmap & ~bitmap == 0
        for j, child in enumerate(present):
            version8 = enc[5 + 32 * n + 8 * j : 5 + 32 * n + 8 * j + 8]
            path = nibbles + [child]
            nk = version8 + bytes([len(path)]) + _ref_path(path)
            child_enc = store.nodes[nk]
            assert child_enc[0] == (1 if leafmap >> child & 1 else 2)
            out[nk] = child_enc
            walk(child_enc, path)

    walk(enc, [])
    return out


# --------------------------------------------------------------------------- key pool


def _key(hex_prefix: str, seed: int) -> bytes:
    """A key starting with the given nibbles, the rest pseudo-random."""
    rest = _h(seed.to_bytes(4, "big")).hex()
    return bytes.fromhex((hex_prefix + rest)[:64])


# Keys chosen so that trees over subsets have every shape: spread-out keys, a family
# sharing 3 nibbles, one sharing 10, and two pairs sharing 63 nibbles (64-level paths).
POOL: list[bytes] = (
    [_key("", i) for i in range(8)]
    + [_key("abc", 100 + i) for i in range(4)]
    + [_key("5" * 10, 200 + i) for i in range(3)]
    + [bytes.fromhex("7" * 63 + d) for d in "0f"]
    + [bytes.fromhex("00" * 31 + d) for d in ("01", "02")]
)
# Absent keys that share prefixes with pool keys, so both non-membership kinds occur.
PROBES: list[bytes] = [
    _key("abc", 999),
    _key("ab", 998),
    _key("5" * 10, 997),
    _key("5" * 9, 996),
    bytes.fromhex("7" * 63 + "8"),
    bytes.fromhex("00" * 31 + "03"),
    _key("", 995),
    _key("d0", 994),  # the only pool key under "d" is df3f...: another key's leaf
    _key("40", 993),  # likewise under "4" (433e...)
]
OTHER_LEAF_PROBE = PROBES[-2]
ALL_KEYS = POOL + [k for k in PROBES if k not in POOL]

values = st.binary(max_size=40)
batches = st.dictionaries(st.sampled_from(POOL), st.none() | values, max_size=10)


def fresh_root(model: Mapping[bytes, bytes]) -> bytes:
    """The root of a brand-new tree built from ``model`` in one batch."""
    if not model:
        return EMPTY_ROOT
    return SparseMerkleTree(MemoryNodeStore()).update(None, 0, dict(model)).root


def mutations(raw: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Some single-byte mutations of ``raw`` (every position when count >= len)."""
    positions = range(len(raw)) if count >= len(raw) else rng.sample(range(len(raw)), count)
    out = []
    for i in positions:
        b = bytearray(raw)
        b[i] ^= rng.choice([0x01, 0x80, 0xFF, rng.randrange(1, 256)])
        out.append(bytes(b))
    return out


def rejected(raw: bytes, root: bytes, key: bytes, value: bytes | None) -> bool:
    """True iff the mutated encoding is refused by from_bytes or fails verification."""
    try:
        proof = Proof.from_bytes(raw)
    except ProofError:
        return True
    return not verify_proof(root, key, value, proof)


# --------------------------------------------------------------------------- stateful


class TreeMachine(RuleBasedStateMachine):
    """Random batches across versions against a dict model, with pruning."""

    @initialize()
    def setup(self) -> None:
        self.store = MemoryNodeStore()
        self.tree = SparseMerkleTree(self.store, cache_nodes=64)  # small: exercise misses
        self.models: dict[int, dict[bytes, bytes]] = {}
        self.roots: dict[int, bytes] = {}
        self.latest: int | None = None
        self.kinds: set[str] = set()

    @rule(changes=batches, gap=st.integers(1, 3))
    def apply(self, changes: dict[bytes, bytes | None], gap: int) -> None:
        base = self.latest
        version = 0 if base is None else base + gap
        result = self.tree.update(base, version, changes)
        model = dict(self.models[base]) if base is not None else {}
        for k, v in changes.items():
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
        assert result.root == ref_root(model)
        assert result.root == fresh_root(model)  # batching and order do not matter
        assert all(nk.startswith(version.to_bytes(8, "big")) for nk in result.new_nodes)
        self.store.apply(result)
        self.models[version] = model
        self.roots[version] = result.root
        self.latest = version

    @precondition(lambda self: len(self.models) > 1)
    @rule(data=st.data())
    def prune(self, data: st.DataObject) -> None:
        keep = data.draw(st.sampled_from(sorted(self.models)))
        self.store.prune(keep)
        for v in [v for v in self.models if v < keep]:
            del self.models[v]
            del self.roots[v]
            with pytest.raises(MissingNodeError):
                self.tree.root(v)

    @precondition(lambda self: self.models)
    @rule(data=st.data(), key=st.sampled_from(ALL_KEYS))
    def proofs(self, data: st.DataObject, key: bytes) -> None:
        version = data.draw(st.sampled_from(sorted(self.models)))
        model = self.models[version]
        root = self.roots[version]
        value = model.get(key)
        value2, proof = self.tree.get_with_proof(key, version)
        assert value2 == value
        assert proof == self.tree.prove(key, version)
        self.kinds.add(proof.terminal)
        assert verify_proof(root, key, value, proof)
        assert root_from_proof(key, value, proof) == root
        # the other claim fails
        assert not verify_proof(root, key, None if value is not None else b"x", proof)
        if value is not None:
            assert not verify_proof(root, key, value + b"\x00", proof)
        # any other root fails
        for other in set(self.roots.values()) - {root}:
            assert not verify_proof(other, key, value, proof)
        # encodings round-trip, and a mutated byte never yields an accepted proof
        raw = proof.to_bytes()
        assert Proof.from_bytes(raw) == proof
        assert Proof.from_json(json.dumps(proof.to_json())) == proof
        rng = random.Random(data.draw(st.integers(0, 2**32 - 1)))
        for bad in mutations(raw, rng, 12):
            assert rejected(bad, root, key, value)

    @invariant()
    def reads_match_model(self) -> None:
        for version, model in self.models.items():
            assert self.tree.root(version) == self.roots[version]
            for key in ALL_KEYS:
                assert self.tree.get(key, version) == model.get(key)
            assert dict(self.tree.items(version)) == model

    @invariant()
    def no_leaks_at_latest(self) -> None:
        # With only the latest version retained, the store holds exactly its nodes:
        # the stale lists are complete (nothing leaks) and sound (nothing needed goes).
        if self.latest is not None and list(self.models) == [self.latest]:
            assert set(self.store.nodes) == set(ref_nodes(self.store, self.latest))


TreeMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestTreeMachine = TreeMachine.TestCase


# --------------------------------------------------------------------------- shapes


def build(model: Mapping[bytes, bytes | None]) -> tuple[SparseMerkleTree, MemoryNodeStore, bytes]:
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store)
    result = tree.update(None, 1, dict(model))
    store.apply(result)
    return tree, store, result.root


def test_empty_tree() -> None:
    tree, store, root = build({})
    assert root == EMPTY_ROOT == tree.root(1) == bytes(32)
    assert store.nodes == {node_key(1, 0, bytes(32)): b"\x00"}
    proof = tree.prove(POOL[0], 1)
    assert proof.terminal == "empty" and proof.levels == ()
    assert verify_proof(EMPTY_ROOT, POOL[0], None, proof)
    assert not verify_proof(EMPTY_ROOT, POOL[0], b"", proof)
    assert tree.get(POOL[0], 1) is None
    assert list(tree.items(1)) == []


def test_single_key_root_is_the_leaf() -> None:
    key, value = POOL[0], b"v"
    tree, store, root = build({key: value})
    assert root == _h(b"dvp/smt/leaf/v1\x00" + key + _h(value)) == ref_root({key: value})
    assert store.nodes == {node_key(1, 0, key): b"\x01" + key + value}
    member = tree.prove(key, 1)
    assert member.terminal == "leaf" and member.levels == ()
    assert verify_proof(root, key, value, member)
    other = tree.prove(POOL[1], 1)
    assert other.terminal == "other_leaf" and other.leaf_key == key
    assert verify_proof(root, POOL[1], None, other)


def test_both_non_membership_kinds_and_deep_paths() -> None:
    model = {k: k[:3] for k in POOL}
    tree, _, root = build(model)
    assert root == ref_root(model)
    kinds: dict[str, list[int]] = {}
    for key in PROBES:
        proof = tree.prove(key, 1)
        assert verify_proof(root, key, None, proof)
        kinds.setdefault(proof.terminal, []).append(len(proof.levels))
    assert set(kinds) == {"empty", "other_leaf"}
    assert tree.prove(OTHER_LEAF_PROBE, 1).terminal == "other_leaf"
    # keys sharing 63 nibbles sit under a chain of single-child nodes: 64 levels
    deep = tree.prove(POOL[15], 1)
    assert len(deep.levels) == 64 and deep.terminal == "leaf"
    assert all(level.bitmap.bit_count() == 1 for level in deep.levels[1:63])
    assert verify_proof(root, POOL[15], model[POOL[15]], deep)
    assert tree.prove(bytes.fromhex("7" * 63 + "8"), 1).terminal == "empty"
    assert len(tree.prove(bytes.fromhex("7" * 63 + "8"), 1).levels) == 64


def test_leaf_key_longest_paths_and_collapse() -> None:
    """Deleting one of two keys that share 63 nibbles hoists the other to the top."""
    a, b = POOL[15], POOL[16]
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store)
    r0 = tree.update(None, 0, {a: b"a", b: b"b"})
    store.apply(r0)
    assert len(r0.new_nodes) == 64 + 2  # 64 internal (incl. root record) + 2 leaves
    r1 = tree.update(0, 1, {b: None})
    store.apply(r1)
    assert r1.root == ref_root({a: b"a"})
    assert r1.new_nodes == {node_key(1, 0, a): b"\x01" + a + b"a"}
    assert sorted(r1.stale) == sorted(r0.new_nodes)  # every old node is now stale
    store.prune(1)
    assert store.nodes == r1.new_nodes
    assert tree.get(a, 1) == b"a" and tree.get(b, 1) is None


def test_node_encoding_bytes() -> None:
    """Byte-level layout of root record, internal node, and leaves (docs/proofs-smt.md)."""
    k1 = bytes.fromhex("12" + "00" * 31)
    k2 = bytes.fromhex("1f" + "00" * 31)
    k3 = bytes.fromhex("a0" + "11" * 31)
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store)
    store.apply(tree.update(None, 5, {k1: b"one", k2: b"two"}))
    result = tree.update(5, 6, {k3: b"three"})
    v5, v6 = (5).to_bytes(8, "big"), (6).to_bytes(8, "big")
    h1 = _h(b"dvp/smt/leaf/v1\x00" + k1 + _h(b"one"))
    h2 = _h(b"dvp/smt/leaf/v1\x00" + k2 + _h(b"two"))
    h3 = _h(b"dvp/smt/leaf/v1\x00" + k3 + _h(b"three"))
    n1 = _h(b"dvp/smt/node/v1\x00" + bytes.fromhex("8004") + h1 + h2)  # children 2 and 15
    root = _h(b"dvp/smt/node/v1\x00" + bytes.fromhex("0402") + n1 + h3)  # children 1 and 10
    assert result.root == root == ref_root({k1: b"one", k2: b"two", k3: b"three"})
    assert result.new_nodes == {
        v6 + b"\x00": b"\x02" + bytes.fromhex("0402") + bytes.fromhex("0400") + n1 + h3 + v5 + v6,
        v6 + b"\x01" + b"\xa0": b"\x01" + k3 + b"three",
    }
    assert result.stale == [v5 + b"\x00"]  # only the old root record
    store.apply(result)
    assert store.nodes[v5 + b"\x01\x10"] == b"\x02\x80\x04\x80\x04" + h1 + h2 + v5 + v5
    assert store.nodes[v5 + b"\x02\x12"] == b"\x01" + k1 + b"one"
    assert node_key(6, 3, bytes.fromhex("abcdef" + "00" * 29)) == v6 + b"\x03\xab\xc0"


def test_no_change_batches_and_noops_write_only_a_root_record() -> None:
    model = {k: b"x" for k in POOL}
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store)
    r0 = tree.update(None, 0, model)
    store.apply(r0)
    noops: list[dict[bytes, bytes | None]] = [
        {},
        {POOL[0]: b"x"},
        {PROBES[0]: None, PROBES[4]: None},
        {POOL[3]: b"x", PROBES[1]: None},
    ]
    for version, changes in enumerate(noops, start=1):
        result = tree.update(version - 1, version, changes)
        assert result.root == r0.root
        assert result.new_nodes == {
            node_key(version, 0, bytes(32)): store.nodes[node_key(version - 1, 0, bytes(32))]
        }
        assert result.stale == [node_key(version - 1, 0, bytes(32))]
        store.apply(result)
        assert tree.root(version) == r0.root
        assert tree.get(POOL[0], version) == b"x"
    store.prune(4)
    assert set(store.nodes) == set(ref_nodes(store, 4))


def test_batching_and_order_do_not_matter() -> None:
    rng = random.Random(7)
    keys = [_h(i.to_bytes(4, "big")) for i in range(300)] + POOL
    model = {k: _h(k)[: rng.randrange(0, 20)] for k in keys}
    one = fresh_root(model)
    assert one == ref_root(model)
    for trial in range(3):
        store = MemoryNodeStore()
        tree = SparseMerkleTree(store)
        order = list(model)
        rng.shuffle(order)
        version: int | None = None
        i = 0
        while i < len(order):
            n = rng.randrange(1, 60)
            changes: dict[bytes, bytes | None] = {k: model[k] for k in order[i : i + n]}
            # sprinkle in junk that is later deleted, and deletions of absent keys
            changes[_h(b"junk" + bytes([trial, i % 256]))] = b"junk"
            changes[_h(b"absent" + bytes([i % 256]))] = None
            nv = 0 if version is None else version + 1
            result = tree.update(version, nv, changes)
            store.apply(result)
            version = nv
            i += n
        assert version is not None
        junk = {k: None for k, _ in tree.items(version) if k not in model}
        result = tree.update(version, version + 1, junk)
        store.apply(result)
        assert result.root == one
        store.prune(version + 1)
        assert set(store.nodes) == set(ref_nodes(store, version + 1))


def test_pruning_keeps_newer_versions_whole() -> None:
    rng = random.Random(3)
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store, cache_nodes=32)
    models: dict[int, dict[bytes, bytes]] = {}
    model: dict[bytes, bytes] = {}
    keys = [_h(i.to_bytes(2, "big")) for i in range(120)] + POOL
    version: int | None = None
    for nv in range(30):
        changes: dict[bytes, bytes | None] = {}
        for k in rng.sample(keys, 15):
            changes[k] = None if rng.random() < 0.35 else rng.randbytes(rng.randrange(0, 30))
        result = tree.update(version, nv, changes)
        store.apply(result)
        for k, v in changes.items():
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
        models[nv] = dict(model)
        version = nv
    for keep in (10, 20, 29):
        store.prune(keep)
        tree.clear_cache()
        for ver in range(30):
            if ver < keep:
                with pytest.raises(MissingNodeError):
                    tree.root(ver)
                continue
            root = tree.root(ver)
            assert root == ref_root(models[ver])
            assert dict(tree.items(ver)) == models[ver]
            for k in keys[:40] + ALL_KEYS:
                value, proof = tree.get_with_proof(k, ver)
                assert value == models[ver].get(k)
                assert verify_proof(root, k, value, proof)
    assert set(store.nodes) == set(ref_nodes(store, 29))


def test_speculative_overlay_and_shared_cache() -> None:
    """Blocks h+1 and h+2 executed on top of uncommitted h through an OverlayReader."""
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store)
    store.apply(tree.update(None, 0, {k: b"0" for k in POOL[:10]}))
    overlay = OverlayReader(store)
    spec = tree.with_reader(overlay)
    r1 = spec.update(0, 1, {POOL[0]: None, POOL[12]: b"1"})
    overlay.push(r1.new_nodes)
    r2 = spec.update(1, 2, {POOL[13]: b"2", POOL[1]: b"2"})
    overlay.push(r2.new_nodes)
    assert spec.get(POOL[13], 2) == b"2" and spec.get(POOL[0], 2) is None
    with pytest.raises(MissingNodeError):
        tree.root(1)  # not committed yet
    # a round change replaces block 1: re-execute it differently, drop block 2
    overlay.pending = []
    r1b = spec.update(0, 1, {POOL[2]: b"1b"})
    overlay.push(r1b.new_nodes)
    assert spec.get(POOL[2], 1) == b"1b" and spec.get(POOL[0], 1) == b"0"
    store.apply(r1b)
    overlay.pending = []
    fresh = SparseMerkleTree(store)
    assert fresh.root(1) == r1b.root == ref_root({**{k: b"0" for k in POOL[:10]}, POOL[2]: b"1b"})
    assert dict(fresh.items(1)) == dict(tree.items(1))
    r2b = tree.update(1, 2, {POOL[13]: b"2"})
    store.apply(r2b)
    assert set(ref_nodes(store, 2)) <= set(store.nodes)


def test_update_argument_checks() -> None:
    tree = SparseMerkleTree(MemoryNodeStore())
    with pytest.raises(ValueError):
        tree.update(None, 0, {b"short": b"x"})
    with pytest.raises(ValueError):
        tree.update(None, 0, {POOL[0]: b"x", "text": b"y"})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        tree.update(None, 0, {POOL[0]: "text"})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        tree.update(3, 3, {})
    with pytest.raises(ValueError):
        tree.update(None, -1, {})
    with pytest.raises(MissingNodeError):
        tree.update(7, 8, {POOL[0]: b"x"})
    with pytest.raises(MissingNodeError):
        tree.get(POOL[0], 0)
    with pytest.raises(ValueError):
        tree.get(b"short", 0)


def test_large_batches_on_a_large_tree() -> None:
    """Batches big enough that update groups changes by bisecting at several levels,
    mixing inserts, overwrites, deletions and no-ops, match the reference."""
    rng = random.Random(5)
    keys = [_h(b"big" + i.to_bytes(4, "big")) for i in range(1200)]
    model = {k: k[:4] for k in keys[:600]}
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store)
    store.apply(tree.update(None, 0, model))
    for version in (1, 2):
        changes: dict[bytes, bytes | None] = {}
        for k in rng.sample(keys, 500):
            roll = rng.random()
            # deletions (some of absent keys), no-ops and overwrites, inserts
            if roll < 0.3:
                changes[k] = None
            else:
                changes[k] = model.get(k, b"") if roll < 0.4 else b"v%d" % version
        result = tree.update(version - 1, version, changes)
        store.apply(result)
        for k, v in changes.items():
            if v is None:
                model.pop(k, None)
            else:
                model[k] = v
        assert result.root == ref_root(model)
        store.prune(version)
        assert set(store.nodes) == set(ref_nodes(store, version))
    assert dict(tree.items(2)) == model


def test_update_refuses_corrupt_or_missing_nodes() -> None:
    """Storage is trusted but its structure is still checked on the update path: a
    damaged node gives NodeError or MissingNodeError, never a wrong root or another
    exception."""
    model = {k: b"v" for k in POOL}
    _, store, _ = build(model)
    nodes = dict(store.nodes)
    inner = sorted(nk for nk, enc in nodes.items() if enc[0] == 2 and nk[8] >= 1)
    leaves = sorted(nk for nk, enc in nodes.items() if enc[0] == 1 and nk[8] >= 1)
    assert inner and leaves

    def key_under(nk: bytes) -> bytes:
        """A pool key whose path goes through node key nk."""
        depth = nk[8]
        return next(k for k in POOL if node_key(1, depth, k) == nk)

    node_damages: list[tuple[bytes | None, type[Exception]]] = []
    for nk in inner[:3] + leaves[:3]:
        enc = nodes[nk]
        if enc[0] == 2:
            node_damages = [
                (None, MissingNodeError),  # gone
                (enc[:-1], NodeError),  # truncated
                (b"\x01" + enc[1:], NodeError),  # a leaf tag where a node is due
                (enc[:3] + b"\xff\xff" + enc[5:], NodeError),  # leafmap beyond bitmap
            ]
        else:
            node_damages = [
                (None, MissingNodeError),
                (b"\x02" + enc[1:], NodeError),  # a node tag where a leaf is due
                (enc[:20], NodeError),  # too short for a leaf
            ]
        k = key_under(nk)
        for damaged, error in node_damages:
            bad = dict(nodes)
            if damaged is None:
                del bad[nk]
            else:
                bad[nk] = damaged
            for changes in ({k: b"new"}, {k: b"new", PROBES[0]: b"p", PROBES[6]: b"q"}):
                tree = SparseMerkleTree(MemoryNodeStore(dict(bad)))  # cold cache
                with pytest.raises(error):
                    tree.update(1, 2, changes)


# --------------------------------------------------------------------------- must_be_new


def _based(model: Mapping[bytes, bytes]) -> tuple[SparseMerkleTree, MemoryNodeStore]:
    """A tree whose version 1 holds ``model`` (an empty root record if it is empty)."""
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store, cache_nodes=64)
    store.apply(tree.update(None, 1, dict(model)))
    return tree, store


def _same_result(a: UpdateResult, b: UpdateResult) -> bool:
    return (a.root, a.new_nodes, sorted(a.stale), a.version) == (
        b.root,
        b.new_nodes,
        sorted(b.stale),
        b.version,
    )


def test_must_be_new_refuses_existing_keys_and_names_them() -> None:
    model = {k: b"v" + k[:1] for k in POOL}
    tree, store = _based(model)
    before = dict(store.nodes)
    changes: dict[bytes, bytes | None] = {POOL[3]: b"again", PROBES[0]: b"new", POOL[12]: b"again"}
    with pytest.raises(KeyExistsError) as info:
        tree.update(1, 2, changes, must_be_new=[POOL[12], PROBES[0], POOL[3]])
    assert info.value.keys == tuple(sorted([POOL[3], POOL[12]]))
    assert isinstance(info.value, ValueError)
    assert POOL[3].hex() in str(info.value)
    assert store.nodes == before  # nothing was written
    # present whatever the change does to it: same value (a no-op) or deletion
    for change in (model[POOL[5]], None):
        with pytest.raises(KeyExistsError) as info:
            tree.update(1, 2, {POOL[5]: change}, must_be_new={POOL[5]})
        assert info.value.keys == (POOL[5],)
    # the tree is still usable afterwards, and the same update without the demand works
    result = tree.update(1, 2, changes)
    assert result.root == ref_root(
        {**model, POOL[3]: b"again", PROBES[0]: b"new", POOL[12]: b"again"}
    )


def test_must_be_new_absent_keys_give_the_plain_result() -> None:
    model = {k: b"v" for k in POOL[:12]}
    # absent keys of every kind: an empty slot at the top, a split of a leaf sharing 2
    # and 3 nibbles with it, a 63-nibble split, and an empty slot deep down
    new = [PROBES[0], PROBES[1], PROBES[6], POOL[15], PROBES[4], POOL[13]]
    changes: dict[bytes, bytes | None] = {k: b"n" + k[:2] for k in new}
    changes[POOL[2]] = b"changed"  # existing, not in must_be_new: updated normally
    changes[POOL[4]] = None  # existing, not in must_be_new: deleted normally
    changes[PROBES[7]] = None  # absent and deleted: may be required new
    plain = _based(model)[0].update(1, 2, changes)
    checked = _based(model)[0].update(1, 2, changes, must_be_new=new + [PROBES[7]])
    assert _same_result(plain, checked)
    expect = {**model, **{k: b"n" + k[:2] for k in new}, POOL[2]: b"changed"}
    del expect[POOL[4]]
    assert checked.root == ref_root(expect)
    assert plain.root == _based(model)[0].update(1, 2, changes, must_be_new=()).root


def test_must_be_new_splitting_leaves_with_shared_prefixes() -> None:
    a, b = POOL[15], POOL[16]  # share 63 nibbles
    tree, _ = _based({a: b"a"})  # the root is the leaf a
    result = tree.update(1, 2, {b: b"b"}, must_be_new=[b])
    assert result.root == ref_root({a: b"a", b: b"b"})
    with pytest.raises(KeyExistsError) as info:
        tree.update(1, 2, {b: b"b", a: b"a2"}, must_be_new=[b, a])
    assert info.value.keys == (a,)
    # "abc" family: a new key splitting one leaf three nibbles down, alone and batched
    tree, _ = _based({POOL[8]: b"x", POOL[0]: b"y"})
    for batch in ({PROBES[0]: b"p"}, {PROBES[0]: b"p", PROBES[1]: b"q"}):
        result = tree.update(1, 2, batch, must_be_new=list(batch))
        assert result.root == ref_root({POOL[8]: b"x", POOL[0]: b"y", **batch})
        with pytest.raises(KeyExistsError) as info:
            tree.update(1, 2, {**batch, POOL[8]: b"x"}, must_be_new=[*batch, POOL[8]])
        assert info.value.keys == (POOL[8],)


def test_must_be_new_root_leaf_empty_base_and_no_base() -> None:
    key = POOL[0]
    tree, _ = _based({key: b"v"})  # root record is the leaf
    with pytest.raises(KeyExistsError) as info:
        tree.update(1, 2, {key: b"w"}, must_be_new=[key])
    assert info.value.keys == (key,)
    with pytest.raises(KeyExistsError):
        tree.update(1, 2, {key: b"w", POOL[1]: b"x"}, must_be_new=[key, POOL[1]])
    ok = tree.update(1, 2, {key: b"w", POOL[1]: b"x"}, must_be_new=[POOL[1]])
    assert ok.root == ref_root({key: b"w", POOL[1]: b"x"})
    batch = {k: b"v" for k in POOL[:5]}
    tree, _ = _based({})  # version 1 is the empty tree
    assert tree.update(1, 2, batch, must_be_new=batch).root == ref_root(batch)
    fresh = SparseMerkleTree(MemoryNodeStore())
    assert fresh.update(None, 0, batch, must_be_new=list(batch)).root == ref_root(batch)
    assert fresh.update(None, 0, {key: b"v"}, must_be_new=[key]).root == ref_root({key: b"v"})


def test_must_be_new_keys_must_be_changed_keys() -> None:
    tree, _ = _based({POOL[0]: b"v"})
    with pytest.raises(ValueError) as info:
        tree.update(1, 2, {POOL[1]: b"x"}, must_be_new=[POOL[2]])
    assert not isinstance(info.value, KeyExistsError)
    with pytest.raises(ValueError):
        tree.update(1, 2, {}, must_be_new=[POOL[0]])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.dictionaries(st.sampled_from(POOL), values, max_size=12),
    changes=st.dictionaries(st.sampled_from(ALL_KEYS), st.none() | values, max_size=10),
    data=st.data(),
)
def test_must_be_new_against_model(
    base: dict[bytes, bytes], changes: dict[bytes, bytes | None], data: st.DataObject
) -> None:
    required = data.draw(st.sets(st.sampled_from(sorted(changes))) if changes else st.just(set()))
    base_version = data.draw(st.sampled_from([None, 1])) if not base else 1
    if base_version is None:
        tree, model = SparseMerkleTree(MemoryNodeStore()), {}
    else:
        tree, _ = _based(base)
        model = dict(base)
    new_version = 2
    present = sorted(k for k in required if k in model)
    plain = tree.update(base_version, new_version, changes)
    if present:
        with pytest.raises(KeyExistsError) as info:
            tree.update(base_version, new_version, changes, must_be_new=required)
        assert info.value.keys == tuple(present)
        return
    checked = tree.update(base_version, new_version, changes, must_be_new=required)
    assert _same_result(plain, checked)
    for k, v in changes.items():
        if v is None:
            model.pop(k, None)
        else:
            model[k] = v
    assert checked.root == ref_root(model)


# --------------------------------------------------------------------------- proof format


def _sample_proofs() -> tuple[bytes, list[tuple[bytes, bytes | None, Proof]]]:
    model = {k: k[:5] for k in POOL}
    tree, _, root = build(model)
    return root, [(k, model.get(k), tree.prove(k, 1)) for k in ALL_KEYS]


def test_every_single_byte_mutation_is_rejected() -> None:
    root, cases = _sample_proofs()
    rng = random.Random(11)
    for key, value, proof in cases[:6] + cases[-7:]:
        raw = proof.to_bytes()
        for bad in mutations(raw, rng, len(raw)):
            assert rejected(bad, root, key, value)


def test_from_bytes_is_strict() -> None:
    root, cases = _sample_proofs()
    key, value, proof = cases[9]
    raw = proof.to_bytes()
    obj = msgpack.unpackb(raw)
    assert Proof.from_bytes(raw) == proof
    bad_inputs = [
        raw + b"\x00",  # trailing byte
        raw[:-1],  # truncated
        b"",
        msgpack.packb(obj + [0]),  # unknown field
        msgpack.packb(obj[:3]),  # missing field
        msgpack.packb({"terminal": 0}),  # a map
        msgpack.packb([9] + obj[1:]),  # unknown terminal
        msgpack.packb([True] + obj[1:]),  # bool, not int
        msgpack.packb(obj[:2] + [obj[2].hex(), obj[3]]),  # str instead of bin
        msgpack.packb(obj[:2] + [obj[2] + b"\x00", obj[3]]),  # 33-byte key
        # a sibling too many; a level with a third field
        msgpack.packb([obj[0], [[lvl[0], lvl[1] + lvl[1][:1]] for lvl in obj[1]]] + obj[2:]),
        msgpack.packb([obj[0], [[lvl[0], lvl[1], 0] for lvl in obj[1]]] + obj[2:]),
        msgpack.packb([obj[0], [[0, []]]] + obj[2:]),  # zero bitmap
        msgpack.packb([obj[0], [[70000, []]]] + obj[2:]),  # bitmap out of range
        msgpack.packb([obj[0], [[None, []]]] + obj[2:]),  # nil
        msgpack.packb([1, obj[1], obj[2], obj[3]]),  # empty terminal with a leaf
        msgpack.packb([0, obj[1], b"", b""]),  # leaf terminal without one
        b"\xdc\x00\x04" + raw[1:],  # array16 where fixarray fits: non-canonical
        b"\x94" + b"\xcc\x00" + raw[2:],  # uint8 0 where fixint fits: non-canonical
        b"\x91" * 100_000,  # oversize
        b"\xc1",  # never-used msgpack byte
    ]
    for bad in bad_inputs:
        with pytest.raises(ProofError):
            Proof.from_bytes(bad)
    with pytest.raises(ProofError):
        Proof.from_bytes("text")  # type: ignore[arg-type]
    assert issubclass(ProofError, ValueError)
    assert MAX_PROOF_BYTES < 40_000


def test_from_json_is_strict() -> None:
    _, cases = _sample_proofs()
    key, value, proof = cases[12]
    good = proof.to_json()
    assert Proof.from_json(good) == proof
    assert Proof.from_json(json.dumps(good)) == proof
    assert Proof.from_json(json.dumps(good).encode()) == proof
    lvl = good["levels"][0]
    bad_docs: list[Any] = [
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "leaf_key"},
        {**good, "terminal": "LEAF"},
        {**good, "leaf_key": good["leaf_key"].upper()},
        {**good, "leaf_key": " " + good["leaf_key"][1:]},
        {**good, "leaf_key": good["leaf_key"][:-2]},
        {**good, "levels": [{**lvl, "bitmap": True}] + good["levels"][1:]},
        {**good, "levels": [{**lvl, "bitmap": str(lvl["bitmap"])}] + good["levels"][1:]},
        {**good, "levels": [{**lvl, "x": 0}] + good["levels"][1:]},
        {**good, "levels": [[lvl["bitmap"], lvl["siblings"]]] + good["levels"][1:]},
        {**good, "levels": [{**lvl, "siblings": lvl["siblings"][1:]}] + good["levels"][1:]},
        {**good, "levels": "none"},
        [good],
        "not json",
        '{"terminal": "leaf", "terminal": "leaf"}',
        '{"terminal": NaN}',
    ]
    for bad in bad_docs:
        with pytest.raises(ProofError):
            Proof.from_json(bad)


def test_proof_constructor_checks_structure() -> None:
    h = bytes(32)
    with pytest.raises(ProofError):
        Proof("member", ())
    with pytest.raises(ProofError):
        Proof("empty", (), h, h)
    with pytest.raises(ProofError):
        Proof("leaf", ())
    with pytest.raises(ProofError):
        Proof("leaf", [ProofLevel(3, (h,))], h, h)  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        Proof("leaf", (ProofLevel(1, ()),), h, h)  # a lone leaf would be hoisted
    with pytest.raises(ProofError):
        Proof("leaf", (ProofLevel(3, (h, h)),), h, h)  # one sibling too many
    with pytest.raises(ProofError):
        Proof("empty", (ProofLevel(3, (h,)),))  # empty slot: all children are siblings
    with pytest.raises(ProofError):
        Proof("leaf", (ProofLevel(1, ()),) * 65, h, h)
    Proof("empty", (ProofLevel(3, (h, h)),))
    Proof("leaf", (ProofLevel(1, ()), ProofLevel(3, (h,))), h, h)


def test_verifier_checks_claims_against_the_terminal() -> None:
    model = {k: b"v" for k in POOL}
    tree, _, root = build(model)
    member = tree.prove(POOL[9], 1)
    # right proof, wrong claims
    assert not verify_proof(root, POOL[9], None, member)
    assert not verify_proof(root, POOL[10], b"v", member)
    with pytest.raises(ProofError):
        root_from_proof(POOL[9], None, member)
    absent = tree.prove(PROBES[0], 1)
    assert absent.terminal == "empty"
    assert not verify_proof(root, PROBES[0], b"v", absent)
    assert not verify_proof(root, PROBES[1], None, absent)  # another key's path
    other = tree.prove(OTHER_LEAF_PROBE, 1)
    assert other.terminal == "other_leaf"
    assert not verify_proof(root, other.leaf_key, None, other)  # type: ignore[arg-type]
    # the other leaf moved off the key's path: refused even though hashes would match
    off_path = next(k for k in PROBES if k[:1] != other.leaf_key[:1])  # type: ignore[index]
    assert not verify_proof(root, off_path, None, other)
    # a membership proof dressed as non-membership
    dressed = Proof("other_leaf", member.levels, member.leaf_key, member.leaf_value_hash)
    assert not verify_proof(root, POOL[9], None, dressed)


def _proof_pool() -> list[Proof]:
    return [p for _, _, p in _sample_proofs()[1]]


@settings(max_examples=200, deadline=None)
@given(
    root=st.binary(min_size=0, max_size=40),
    key=st.one_of(
        st.binary(max_size=40),
        st.sampled_from(ALL_KEYS),
        st.text(max_size=3),
        st.integers(),
        st.none(),
    ),
    value=st.one_of(st.binary(max_size=8), st.none(), st.integers()),
    proof=st.one_of(
        st.none(), st.binary(max_size=50), st.integers(), st.sampled_from(_proof_pool())
    ),
)
def test_verify_never_raises(root: Any, key: Any, value: Any, proof: Any) -> None:
    assert verify_proof(root, key, value, proof) in (True, False)


def test_verify_survives_forced_garbage() -> None:
    root, cases = _sample_proofs()
    key, value, proof = cases[0]
    for field, junk in [
        ("levels", ((1, None),)),
        ("levels", None),
        ("terminal", None),
        ("leaf_key", 5),
        ("leaf_value_hash", None),
    ]:
        bad = Proof(proof.terminal, proof.levels, proof.leaf_key, proof.leaf_value_hash)
        object.__setattr__(bad, field, junk)
        assert verify_proof(root, key, value, bad) is False
    # an absent key's proof with its terminal forced to an unknown kind
    key, value, proof = next(c for c in cases if c[2].terminal == "empty" and c[2].levels)
    assert verify_proof(root, key, None, proof)
    object.__setattr__(proof, "terminal", "?")
    assert verify_proof(root, key, None, proof) is False


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_from_bytes_raises_only_proof_error(data: bytes) -> None:
    try:
        proof = Proof.from_bytes(data)
    except ProofError:
        return
    assert proof.to_bytes() == data


# --------------------------------------------------------------------------- vectors


def vector_keys() -> list[tuple[bytes, bytes]]:
    """Six entries; two share the 3-nibble prefix "abc"; one is alone under "5"."""
    return [
        (bytes.fromhex("abc1" + "11" * 30), b"alpha"),
        (bytes.fromhex("abc7" + "22" * 30), b"beta"),
        (bytes.fromhex("5" + "3" * 63), b"gamma"),
        (bytes.fromhex("02" + "44" * 31), b""),
        (bytes.fromhex("e8" + "55" * 31), b"\x00\x01\x02"),
        (bytes.fromhex("0f" + "66" * 31), b"zeta" * 10),
    ]


def build_vectors() -> dict[str, Any]:
    entries = vector_keys()
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store)
    # Two versions so that child references carry different versions.
    store.apply(tree.update(None, 1, dict(entries[:4])))
    result = tree.update(1, 2, dict(entries[4:]))
    store.apply(result)
    root = result.root
    model = dict(entries)
    assert root == ref_root(model)

    def case(
        name: str, key: bytes, value: bytes | None, proof: Proof, valid: bool, against: bytes = root
    ) -> dict[str, Any]:
        assert verify_proof(against, key, value, proof) == valid, name
        return {
            "name": name,
            "root": against.hex(),
            "key": key.hex(),
            "value": None if value is None else value.hex(),
            "valid": valid,
            "proof": proof.to_json(),
            "proof_msgpack": proof.to_bytes().hex(),
        }

    absent_empty = bytes.fromhex("abc3" + "77" * 30)  # slot 3 under node "abc" is empty
    absent_other = bytes.fromhex("5" + "8" * 63)  # the leaf under "5" is another key's
    absent_top = bytes.fromhex("c0" + "99" * 31)  # slot c of the root is empty
    p_alpha = tree.prove(entries[0][0], 2)
    p_gamma = tree.prove(entries[2][0], 2)
    p_empty = tree.prove(absent_empty, 2)
    p_other = tree.prove(absent_other, 2)
    p_top = tree.prove(absent_top, 2)
    assert (p_alpha.terminal, len(p_alpha.levels)) == ("leaf", 4)
    assert (p_empty.terminal, p_other.terminal, p_top.terminal) == ("empty", "other_leaf", "empty")

    lvl0 = p_alpha.levels[0]
    flipped = bytes([lvl0.siblings[0][0] ^ 1]) + lvl0.siblings[0][1:]
    tampered = Proof(
        p_alpha.terminal,
        (ProofLevel(lvl0.bitmap, (flipped,) + lvl0.siblings[1:]),) + p_alpha.levels[1:],
        p_alpha.leaf_key,
        p_alpha.leaf_value_hash,
    )
    dressed = Proof("other_leaf", p_gamma.levels, p_gamma.leaf_key, p_gamma.leaf_value_hash)
    cases = [
        case(
            "member: deep leaf under the shared prefix abc",
            entries[0][0],
            entries[0][1],
            p_alpha,
            True,
        ),
        case("member: leaf alone under nibble 5", entries[2][0], entries[2][1], p_gamma, True),
        case(
            "member: empty value", entries[3][0], entries[3][1], tree.prove(entries[3][0], 2), True
        ),
        case("absent: empty slot at depth 3", absent_empty, None, p_empty, True),
        case("absent: another key's leaf on the path", absent_other, None, p_other, True),
        case("absent: empty slot at the root", absent_top, None, p_top, True),
        case("absent: empty tree", absent_top, None, Proof("empty", ()), True, against=EMPTY_ROOT),
        case("invalid: one sibling bit flipped", entries[0][0], entries[0][1], tampered, False),
        case("invalid: wrong value", entries[0][0], b"alphA", p_alpha, False),
        case(
            "invalid: membership proof used to claim absence", entries[2][0], None, p_gamma, False
        ),
        case("invalid: own leaf passed off as another key's", entries[2][0], None, dressed, False),
        case(
            "invalid: non-membership proof for another key's path", absent_top, None, p_empty, False
        ),
        case(
            "invalid: proof against an older root",
            entries[0][0],
            entries[0][1],
            p_alpha,
            False,
            against=tree.root(1),
        ),
    ]
    nodes = ref_nodes(store, 2)
    return {
        "description": "dvp state tree (ledger/smt.py) test vectors; see docs/proofs-smt.md. "
        "Tree at version 2 = version 1 (first four entries) + the last two. Every case: "
        "Proof.from_json(proof) (equivalently from_bytes(proof_msgpack)) verified against "
        "root, key and value (null = claimed absent) must give `valid`.",
        "leaf_tag": b"dvp/smt/leaf/v1\x00".hex(),
        "node_tag": b"dvp/smt/node/v1\x00".hex(),
        "empty_root": EMPTY_ROOT.hex(),
        "entries": [
            {
                "key": k.hex(),
                "value": v.hex(),
                "value_hash": _h(v).hex(),
                "leaf_hash": _h(b"dvp/smt/leaf/v1\x00" + k + _h(v)).hex(),
            }
            for k, v in entries
        ],
        "version": 2,
        "root": root.hex(),
        "nodes": [{"node_key": nk.hex(), "node": enc.hex()} for nk, enc in sorted(nodes.items())],
        "proofs": cases,
    }


def render_vectors() -> str:
    return json.dumps(build_vectors(), indent=1) + "\n"


def test_vectors_are_current() -> None:
    assert VECTORS.read_text() == render_vectors(), (
        "tests/vectors/smt.json is stale; regenerate with: python -m tests.ledger.test_smt"
    )


def test_vectors_verify() -> None:
    doc = json.loads(VECTORS.read_text())
    for c in doc["proofs"]:
        proof = Proof.from_json(c["proof"])
        assert Proof.from_bytes(bytes.fromhex(c["proof_msgpack"])) == proof
        value = None if c["value"] is None else bytes.fromhex(c["value"])
        got = verify_proof(bytes.fromhex(c["root"]), bytes.fromhex(c["key"]), value, proof)
        assert got == c["valid"], c["name"]


def test_update_result_shape() -> None:
    result = SparseMerkleTree(MemoryNodeStore()).update(None, 0, {POOL[0]: b"x"})
    assert isinstance(result, UpdateResult)
    assert result.version == 0 and result.stale == []
    assert isinstance(result.new_nodes, dict)


if __name__ == "__main__":
    VECTORS.write_text(render_vectors())
    print(f"wrote {VECTORS}")
