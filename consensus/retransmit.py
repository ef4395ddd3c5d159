"""Retransmission over lossy links: a stalled replica resends its own votes, and a
replica that receives a vote it already had answers with its own.

Links lose messages (the transport may drop any ``Send``/``Broadcast``). PBFT's answer
(TOCS'02 §5.2) is retransmission: on the RETRANSMIT timer a replica that made no
progress rebroadcasts what it signed for the uncommitted heights of its view
(``retransmit_votes``; already signed and persisted, so no new ``Persist``); a peer
that receives such a duplicate sends back its own votes for that height, once per
(peer, height, view) (``answer_retransmission``), so the stuck replica collects a
quorum from everyone's answers. Only own votes go back: forwarding others' votes
would look like retransmissions to their signers and echo around the cluster.
"""

from __future__ import annotations

from consensus.api import Broadcast, Send
from consensus.messages import Message
from consensus.state import ReplicaBase, Slot


class RetransmitMixin(ReplicaBase):
    """Resending own votes; relies on ``announce_epoch_start`` of the recovery phase."""

    def retransmit_votes(self) -> None:
        """Stalled: resend what we signed for uncommitted heights of this view.

        Already signed and persisted, so no new ``Persist``. Peers that have the same
        messages answer the duplicates with theirs (``answer_retransmission``).
        """
        self.count("retransmissions")
        self.announce_epoch_start()
        top = min(self.top_seen, self.low + self.config.log_size)
        for height in range(self.committed + 1, top + 1):
            slot = self.slots.get(height)
            if slot is None or slot.view != self.view:
                continue
            for message in self.own_votes(slot):
                self.emit(Broadcast(message))

    def own_votes(self, slot: Slot) -> list[Message]:
        out: list[Message] = []
        if slot.pre_prepare is not None and slot.accepted is not None:
            out.append(slot.pre_prepare)  # the primary's, forwarded: it is self-certifying
        mine = slot.prepares.get(self.me)
        if mine is not None:
            out.append(mine)
        commit = slot.commits.get((self.view, self.me))
        if commit is not None:
            out.append(commit)
        return out

    def answer_retransmission(self, peer: bytes, slot: Slot) -> None:
        """A peer resent a vote we already had: it is stuck at this height, help it.

        Only our own votes go back (never others' forwarded votes, which would look
        like retransmissions to their signers and echo around the cluster), once per
        (peer, height, view): the peer collects a quorum from everyone's answers.
        """
        self.count("duplicate")
        key = (peer, slot.height)
        if peer == self.me or self.answered.get(key, -1) >= self.view:
            return
        if len(self.answered) >= 4 * self.vset.n * self.config.log_size:
            self.answered.clear()
        self.answered[key] = self.view
        out: list[Message] = []
        if slot.view == self.view:
            mine = slot.prepares.get(self.me)
            if (
                slot.pre_prepare is not None
                and slot.accepted is not None
                and slot.pre_prepare.sender == self.me
            ):
                out.append(slot.pre_prepare)
            if mine is not None:
                out.append(mine)
        commits = [c for (v, s), c in slot.commits.items() if s == self.me]
        out += commits[-1:]  # our latest COMMIT at this height, in whatever view
        for message in out:
            self.emit(Send(peer, message))
