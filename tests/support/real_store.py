"""A real node data directory, made by real nodes: for the store-damage and read-only tests.

``build_real_store(root)`` creates a 4-validator devnet at ``root`` and runs its four
``node.node.Node``s in one trio run over the in-memory transport (tests/support/cluster)
three times, stopping them in between, with attestations and a revocation in each run.
Each restart reopens the LevelDB stores, which turns the previous run's log into a table
file, so every node's ``ledger/`` and ``consensus/`` end as a long-running node's do:
``CURRENT``, ``LOCK``, ``LOG``, ``LOG.old``, a ``MANIFEST-*``, table files (``*.ldb``)
and a log (``*.log``) holding the last run's writes, with state versions pruned.
About 5 s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trio

from cli.devnet_files import NodeEntry, create_devnet
from ledger.crypto import read_key_file
from ledger.types import Revoke, RevokeReason, Transaction
from node.config import load_config
from node.node import Node
from node.transport import MemoryHub
from tests.support.cluster import attest, transport_factory, wait_until

#: The validator whose data directory the tests damage (a replica: cnix is the primary).
VICTIM = "webank"


@dataclass
class RealStore:
    root: Path  # the devnet folder: genesis.json, keys/, nodes/<name>.toml, data/<name>/
    entries: dict[str, NodeEntry]
    commitments: list[bytes]  # attested, in order
    revoked: bytes

    @property
    def datadir(self) -> Path:
        return self.root / "data" / VICTIM


def _revoke(root: Path, commitment: bytes, nonce: int) -> Transaction:
    key = read_key_file(root / "keys" / "szcredit.member.json")
    payload = Revoke(commitment, RevokeReason.DATA_CHANGED)
    return Transaction("dvp-demo", key.public_key, nonce, 200, payload).signed(key)


async def _run(root: Path, entries: list[NodeEntry], txs: list[Transaction], gain: int) -> None:
    hub = MemoryHub()
    nodes = [Node(load_config(e.config), transport_factory(hub)) for e in entries]
    start = min(n.ledger.height for n in nodes)
    async with trio.open_nursery() as nursery:
        for n in nodes:
            await nursery.start(n.run)
        for i, tx in enumerate(txs):
            nodes[i % len(nodes)].submit(tx)
        await wait_until(
            lambda: (
                min(n.ledger.height for n in nodes) >= start + gain
                and not any(len(n.mempool) for n in nodes)
            ),
            f"every node {gain} heights further with an empty mempool",
        )
        nursery.cancel_scope.cancel()


def build_real_store(root: Path) -> RealStore:
    entries = create_devnet(root, nodes=4, params={"heartbeat_ms": 200})
    txs = [attest(root, i) for i in range(36)]
    commitments = [tx.payload.commitment for tx in txs]  # type: ignore[union-attr]
    trio.run(_run, root, entries, txs[:12], 4)
    trio.run(_run, root, entries, txs[12:24] + [_revoke(root, commitments[3], 1000)], 6)
    trio.run(_run, root, entries, txs[24:], 4)
    return RealStore(root, {e.name: e for e in entries}, commitments, commitments[3])


def node_config(store: RealStore, datadir: Path, name: str = VICTIM) -> Path:
    """A copy of ``name``'s config whose data directory is ``datadir``."""
    cfg = store.entries[name].config
    text = cfg.read_text()
    old = f'data_dir = "../data/{name}"'
    assert old in text, text
    out = cfg.with_name(f"{name}-{datadir.name}.toml")
    out.write_text(text.replace(old, f'data_dir = "{datadir}"'))
    return out
