"""Proposals: the primary asks the caller for a block and pre-prepares it.

``propose`` emits ``RequestProposal(h, v, parent)`` for the lowest height this primary
has not yet filled in its view, within the pipelining window (h <= last commit + W),
the watermarks (h <= low + L) and the epoch; at most one request per height, and never
a second PRE-PREPARE for a (height, view) signed before a restart (the signing guard
says so). ``on_proposal`` takes the caller's ``ProposalReady``: a stale or invalid
answer is counted and dropped; a valid one is signed, persisted (``PersistBlock``
before our own PREPARE) and accepted like a backup accepts a PRE-PREPARE.
"""

from __future__ import annotations

from consensus.api import ProposalReady, RequestProposal
from consensus.messages import Kind, PrePrepare
from consensus.state import ReplicaBase


class ProposalMixin(ReplicaBase):
    """The primary's side of the normal case; relies on ``accept``/``keep_payload``."""

    def propose(self) -> None:
        """As primary, ask for the next block if the window and watermarks allow."""
        if self.in_vc or self.me_index is None or self.primary(self.view) != self.me:
            return
        limit = min(self.committed + self.config.window, self.low + self.config.log_size)
        height = max(self.fresh_from, self.committed + 1, self.low + 1)
        while height <= limit and self.in_epoch(height):
            slot = self.slots.get(height)
            if slot is not None and slot.view == self.view and slot.accepted is not None:
                height += 1
                continue
            if height in self.requested or self.guard.has_vote(Kind.PRE_PREPARE, height, self.view):
                return  # asked already, or proposed before a restart: cannot re-propose
            parent = self.block_at(height - 1)
            if parent is None:
                return
            self.requested.add(height)
            self.emit(RequestProposal(height, self.view, parent))
            return

    def on_proposal(self, event: ProposalReady) -> None:
        height = event.height
        if (
            event.view != self.view
            or self.in_vc
            or height not in self.requested
            or height <= self.low
        ):
            self.count("stale_proposal")
            return
        self.requested.discard(height)
        parent = self.block_at(height - 1)
        block_id = (
            None if parent is None else self.app.validate_proposal(height, event.payload, parent)
        )
        if parent is None or block_id is None:
            self.count("invalid_own_proposal")
            return
        if not self.guard.allow_vote(Kind.PRE_PREPARE, height, self.view, block_id, parent):
            self.count("guard_refused")
            return
        pp = self.sign(PrePrepare(height, self.view, block_id, parent, event.payload))
        self.send_signed(pp)
        slot = self.slot(height)
        slot.enter_view(self.view)
        slot.pre_prepare, slot.pending = pp, None
        self.keep_payload(slot, block_id, event.payload)
        self.accept(slot, block_id, parent)
