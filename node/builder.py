"""The block-building policy: when to answer the replica's ``RequestProposal``, and with what.

Owns the outstanding requests and the cut rule (tuned with ``scripts/bench_node.py``;
docs/PERFORMANCE.md, "Block cutting", has the figures):

- cut as soon as ``max_block_txs`` transactions are waiting (not already in a pending,
  proposed-but-uncommitted block);
- with fewer but some waiting, after a linger of ``linger_ms`` doubled for every block
  already in flight (at most 2**4 times), counted from the later of the oldest request
  and the last block built: an idle chain answers within one linger, a loaded pipeline
  fills bigger blocks (every height costs each node CPU whatever it carries);
- with none, an empty heartbeat block ``heartbeat_ms`` after the later of the last
  commit and the last block built (pipelined heights must not all fire at once): the
  certified state root stays fresh for verifiers.

Pure: times are the caller's monotonic seconds, the block timestamp its wall clock in
ms (never below the parent's + 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ledger.chain import Ledger
from ledger.errors import LedgerError
from ledger.state import Execution
from node.mempool import Mempool

#: The linger doubles per block in flight up to this exponent.
MAX_LINGER_DOUBLINGS = 4


@dataclass(frozen=True)
class ProposalRequest:
    """An outstanding ``RequestProposal`` from the replica, and when it came."""

    height: int
    view: int
    parent_block_id: bytes
    since: float


class BlockBuilder:
    """Outstanding proposal requests and the cut rule (see the module docstring)."""

    def __init__(self, linger_ms: int) -> None:
        self.linger_s = linger_ms / 1000
        self.requests: dict[int, ProposalRequest] = {}
        self.last_built = 0.0

    def request(self, height: int, view: int, parent_block_id: bytes, now: float) -> None:
        self.requests[height] = ProposalRequest(height, view, parent_block_id, now)

    def clear(self) -> None:
        self.requests.clear()

    def committed(self, height: int) -> None:
        """Requests at or below a committed height are moot."""
        if self.requests:
            for h in [h for h in self.requests if h <= height]:
                del self.requests[h]

    def deadline(self, ledger: Ledger, mempool: Mempool, last_commit: float) -> float:
        """When the next block should be cut (``inf`` with no request outstanding)."""
        if not self.requests:
            return math.inf
        params = ledger.head.chain.params
        pending = ledger.pending
        in_flight = sum(ex.block.header.tx_count for ex in pending.values())
        available = max(0, len(mempool) - in_flight)
        if available >= params.max_block_txs:
            return 0.0
        if available > 0:
            oldest = min(r.since for r in self.requests.values())
            linger = self.linger_s * (1 << min(len(pending), MAX_LINGER_DOUBLINGS))
            return max(oldest, self.last_built) + linger
        heartbeat_s: float = params.heartbeat_ms / 1000
        return max(last_commit, self.last_built) + heartbeat_s

    def build(
        self, ledger: Ledger, mempool: Mempool, proposer: bytes, now: float, wall_ms: int
    ) -> tuple[ProposalRequest, Execution | None, str]:
        """Cut a block for the lowest outstanding request (the caller checked the
        deadline). Returns the request, the execution (None if nothing could be built)
        and, if so, why."""
        req = self.requests.pop(min(self.requests))
        params = ledger.head.chain.params
        in_flight = {tid for ex in ledger.pending.values() for tid in ex.block.tx_ids}
        txs = mempool.take(params.max_block_txs, params.max_block_bytes // 2, exclude=in_flight)
        parent = ledger.state_of_block(req.parent_block_id)
        if parent is None or parent.height + 1 != req.height:
            return req, None, "proposal parent unknown"
        try:
            ex = ledger.build(
                txs,
                time_ms=max(wall_ms, parent.time_ms + 1),
                proposer=proposer,
                verified=mempool.verified,
                parent_block_id=req.parent_block_id,
            )
        except LedgerError as exc:
            return req, None, f"building a block failed: {exc}"
        self.last_built = now
        return req, ex, ""
