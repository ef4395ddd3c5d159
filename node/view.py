"""What the RPC methods see of a running node: a Protocol the shell (``node.node.Node``)
satisfies.

``node.methods`` and ``node.admin`` are typed against this, not against the shell, so
the shell can import them (to start the listeners) without an import cycle.
"""

from __future__ import annotations

from typing import Protocol

from consensus.replica import Replica
from consensus.signer import Ed25519Crypto
from ledger.chain import Ledger
from ledger.prove import Prover
from ledger.types import Genesis, Transaction
from node.config import NodeConfig
from node.consensus_db import ConsensusDB
from node.core import CoreStatus
from node.mempool import AddResult, Mempool
from node.metrics import NodeMetrics
from node.transport import Transport


class NodeView(Protocol):
    """The node as its RPC methods use it (all on the trio thread)."""

    config: NodeConfig
    genesis: Genesis
    chain_id: str
    crypto: Ed25519Crypto
    metrics: NodeMetrics
    transport: Transport
    prover: Prover
    ready: bool  # its tasks are running
    max_head_age_ms: int  # /readyz fails when the newest block is older (node.health)
    store_problem: str | None  # set by a store-integrity check: why the store is not trusted

    @property
    def ledger(self) -> Ledger: ...

    @property
    def cdb(self) -> ConsensusDB | None: ...

    @property
    def mempool(self) -> Mempool: ...

    @property
    def replica(self) -> Replica | None: ...

    @property
    def status(self) -> CoreStatus: ...

    def submit(self, tx: Transaction, *, gossip: bool = True) -> AddResult: ...

    def submit_batch(self, txs: list[Transaction], *, more: bool = False) -> list[AddResult]: ...

    def client_limit(self) -> int: ...

    def committed_height_of(self, tx_id: bytes) -> int | None: ...

    async def wait_committed(self, tx_id: bytes, timeout_s: float) -> int | None: ...

    def peer_addresses(self) -> dict[bytes, str]: ...
