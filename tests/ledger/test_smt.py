"""Tests of the state tree (ledger/smt.py): shapes, encodings, batching, pruning, overlays.

The tree is checked against an independent reference of the spec in docs/proofs-smt.md
(tests/ledger/smt_support.py). Its other topics: tests/ledger/test_smt_model.py (a
stateful model), test_smt_must_be_new.py, test_smt_proof_format.py (proofs).
tests/vectors/smt.json is regenerated here and compared byte for byte; regenerate it after
an intended format change with ``python -m tests.ledger.test_smt``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from ledger.smt import (
    EMPTY_ROOT,
    MemoryNodeStore,
    MissingNodeError,
    NodeError,
    OverlayReader,
    Proof,
    ProofLevel,
    SparseMerkleTree,
    UpdateResult,
    node_key,
    verify_proof,
)
from tests.ledger.smt_support import (
    ALL_KEYS,
    OTHER_LEAF_PROBE,
    POOL,
    PROBES,
    _h,
    build,
    fresh_root,
    ref_nodes,
    ref_root,
)

VECTORS = Path(__file__).parent.parent / "vectors" / "smt.json"


# --------------------------------------------------------------------------- shapes


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
