"""Catch-up decisions of the node core, before its replica votes.

A node that starts (or reopens its databases after a disk failure) polls its peers'
heights (``AskHeights`` -> ``PeerHeights``), fetches the blocks it lacks from the best
one (``Fetch`` -> ``BlocksFetched``), commits them, and starts its replica once it is
caught up (within the pipeline window of the best peer, with no progress in the last
pass and at least one peer), or after ``STANDALONE_S`` alone. From then on the replica
fetches what it misses itself (``RequestBlocks``); fetched blocks go to it.

``CatchUpMixin`` is part of ``node.core.NodeCore``: it owns these transitions and relies
on the core's fields and helpers declared below (like ``consensus.state.ReplicaBase``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from consensus import api as ca
from consensus.quorum import kth_highest, weak_quorum
from consensus.replica import Replica
from ledger.chain import Ledger
from ledger.errors import LedgerError
from ledger.types import Block
from node.core_events import BlocksFetched, CoreConfig, CoreStatus, Effect, Fetch, PeerHeights
from node.mempool import Mempool

#: Catch-up: poll peers' heights this often (after progress / after none); a validator
#: with no peer at all starts voting after STANDALONE_S.
FOLLOW_AGAIN_S = 0.05
FOLLOW_IDLE_S = 0.2
STANDALONE_S = 1.0


@dataclass
class Follow:
    """Catch-up state: polling peers, fetching from the best one."""

    ask_at: float = -math.inf
    asking: bool = False
    fetching: bool = False
    target: int = 0
    progressed: bool = False
    started_at: float | None = None
    best_peer_height: int = 0
    answered: int = 0  # peers that answered the last heights poll
    alone: bool = True
    failed: set[bytes] = field(default_factory=set)  # served nothing valid when asked


class CatchUpMixin:
    """Catch-up transitions of ``NodeCore`` (the fields and helpers it uses follow)."""

    config: CoreConfig
    ledger: Ledger
    mempool: Mempool
    replica: Replica | None
    status: CoreStatus
    follow: Follow
    _out: list[Effect]
    _now: float
    _disk_failure: Callable[[BaseException], str | None]

    def _log(self, level: str, message: str, **fields: Any) -> None:
        raise NotImplementedError

    def _step_replica(self, first: ca.Event) -> None:
        raise NotImplementedError

    def _start_replica(self) -> None:
        raise NotImplementedError

    def _after_commit(self, block: Block) -> list[bytes]:
        raise NotImplementedError

    def _on_heights(self, ev: PeerHeights) -> None:
        f = self.follow
        f.asking, f.progressed = False, False
        f.alone = ev.connected == 0
        f.answered = len(ev.heights)
        height = self.ledger.height
        # One Byzantine peer may claim any height (and then serve forgeries, or nothing):
        # trust the (f+1)-th highest claim of the peers that have not failed us, as the
        # replica's catch-up does, and fetch from the lowest claim at least that high.
        usable = {p: h for p, h in ev.heights.items() if p not in f.failed}
        n = self.ledger.head.validators_at(height + 1).n
        k = min(weak_quorum(n), len(usable))
        trusted = kth_highest(usable.values(), k) if usable else None
        target = trusted if trusted is not None and trusted > height else height
        f.best_peer_height = target
        fresh = [(h, p) for p, h in usable.items() if h >= target > height]
        if not fresh:
            f.failed.clear()  # the next poll gives them another chance
        if not fresh or self.status.store_error is not None:
            self._follow_done()
            return
        peer = min(fresh)[1]
        f.target, f.fetching = target, True
        self._out.append(Fetch(peer, height + 1, target))

    def _on_blocks(self, ev: BlocksFetched) -> None:
        if self.replica is not None:
            # Every answer, empty or failed too: the replica keeps one fetch outstanding
            # and must learn that this one brought nothing, to ask another peer.
            self._step_replica(ca.BlocksReceived(ev.peer, ev.blocks or ()))
            return
        f = self.follow
        if not f.fetching:
            return
        f.fetching = False
        for item in ev.blocks or ():
            try:
                block = Block.decode(item.payload)
                if block.height != self.ledger.height + 1:
                    break
                self.ledger.commit(block, item.certificate, verified=self.mempool.verified)
            except LedgerError as exc:
                if self._disk_failure(exc) is not None:
                    raise
                self._log("warning", "peer sent an invalid block", peer=ev.peer, error=str(exc))
                f.failed.add(ev.peer)
                break
            self._after_commit(block)
            f.progressed = True
        else:
            if not ev.blocks:
                f.failed.add(ev.peer)
            if ev.blocks and self.ledger.height < f.target:
                f.fetching = True
                self._out.append(Fetch(ev.peer, self.ledger.height + 1, f.target))
                return
        self._follow_done()

    def caught_up(self, min_answers: int) -> bool:
        """True once a heights poll answered by at least ``min_answers`` peers named
        nothing above our height that we have not committed (``dvp store resync``
        stops there; a node goes on following)."""
        f = self.follow
        return (
            f.answered >= min_answers
            and not f.fetching
            and not f.asking
            and f.best_peer_height <= self.ledger.height
        )

    def _follow_done(self) -> None:
        """One catch-up pass ended: start voting if caught up, else poll again."""
        f, now = self.follow, self._now
        if self.config.is_validator and self.replica is None and self.status.store_error is None:
            window = self.ledger.head.chain.params.pipeline_window
            caught_up = f.best_peer_height <= self.ledger.height + window
            waited = f.started_at is not None and now - f.started_at > STANDALONE_S
            if (caught_up and not f.progressed and not f.alone) or (
                waited and (caught_up or f.alone)
            ):
                self._start_replica()
                return  # from now on the replica fetches what it misses (RequestBlocks)
        f.ask_at = now + (FOLLOW_AGAIN_S if f.progressed else FOLLOW_IDLE_S)
