"""The simulator's node process: the product's ``node.core.NodeCore`` over in-memory disks.

A simulated node is nothing but the real core, built exactly as the trio shell
(``node.node.Node.__init__``) builds it, except that the ledger and the consensus
database live on ``ledger.kv.MemoryKV`` stores (``Ledger.open_kv``, ``ConsensusDB(kv)``)
instead of LevelDB directories. No node logic lives here: the world (``cluster``)
executes the core's effects into the simulated network, as ``Node._execute`` executes
them into the transport.

Time: the simulator counts integer milliseconds from the genesis; the core gets
``now`` in seconds (its monotonic clock) and ``wall_ms = GENESIS_TIME_MS + now_ms``
(block timestamps). A restart after a power cut is a new core over the stores' surviving
images (``boot``), as a process restart is.
"""

from __future__ import annotations

import math

from consensus.signer import Ed25519Crypto
from ledger.chain import Ledger
from ledger.crypto import KeyPair
from ledger.kv import MemoryKV
from ledger.testchain import GENESIS_TIME_MS
from ledger.types import Genesis
from node.consensus_db import ConsensusDB
from node.core import CoreConfig, CoreEvent, Effect, NodeCore
from node.mempool import Mempool

#: The shell's defaults (node.config): the block builder's linger and the mempool bound.
LINGER_MS = 20
MEMPOOL_MAX_TXS = 10_000


def boot(
    name: str,
    key: KeyPair,
    genesis: Genesis,
    ledger_kv: MemoryKV,
    cdb_kv: MemoryKV,
    *,
    is_validator: bool = True,
) -> NodeCore:
    """Open the node's stores (creating the genesis on first boot) and build its core."""
    ledger = Ledger.open_kv(ledger_kv, genesis, create=True, name=ledger_kv.name)
    cdb = ConsensusDB(cdb_kv) if is_validator else None
    return NodeCore(
        CoreConfig(
            is_validator=is_validator,
            linger_ms=LINGER_MS,
            mempool_max_txs=MEMPOOL_MAX_TXS,
            origin=name,
        ),
        ledger,
        cdb,
        Mempool(genesis.chain_id, max_txs=MEMPOOL_MAX_TXS),
        Ed25519Crypto(key),
    )


def step(core: NodeCore, event: CoreEvent, now_ms: int) -> list[Effect]:
    """Step ``core`` at the simulated time ``now_ms``."""
    return core.step(event, now_ms / 1000, GENESIS_TIME_MS + now_ms)


def deadline_ms(core: NodeCore, now_ms: int) -> int | None:
    """When the core wants its next ``Tick`` (None: never); never before ``now_ms + 1``
    (a core with due work yields for a simulated millisecond, as the shell yields)."""
    d = core.next_deadline()
    if d == math.inf:
        return None
    if d == -math.inf:
        return now_ms + 1
    return max(math.ceil(d * 1000), now_ms + 1)
