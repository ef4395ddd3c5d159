"""Bound experiments: a node in which one part costs nothing, to bound what making that
part faster could ever buy (``scripts/bench_node.py --bound NAME``).

A bound is applied in every process started with this folder on ``PYTHONPATH`` and
``DVP_BOUND`` set (``sitecustomize.py`` here calls ``apply``): the devnet's nodes, which
``bench_node.py`` starts. A node under a bound is NOT a correct ledger — only a
measurement — so each one says so on standard error when it starts, and the product's
code has no hook for this: the bounds replace functions from outside.

Bounds (comma-separated in ``DVP_BOUND``):

* ``free-state-tree``: ``SparseMerkleTree.update`` does no work. Every version's root
  record is a copy of the previous one (so the state root never changes, and every node
  still agrees), nothing else is written, and keys written after genesis read as absent.
  What remains of the state's cost is the block's own bytes and the tx index.
* ``unstored-state-tree``: the tree does all its work, but its nodes (all but each
  version's root record) are kept in the node's memory instead of LevelDB, and nothing is
  pruned: with ``free-state-tree``, it splits the tree's cost into computing it and
  storing it. (Memory grows by the nodes written: ~1 KB per attestation.)
* ``free-tx-signatures``: a transaction's signature check (``Transaction.signature_ok``,
  used by admission and block validation) answers True without checking. Consensus
  votes and certificates are still verified.
"""

from __future__ import annotations

import os
import sys
from typing import Any

BOUNDS = ("free-state-tree", "unstored-state-tree", "free-tx-signatures")


def _free_state_tree() -> None:
    from ledger import smt

    original = smt.SparseMerkleTree.update

    def update(
        self: smt.SparseMerkleTree,
        base_version: int | None,
        new_version: int,
        changes: Any,
        must_be_new: Any = None,
    ) -> smt.UpdateResult:
        if base_version is None:  # genesis: the real tree (members, doc types, params)
            return original(self, base_version, new_version, changes, must_be_new)
        old = self._root_record(base_version)
        return smt.UpdateResult(
            smt._node_hash_of(old),
            {smt.node_key(new_version, 0, b""): old},
            [smt.node_key(base_version, 0, b"")],
            new_version,
        )

    smt.SparseMerkleTree.update = update  # type: ignore[method-assign]


def _unstored_state_tree() -> None:
    from ledger.store import Store

    kept: dict[bytes, bytes] = {}
    commit = Store.commit
    get_node = Store.get_node

    def commit_roots_only(
        self: Store,
        block: Any,
        certificate: Any,
        state_nodes: Any,
        stale_nodes: Any,
        app_meta: bytes,
    ) -> None:
        kept.update(state_nodes)
        roots = {k: v for k, v in state_nodes.items() if k[8] == 0}  # depth byte 0
        commit(self, block, certificate, roots, [], app_meta)

    def get_kept_node(self: Store, node_key: bytes) -> bytes | None:
        node = kept.get(node_key)
        return node if node is not None else get_node(self, node_key)

    Store.commit = commit_roots_only  # type: ignore[method-assign]
    Store.get_node = get_kept_node  # type: ignore[method-assign]


def _free_tx_signatures() -> None:
    from ledger import types

    types.Transaction.signature_ok = lambda self: True  # type: ignore[method-assign]


_APPLY = {
    "free-state-tree": _free_state_tree,
    "unstored-state-tree": _unstored_state_tree,
    "free-tx-signatures": _free_tx_signatures,
}


def parse(spec: str) -> list[str]:
    """The bound names in ``spec`` (comma-separated); ValueError naming an unknown one."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        if n not in _APPLY:
            raise ValueError(f"unknown bound {n!r} (known: {', '.join(BOUNDS)})")
    return names


def apply(spec: str | None = None) -> list[str]:
    """Apply the bounds named in ``spec`` (default: ``$DVP_BOUND``); returns their names."""
    names = parse(os.environ.get("DVP_BOUND", "") if spec is None else spec)
    for n in names:
        _APPLY[n]()
    if names:
        sys.stderr.write(
            f"dvp BOUND EXPERIMENT in pid {os.getpid()}: {', '.join(names)} "
            f"in effect; this process is not a correct ledger\n"
        )
    return names
