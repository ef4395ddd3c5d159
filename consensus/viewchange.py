"""View change and new view (Castro & Liskov, OSDI'99 §4.4; TOCS'02 §4.5).

Owns the transitions that replace a faulty or slow primary:

- ``start_view_change(v)``: stop taking part in older views, sign VIEW-CHANGE(v)
  carrying the stable checkpoint and, for every height above it, the best proof we
  hold (COMMITTED certificate, else highest-view PREPARED certificate), broadcast it.
- ``on_view_change``: store verified VIEW-CHANGEs. With f + 1 of them for views above
  ours, join (TOCS'02 §4.5.2 liveness rule: at least one honest replica moved). With a
  quorum for our view the primary of v builds NEW-VIEW and the VIEW_CHANGE timer is
  restarted: if no NEW-VIEW arrives in time we move on to v + 1, backing off.
- ``on_view_change_timeout`` without a quorum for our view does *not* escalate (a
  replica cut off alone must not run ahead, and a Byzantine VIEW-CHANGE for a high
  view must not drag anyone along).
- While changing views a replica rebroadcasts, on the RETRANSMIT timer, its last few
  VIEW-CHANGEs (kept in the signing record), not only the current one. Crashes make
  replicas forget the VIEW-CHANGEs they received; without this, honest replicas split
  over two views with a silent f-th replica would wait for each other forever. Replies
  to a stale VIEW-CHANGE are only NEW-VIEW and CHECKPOINT messages, which are never
  answered in turn, so two replicas cannot ping-pong.
- ``on_new_view`` / ``install``: check the quorum of VIEW-CHANGEs, recompute the
  re-proposals (``certs.select_reproposals``), prepare them in the new view, and let
  the primary propose fresh blocks above them.

Retransmission: a replica stuck in a view change rebroadcasts its (already signed)
VIEW-CHANGE on the RETRANSMIT timer; a replica that already installed that view
answers such a VIEW-CHANGE with its NEW-VIEW message, which is self-certifying.
"""

from __future__ import annotations

from consensus.api import Send, TimerKind
from consensus.certs import NewViewPlan, check_new_view, check_view_change, select_reproposals
from consensus.messages import Message, NewView, Proof, ProofKind, ViewChange
from consensus.quorum import kth_highest, weak_quorum
from consensus.state import ReplicaBase


class ViewChangeMixin(ReplicaBase):
    """View-change transitions; relies on ``accept``/``adopt_stable`` of the other phases."""

    def start_view_change(self, new_view: int) -> None:
        """Move to ``new_view`` (> current view) and announce it with a VIEW-CHANGE."""
        assert new_view > self.view or (new_view == self.view and not self.in_vc), new_view
        if self.me_index is None:
            return  # observers follow certificates; they never vote on views
        if self.stable.height < self.epoch - 1:
            self.count("view_change_without_base")  # no proof of the epoch boundary yet
            return
        self.count("view_changes_started")
        self.view, self.in_vc, self.new_view_msg = new_view, True, None
        self.failed_views += 1
        self.stalls = 0
        self.requested.clear()
        self.cancel_kind(TimerKind.PROGRESS)
        self.cancel_kind(TimerKind.CENSOR)
        for slot in self.slots.values():
            slot.enter_view(new_view)
        vc = self.guard.view_change_for(self.epoch, new_view)
        if vc is None:
            assert self.guard.may_sign_view_change(self.epoch, new_view), (self.epoch, new_view)
            vc = self.sign(ViewChange(self.epoch, new_view, self.stable, self.vc_proofs()))
            self.guard.note_view_change(vc)
        self.my_vc = vc
        self.send_signed(vc)
        self.vcs = {v: m for v, m in self.vcs.items() if v >= new_view}
        self.vcs.setdefault(new_view, {})[self.me] = vc
        self.set_timer(TimerKind.RETRANSMIT, 0, self.config.view_timeout_ms)
        self.set_timer(TimerKind.VIEW_CHANGE, new_view, self.backoff_ms())
        self.quorum_seen = False
        self.check_view_change_quorum()

    def vc_proofs(self) -> tuple[Proof, ...]:
        """Our best proof for each height above the stable checkpoint (PBFT's P set)."""
        proofs: list[Proof] = []
        base = self.stable.height
        for height in range(base + 1, base + self.config.log_size + 1):
            if not self.in_epoch(height):
                break
            cert = self.certs.get(height) if height <= self.committed else None
            if cert is not None:
                proofs.append(
                    Proof(
                        ProofKind.COMMITTED, height, cert.view, cert.block_id, b"", cert.signatures
                    )
                )
                continue
            slot = self.slots.get(height)
            if slot is not None and slot.prepared is not None:
                proofs.append(slot.prepared)
        return tuple(proofs)

    def on_view_change(self, vc: ViewChange, verified: bool) -> None:
        if vc.sender == self.me:
            return
        if vc.epoch != self.epoch:
            if vc.epoch < self.epoch:
                self.count("old_epoch")
                old = self.app.validators_at(vc.epoch)  # it may have left the set since
                if (
                    old is not None
                    and old.index_of(vc.sender) is not None
                    and self.verify(vc, verified)
                ):
                    self.help(vc.sender, vc.stable.height, force=True)
            else:
                self.note_ahead(vc, max(vc.epoch - 1, vc.stable.height), verified)
            return
        if not self.is_member(vc.sender):
            self.count("non_member")
            return
        if vc.view < self.view or (vc.view == self.view and not self.in_vc):
            # The sender is behind: give it what it needs to rejoin (verified first, so a
            # forged sender cannot make us send to arbitrary peers).
            if self.verify(vc, verified):
                self.count("stale_view_change")
                self.help(vc.sender, vc.stable.height, force=True)
                if self.new_view_msg is not None and not self.in_vc and vc.view == self.view:
                    # Rate-limited like ``help``: a replayed VIEW-CHANGE must not make us
                    # resend a large NEW-VIEW every time.
                    asks = self.nv_asks.get(vc.sender, 0)
                    self.nv_asks[vc.sender] = asks + 1
                    if asks % 4 == 0:
                        self.emit(Send(vc.sender, self.new_view_msg))
            return
        if vc.view > self.view + self.config.max_views_ahead:
            self.count("view_too_far")
            return
        prior = self.vcs.get(vc.view, {}).get(vc.sender)
        if prior is not None:
            if prior != vc and self.verify(vc, verified):
                self.report(prior, vc)
            return
        if not self.verify(vc, verified):
            return
        reason = check_view_change(vc, self.epoch, self.vset, self.ctx)
        if reason is not None:
            self.count(f"bad_view_change: {reason}")
            return
        if vc.stable.height > self.low:
            self.adopt_stable(vc.stable)
        elif vc.stable.height < self.low:
            self.help(vc.sender, vc.stable.height, force=True)
        self.vcs.setdefault(vc.view, {})[vc.sender] = vc
        self.join_higher_views()
        if self.in_vc:
            self.check_view_change_quorum()

    def note_higher_view(self, message: Message, view: int, verified: bool) -> None:
        """A member voted (PRE-PREPARE, PREPARE, COMMIT) in a view above ours.

        A replica that missed a view change -- it was down, e.g. a primary restarted
        after the others replaced it -- would otherwise follow the new view's commit
        certificates for ever without voting: it has nothing to time out on while it
        commits. Votes in view w from f + 1 members prove an honest replica is in w,
        so we join w like on f + 1 VIEW-CHANGEs; the members in w answer our
        VIEW-CHANGE(w) with their NEW-VIEW. Moving *up* is always safe (a
        VIEW-CHANGE only promises to leave the lower views); one Byzantine member
        alone cannot make us move.
        """
        sender = message.sender
        if sender == self.me or self.views_voted.get(sender, -1) >= view:
            return
        if not self.is_member(sender) or not self.verify(message, verified):
            return
        self.views_voted[sender] = view
        self.join_higher_views()

    def join_higher_views(self) -> None:
        """f + 1 validators moved past our view: follow them (TOCS'02 §4.5.2).

        Their VIEW-CHANGEs count, and so do their votes in a higher view
        (``note_higher_view``)."""
        best: dict[bytes, int] = {
            s: v for s, v in self.views_voted.items() if v > self.view and s != self.me
        }
        for view, by_sender in self.vcs.items():
            if view > self.view:
                for sender in by_sender:
                    if sender != self.me:
                        best[sender] = max(best.get(sender, 0), view)
        target = kth_highest(best.values(), weak_quorum(self.vset.n))
        if target is not None and target > self.view:
            self.count("joined_higher_view")
            self.start_view_change(target)

    def check_view_change_quorum(self) -> None:
        view = self.view
        got = self.vcs.get(view, {})
        if len(got) < self.vset.quorum:
            return
        if not self.quorum_seen:  # the new primary gets a full timeout from here (§4.5.2)
            self.quorum_seen = True
            self.set_timer(TimerKind.VIEW_CHANGE, view, self.backoff_ms())
        if self.primary(view) != self.me or self.guard.new_view_matches(self.epoch, view):
            return
        chosen = tuple(sorted(got.values(), key=lambda m: m.sender))
        plan = select_reproposals(chosen)
        nv = self.sign(NewView(self.epoch, view, chosen))
        self.guard.note_new_view(nv)
        self.count("new_views_sent")
        self.send_signed(nv)
        self.install(nv, plan)

    def on_view_change_timeout(self) -> None:
        if self.quorum_seen:
            self.count("view_change_timeouts")  # the new primary failed: next view
            self.start_view_change(self.view + 1)
        else:
            self.set_timer(TimerKind.VIEW_CHANGE, self.view, self.backoff_ms())

    def on_new_view(self, nv: NewView, verified: bool) -> None:
        if nv.epoch != self.epoch:
            if nv.epoch > self.epoch:
                self.note_ahead(nv, nv.epoch - 1, verified)
            return
        if nv.view < self.view or (nv.view == self.view and not self.in_vc):
            self.count("stale_new_view")
            return
        if not self.verify(nv, verified):
            return

        def known(vc: ViewChange) -> bool:
            return self.vcs.get(vc.view, {}).get(vc.sender) == vc

        plan = check_new_view(nv, self.epoch, self.vset, self.ctx, known)
        if isinstance(plan, str):
            self.count(f"bad_new_view: {plan}")
            return
        self.guard.note_new_view(nv)
        self.install(nv, plan)

    def install(self, nv: NewView, plan: NewViewPlan) -> None:
        """Enter ``nv.view``: prepare the re-proposals, let the primary propose above them."""
        view = nv.view
        self.count("views_installed")
        self.view, self.in_vc, self.new_view_msg = view, False, nv
        self.stalls = 0
        self.cancel_kind(TimerKind.VIEW_CHANGE)
        self.cancel_timer(TimerKind.RETRANSMIT, 0)
        self.vcs = {v: m for v, m in self.vcs.items() if v > view}
        if plan.base.height > self.low:
            self.adopt_stable(plan.base)
        for slot in self.slots.values():
            slot.enter_view(view)
        self.requested.clear()
        for entry in plan.reproposals:
            if entry.height <= self.low:
                continue
            known = self.committed_ids.get(entry.height) if entry.height <= self.committed else None
            if known is not None and known != entry.block_id:
                # Only possible with more than f faulty validators; never vote against
                # our own commit, and let the external checker see the disagreement.
                self.count("reproposal_conflicts_commit")
                break
            slot = self.slot(entry.height)
            slot.pending = None
            slot.pre_prepare = None
            self.accept(slot, entry.block_id, entry.parent_id)
        self.fresh_from = plan.fresh_from
        self.try_accept(self.fresh_from)
