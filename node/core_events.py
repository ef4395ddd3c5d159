"""The node core's vocabulary: the events ``NodeCore.step`` takes, the effects it
returns, and its configuration and status records (``node.core`` re-exports them all).

Events (frozen dataclasses, below): ``Tick`` (call at ``next_deadline()`` or later:
replica timers, the block builder, gossip flushes, catch-up polls, the next chunk of a
gossiped batch), ``PeerFrame`` (a frame from the transport; decoded strictly here, a
malformed one yields ``Penalise``), ``ClientTxs`` (answered by exactly one ``Answer``
in the same step, so an RPC handler may call ``step`` synchronously), ``PeerHeights``
(the answer to ``AskHeights``), ``BlocksFetched`` (the answer to every ``Fetch``; None
when it failed), ``StoreReopened`` (after ``StoreFailed``: the shell reopened the
databases).

Effects, in order; the caller executes them in list order:

1. Durability: the replica's ``Persist``/``PersistBlock`` of one replica step are
   written by the core in one synced ``ConsensusDB.save`` *before* the ``Send`` and
   ``Broadcast`` effects carrying what they cover are appended (consensus/api.py rule
   1): every effect returned is safe to execute at once. Committed blocks are on disk
   (``Ledger.commit``) before their ``Committed`` effect.
2. ``Send``/``Broadcast`` may be executed asynchronously and may be lost.
3. ``Committed(height, tx_ids)`` once per committed block, in height order: wake the
   RPC callers waiting for those ids. ``SetAllowlist`` follows commits that may change
   who may connect.
4. ``Fetch(peer, lo, hi)`` and ``AskHeights()`` ask for block-sync requests; every
   one gets exactly one answer event (``BlocksFetched`` / ``PeerHeights``).
5. ``StoreFailed(reason)``: a disk write failed (the injected ``disk_failure`` said
   so). The replica, its timers and everything not yet durable are dropped, as if the
   process had crashed before the write; the core only admits and gossips until
   ``StoreReopened``, then catches up and restarts the replica from its durable record.
6. ``Penalise``, ``Metric``, ``Log`` are local and informational.

Pending transactions are tracked once: the mempool is the truth. The replica is told
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consensus import api as ca
from ledger.chain import Ledger
from ledger.types import Transaction
from node.consensus_db import ConsensusDB
from node.mempool import AddResult

# ---------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Tick:
    """Time passed: run whatever is due at ``now``."""


@dataclass(frozen=True)
class PeerFrame:
    peer: bytes
    channel: str
    payload: bytes


@dataclass(frozen=True)
class ClientTxs:
    """Transactions from a client (``from_peer``: admit them as a peer's gossip).

    ``more``: further chunks of the same client request follow at once (the RPC admits a
    large batch in chunks, yielding between them): a block that is not full waits for
    them, for at most ``BURST_MAX_S``, so one batch is not cut into two half blocks."""

    request_id: int
    txs: tuple[Transaction, ...]
    from_peer: bool = False
    more: bool = False


@dataclass(frozen=True)
class PeerHeights:
    """Heights the connected peers reported; ``connected``: how many peers there were."""

    heights: dict[bytes, int]
    connected: int


@dataclass(frozen=True)
class BlocksFetched:
    peer: bytes
    blocks: tuple[ca.CertifiedPayload, ...] | None


@dataclass(frozen=True)
class StoreReopened:
    ledger: Ledger
    cdb: ConsensusDB | None


CoreEvent = Tick | PeerFrame | ClientTxs | PeerHeights | BlocksFetched | StoreReopened

# --------------------------------------------------------------------------- effects


@dataclass(frozen=True)
class Send:
    peer: bytes
    channel: str
    payload: bytes


@dataclass(frozen=True)
class Broadcast:
    channel: str
    payload: bytes


@dataclass(frozen=True)
class Answer:
    """The results of a ``ClientTxs``, in order; ``refused``: how many were busy."""

    request_id: int
    results: list[AddResult]
    refused: int


@dataclass(frozen=True)
class Committed:
    height: int
    tx_ids: list[bytes]
    mempool: int  # transactions still pending after it


@dataclass(frozen=True)
class Penalise:
    peer: bytes
    reason: str


@dataclass(frozen=True)
class Fetch:
    peer: bytes
    lo: int
    hi: int


@dataclass(frozen=True)
class AskHeights:
    pass


@dataclass(frozen=True)
class SetAllowlist:
    keys: set[bytes]


@dataclass(frozen=True)
class Metric:
    """``view``: a view change to ``value``; ``evidence``: one more record."""

    name: str
    value: float


@dataclass(frozen=True)
class Log:
    level: str  # debug | info | warning | error
    message: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class StoreFailed:
    reason: str


Effect = (
    Send
    | Broadcast
    | Answer
    | Committed
    | Penalise
    | Fetch
    | AskHeights
    | SetAllowlist
    | Metric
    | Log
    | StoreFailed
)


@dataclass(frozen=True)
class CoreConfig:
    is_validator: bool
    linger_ms: int
    mempool_max_txs: int = 100_000
    client_max_txs: int | None = None
    origin: str = "node"  # names the node in fatal errors (its config file)


@dataclass
class CoreStatus:
    view_changes: int = 0
    evidence: int = 0  # equivocation evidence records in the consensus database
    store_error: str | None = None  # set while a failed disk write stops commits
    last_commit_unix_ms: int = 0
