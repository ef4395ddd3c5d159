"""The bound experiments of scripts/bench_node.py (scripts/bounds/): they take effect in
a process started with them, and never without ``DVP_BOUND``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BOUNDS = ROOT / "scripts" / "bounds"

# A tree update after genesis and a transaction with a zeroed signature, in a fresh
# interpreter started with the bounds folder on PYTHONPATH, as bench_node starts nodes.
PROBE = """
import dataclasses
from ledger.smt import MemoryNodeStore, SparseMerkleTree
from ledger.testchain import Consortium

store = MemoryNodeStore()
tree = SparseMerkleTree(store)
store.apply(tree.update(None, 0, {b"\\x01" * 32: b"genesis"}))
r1 = tree.update(0, 1, {b"\\x02" * 32: b"later"})
store.apply(r1)
cons = Consortium.make()
tx = cons.attest(b"\\x07" * 32)
forged = dataclasses.replace(tx, signature=bytes(64))
print("root unchanged" if r1.root == tree.root(0) else "root changed")
print("later key", tree.get(b"\\x02" * 32, 1))
print("forged signature", "accepted" if forged.signature_ok() else "refused")
"""


def _probe(cwd: Path, bound: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DVP_BOUND", "PYTHONPATH")}
    env["PYTHONPATH"] = str(BOUNDS)
    if bound is not None:
        env["DVP_BOUND"] = bound
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_without_dvp_bound_nothing_changes() -> None:
    out = _probe(ROOT, None)
    assert out.returncode == 0, out.stderr
    assert "root changed" in out.stdout
    assert "later key b'later'" in out.stdout
    assert "forged signature refused" in out.stdout
    assert "BOUND" not in out.stderr


def test_free_state_tree_and_free_signatures_apply_and_say_so(tmp_path: Path) -> None:
    # From a folder outside the checkout: the bound finds the checkout by itself (the
    # nodes' interpreters run it before their working directory is on sys.path).
    out = _probe(tmp_path, "free-state-tree")
    assert out.returncode == 0, out.stderr
    assert "root unchanged" in out.stdout
    assert "later key None" in out.stdout
    assert "forged signature refused" in out.stdout
    assert "BOUND EXPERIMENT" in out.stderr and "not a correct ledger" in out.stderr

    out = _probe(tmp_path, "free-tx-signatures")
    assert out.returncode == 0, out.stderr
    assert "root changed" in out.stdout
    assert "later key b'later'" in out.stdout
    assert "forged signature accepted" in out.stdout


UNSTORED_PROBE = """
import sys
import plyvel
from ledger.chain import Ledger
from ledger.store_format import P_NODE
from ledger.types import Role
from ledger.testchain import Consortium

cons = Consortium.make()
with Ledger.open(sys.argv[1], cons.genesis) as lg:
    member = lg.head.member_of_key(cons.member_keys["szcredit"].public_key)
    print("issuer", member is not None and member.has_role(Role.ISSUER))
db = plyvel.DB(sys.argv[1])
print("stored nodes", sum(1 for _ in db.iterator(prefix=P_NODE)))
"""


def test_unstored_state_tree_keeps_only_root_records_in_leveldb(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DVP_BOUND", "PYTHONPATH")}
    env["PYTHONPATH"] = str(BOUNDS)
    runs = {}
    for bound in (None, "unstored-state-tree"):
        if bound:
            env["DVP_BOUND"] = bound
        db = tmp_path / (bound or "product")
        out = subprocess.run(
            [sys.executable, "-c", UNSTORED_PROBE, str(db)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "issuer True" in out.stdout  # the state reads the same either way
        runs[bound] = int(out.stdout.split("stored nodes ")[1])
    assert runs["unstored-state-tree"] == 1  # genesis's root record
    assert runs[None] > 1


def test_an_unknown_bound_is_refused() -> None:
    sys.path.insert(0, str(BOUNDS))
    try:
        import dvp_bounds
    finally:
        sys.path.remove(str(BOUNDS))
    assert dvp_bounds.parse(" free-state-tree , free-tx-signatures ") == [
        "free-state-tree",
        "free-tx-signatures",
    ]
    with pytest.raises(ValueError, match="unknown bound 'free-tree'"):
        dvp_bounds.parse("free-tree")
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_node.py"), "--bound", "free-tree"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "unknown bound 'free-tree'" in out.stderr
