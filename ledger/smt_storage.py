"""Where the state tree reads its nodes from, and what an update hands back to be stored.

This module owns the tree's storage interface: ``NodeReader`` (the one method the tree
reads through), ``UpdateResult`` (the nodes an update produced and the node keys it made
stale: the tree writes nothing itself), ``MissingNodeError``, and two small readers:
``MemoryNodeStore`` (a dict, for tests and benchmarks) and ``OverlayReader`` (uncommitted
updates on top of a store). The LevelDB store is ledger/store.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol


class MissingNodeError(LookupError):
    """A node the tree needs is not in storage (unknown or pruned version)."""


class NodeReader(Protocol):
    """Read access to the node store; ``None`` for an absent key."""

    def get_node(self, node_key: bytes) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What one ``update`` produced; the caller persists it (nothing is written yet).

    ``new_nodes``: node_key -> encoded node, to write together with the block.
    ``stale``: node keys no version >= ``version`` needs; delete them once ``version``
    is the oldest retained version (or older).
    """

    root: bytes
    new_nodes: dict[bytes, bytes]
    stale: list[bytes]
    version: int = 0


class MemoryNodeStore:
    """Dict-backed node store: a NodeReader plus ``apply``/``prune`` (tests, benchmarks)."""

    def __init__(self, nodes: dict[bytes, bytes] | None = None) -> None:
        self._nodes: dict[bytes, bytes] = {} if nodes is None else nodes
        # The dict's own get is the reader: a Python-level method around it would cost
        # a call frame per node read, which shows in update throughput.
        self.get_node: Callable[[bytes], bytes | None] = self._nodes.get
        # version -> stale keys its update produced (JMT's stale node index)
        self.stale_index: dict[int, list[bytes]] = {}

    @property
    def nodes(self) -> dict[bytes, bytes]:
        """node_key -> encoded node."""
        return self._nodes

    @nodes.setter
    def nodes(self, nodes: dict[bytes, bytes]) -> None:
        self._nodes = nodes
        self.get_node = nodes.get

    def apply(self, result: UpdateResult) -> None:
        """Persist an update's nodes and remember its stale keys for ``prune``."""
        self.nodes.update(result.new_nodes)
        if result.stale:
            self.stale_index.setdefault(result.version, []).extend(result.stale)

    def prune(self, oldest_kept: int) -> int:
        """Delete nodes only versions < ``oldest_kept`` need; return how many."""
        removed = 0
        for version in [v for v in self.stale_index if v <= oldest_kept]:
            for k in self.stale_index.pop(version):
                if self.nodes.pop(k, None) is not None:
                    removed += 1
        return removed

    def __len__(self) -> int:
        return len(self.nodes)


class OverlayReader:
    """A NodeReader over ``base`` with pending, not yet committed ``new_nodes`` dicts on
    top (later dicts win), to execute block h+1 on top of an uncommitted block h."""

    def __init__(self, base: NodeReader, *pending: Mapping[bytes, bytes]) -> None:
        self.base = base
        self.pending = list(pending)

    def push(self, nodes: Mapping[bytes, bytes]) -> None:
        self.pending.append(nodes)

    def get_node(self, node_key: bytes) -> bytes | None:
        for nodes in reversed(self.pending):
            enc = nodes.get(node_key)
            if enc is not None:
                return enc
        return self.base.get_node(node_key)
