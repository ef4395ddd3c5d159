"""Gossip and admission in the node core: transactions in, batches out.

Clients' transactions (``ClientTxs``, answered in the same step) and peers' gossiped
batches (admitted ``ADMIT_CHUNK`` per step) go through the mempool's rule book; what was
admitted is flushed ``GOSSIP_FLUSH_S`` later as one batch to the peers and one
``TxsPending`` to the replica -- but not while a client's batch is still arriving in
chunks (``ClientTxs.more``, at most ``BURST_MAX_S``), so one batch stays one batch.
Transactions pending for ``RESEND_AGE_S`` are gossiped again.

``GossipMixin`` is part of ``node.core.NodeCore`` (like ``node.core_catchup``): it owns
these transitions and relies on the core's fields and helpers declared below. Pure: no
I/O, no clock (times are the step's ``now``).
"""

from __future__ import annotations

import itertools
import math
from collections import OrderedDict, deque
from typing import Any

from consensus import api as ca
from consensus.replica import Replica
from ledger.chain import Ledger
from ledger.codec import as_bytes, encode
from ledger.errors import DecodeError
from ledger.types import Transaction
from node.core_events import Answer, Broadcast, ClientTxs, CoreConfig, Effect, Penalise
from node.mempool import CLIENT_BUSY, AddResult, AddStatus, Mempool
from node.transport import TXS

#: Gossip: admissions within this long share one batch (and one TxsPending).
GOSSIP_FLUSH_S = 0.01
#: A client batch's next chunk (``ClientTxs.more``) is awaited this long at most before a
#: block that is not full is cut without it.
BURST_MAX_S = 0.1
GOSSIP_MAX_BYTES = 256 * 1024
MAX_TX_BATCH = 4096
#: Gossiped transactions admitted per step; the rest of a batch waits for the next Tick
#: (the shell yields between steps, so votes are not held up by a big batch).
ADMIT_CHUNK = 256
#: Transactions still pending after RESEND_AGE_S are gossiped again (at most RESEND_MAX
#: per RESEND_S): gossip goes once to the peers connected then, and a peer that was cut
#: off (the primary, say) would never get them; our replica would blame each primary in
#: turn for leaving them out.
RESEND_AGE_S = 2.0
RESEND_S = 1.0
RESEND_MAX = 256


class GossipMixin:
    """Admission and gossip transitions of ``NodeCore`` (the fields it uses follow)."""

    config: CoreConfig
    ledger: Ledger
    mempool: Mempool
    replica: Replica | None
    arrived: OrderedDict[bytes, float]
    _out: list[Effect]
    _now: float
    _new_pending: list[bytes]
    _gossip: list[bytes]
    _flush_at: float
    _burst_until: float
    _resend_at: float
    _ingest: deque[tuple[bytes, list[Any], int]]

    def client_limit(self) -> int:
        raise NotImplementedError

    def _step_replica(self, first: ca.Event) -> None:
        raise NotImplementedError

    def _admit_gossip(self) -> None:
        """Admit up to ADMIT_CHUNK transactions of the queued gossip batches."""
        budget = ADMIT_CHUNK
        head, now, pool, added = self.ledger.head, self._now, self.mempool, 0
        while self._ingest and budget > 0:
            peer, items, i = self._ingest.popleft()
            end = min(len(items), i + budget)
            budget -= end - i
            for raw in items[i:end]:
                try:
                    tx = Transaction.decode(as_bytes(raw, "tx", max_size=8192))
                except DecodeError:
                    self._out.append(Penalise(peer, "malformed_tx"))
                    continue
                if pool.add(tx, head, from_peer=True).status is AddStatus.ADDED:
                    self._admitted(tx.tx_id, now)
                    added += 1
            if end < len(items):
                self._ingest.appendleft((peer, items, end))
        if added and self._flush_at == math.inf:
            self._flush_at = now + GOSSIP_FLUSH_S

    def _on_client_txs(self, ev: ClientTxs) -> None:
        pool, now, head = self.mempool, self._now, self.ledger.head
        limit = math.inf if ev.from_peer else self.client_limit()
        results: list[AddResult] = []
        refused = added = 0
        for tx in ev.txs:
            if len(pool) >= limit and tx.tx_id not in pool:
                # Past this depth a client's transaction would only queue, and admitting
                # it (a signature check, ~64 us) takes the CPU the chain needs to commit
                # what is queued (docs/PERFORMANCE.md, "Overload"). Peers' gossip is
                # still admitted up to the hard bound.
                pool.stats["busy"] += 1
                results.append(CLIENT_BUSY)
                refused += 1
                continue
            r = pool.add(tx, head, from_peer=ev.from_peer)
            if r.status is AddStatus.ADDED:
                self._admitted(tx.tx_id, now)
                if not ev.from_peer:
                    self._gossip.append(tx.encoded)
                added += 1
            results.append(r)
        if added and self._flush_at == math.inf:
            self._flush_at = now + GOSSIP_FLUSH_S
        self._burst_until = now + BURST_MAX_S if ev.more else -math.inf
        self._out.append(Answer(ev.request_id, results, refused))

    def _admitted(self, tx_id: bytes, now: float) -> None:
        self.arrived[tx_id] = now
        if len(self.arrived) > 2 * self.config.mempool_max_txs:
            self.arrived.popitem(last=False)
        self._new_pending.append(tx_id)

    def _flush_due(self) -> float:
        """When the gossip flush is due: ``GOSSIP_FLUSH_S`` after the first admission, but
        not while a client's batch is still being admitted (``ClientTxs.more``), so the
        batch reaches the peers -- and the primary's builder -- in one piece."""
        if self._flush_at != math.inf and self._burst_until > self._now:
            return max(self._flush_at, self._burst_until)
        return self._flush_at

    def _flush(self) -> None:
        """Tell the replica what became pending, and gossip the batched transactions."""
        self._flush_at = math.inf
        if self._new_pending:
            ids, self._new_pending = self._new_pending, []
            if self.replica is not None:
                pool = self.mempool
                # Only those still pending now: one a block committed (or a re-check
                # dropped) since would stay "pending" in the replica for good.
                live = tuple(t for t in ids if t in pool)
                if live:
                    self._step_replica(ca.TxsPending(live))
        buf = self._gossip
        while buf:
            n = size = 0
            while n < len(buf) and n < MAX_TX_BATCH and size < GOSSIP_MAX_BYTES:
                size += len(buf[n])
                n += 1
            self._out.append(Broadcast(TXS, encode(buf[:n])))
            buf = buf[n:]
        self._gossip = []

    def _resend_stale(self) -> None:
        """Gossip again the oldest (RESEND_MAX) transactions pending for RESEND_AGE_S,
        and forget the arrival times of those that left the mempool."""
        now, pool, arrived = self._now, self.mempool, self.arrived
        self._resend_at = now + RESEND_S
        for tx_id, t0 in list(itertools.islice(arrived.items(), RESEND_MAX)):
            if now - t0 < RESEND_AGE_S:
                break
            tx = pool.get(tx_id)
            if tx is None:
                del arrived[tx_id]
            else:
                self._gossip.append(tx.encoded)
        if self._gossip and self._flush_due() <= now:
            self._flush()
        elif self._gossip and self._flush_at == math.inf:
            self._flush_at = now  # due now, or when the client batch being admitted ends
