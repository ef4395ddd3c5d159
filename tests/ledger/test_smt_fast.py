"""The C hot loop of the state tree (ledger/_smt_fast.c) against the Python code it
renders (ledger/smt_update_one.py, its definition; the node format both read and write is
ledger/smt_node.py): the same roots, new nodes, stale keys, "already present" findings and
node-cache contents, batch after batch."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger.smt_update_one as update_one
from ledger.smt import KeyExistsError, MemoryNodeStore, SparseMerkleTree

# `pip install -e .` builds the extension; without it the node still runs (pure Python,
# as with DVP_PURE_PYTHON=1), but this suite is meant to check it, so it must be there.
pytestmark = pytest.mark.skipif(
    bool(os.environ.get("DVP_PURE_PYTHON")), reason="DVP_PURE_PYTHON is set: the C path is off"
)


def test_the_c_extension_is_built() -> None:
    assert update_one._fast is not None, (
        "ledger/_smt_fast.c is not built: pip install -e . builds it (a C compiler and "
        "OpenSSL's headers, libssl-dev, are needed)"
    )


@contextmanager
def pure_python() -> Iterator[None]:
    fast = update_one._fast
    update_one._fast = None
    try:
        yield
    finally:
        update_one._fast = fast


# Keys crowded into a few prefixes, so batches meet every shape: empty slots, leaves of
# other keys (split on the next nibble or further down), new values, deletions.
prefixes = st.sampled_from([b"", b"\x00", b"\x00\x00", b"\x5a", b"\x5a\xa5\x00"])
keys = st.builds(
    lambda p, r: (p + hashlib.sha256(r).digest())[:32], prefixes, st.binary(min_size=1, max_size=3)
)
values = st.one_of(st.none(), st.binary(min_size=0, max_size=40))
batches = st.lists(st.dictionaries(keys, values, max_size=24), min_size=1, max_size=8)


def _run(
    batches_: list[dict[bytes, bytes | None]], must_be_new_every: int
) -> list[tuple[object, ...]]:
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store, cache_nodes=64)
    out: list[tuple[object, ...]] = []
    base: int | None = None
    for version, changes in enumerate(batches_):
        new = [
            k
            for i, k in enumerate(sorted(changes))
            if changes[k] is not None and i % must_be_new_every == 0
        ]
        try:
            res = tree.update(base, version, changes, must_be_new=new)
        except KeyExistsError as exc:
            out.append(("exists", sorted(exc.keys)))
            res = tree.update(base, version, changes)
        store.apply(res)
        out.append((res.root, dict(res.new_nodes), list(res.stale), list(tree._cache.items())))
        base = version
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches, st.sampled_from([1, 3, 1000]))
def test_c_and_python_agree(batches_: list[dict[bytes, bytes | None]], every: int) -> None:
    fast = _run(batches_, every)
    with pure_python():
        slow = _run(batches_, every)
    assert fast == slow


def test_c_agrees_at_scale() -> None:
    # A deeper tree (a few thousand keys, batches of new keys and new values) whose
    # lower levels are reached through the cache and through reads, as in a node.
    def batches_() -> list[dict[bytes, bytes | None]]:
        rnd = hashlib.sha256(b"seed").digest()
        out: list[dict[bytes, bytes | None]] = [{}]
        for b in range(12):
            batch: dict[bytes, bytes | None] = {}
            for _ in range(400):
                rnd = hashlib.sha256(rnd).digest()
                batch[rnd] = rnd[:20]
            if b:  # new values and deletions of keys of the previous batch
                for i, k in enumerate(list(out[-1])[:60]):
                    batch[k] = None if i % 3 == 0 else k[:7]
            out.append(batch)
        return out

    fast = _run(batches_(), 7)
    with pure_python():
        slow = _run(batches_(), 7)
    assert fast == slow


def test_the_c_path_is_taken_and_can_be_turned_off() -> None:
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store)
    store.apply(
        tree.update(None, 0, {hashlib.sha256(b"%d" % i).digest(): b"v" for i in range(300)})
    )
    calls = []
    real = update_one._fast

    class Spy:
        @staticmethod
        def one(*args: object) -> object:
            r = real.one(*args)
            calls.append(r is not NotImplemented)
            return r

    update_one._fast = Spy
    try:
        store.apply(
            tree.update(0, 1, {hashlib.sha256(b"new %d" % i).digest(): b"w" for i in range(50)})
        )
    finally:
        update_one._fast = real
    assert calls and sum(calls) > len(calls) // 2
    code = "import ledger.smt_update_one as s; print(s._fast is None)"
    env = dict(os.environ, DVP_PURE_PYTHON="1")
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert out.stdout.strip() == "True", out.stderr
