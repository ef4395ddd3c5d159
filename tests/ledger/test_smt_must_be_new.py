"""``SparseMerkleTree.update(..., must_be_new=...)``: keys that must be absent at the base.

An existing key is refused with every such key named and nothing produced; absent keys
give exactly the plain update's result.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.smt import (
    KeyExistsError,
    MemoryNodeStore,
    SparseMerkleTree,
    UpdateResult,
)
from tests.ledger.smt_support import (
    ALL_KEYS,
    POOL,
    PROBES,
    ref_root,
    values,
)

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
