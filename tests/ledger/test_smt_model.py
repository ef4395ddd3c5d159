"""The state tree (ledger/smt.py) as a hypothesis state machine against the reference.

Random batches, versions, prunes and proofs; after every step the tree's roots, stored
nodes and proofs must match the independent reference in tests/ledger/smt_support.py.
"""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ledger.smt import (
    MemoryNodeStore,
    MissingNodeError,
    Proof,
    SparseMerkleTree,
    root_from_proof,
    verify_proof,
)
from tests.ledger.smt_support import (
    ALL_KEYS,
    batches,
    fresh_root,
    mutations,
    ref_nodes,
    ref_root,
    rejected,
)

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
