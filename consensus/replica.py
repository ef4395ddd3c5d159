"""The PBFT replica: a pure state machine, ``Replica.step(event) -> list[Action]``.

Owns construction/restore, event dispatch, the normal case (Castro & Liskov,
OSDI'99 §4.2, TOCS'02 §4.3: pre-prepare -> prepare -> commit), commit delivery and the
progress/censorship timers. The primary's proposals are in ``consensus.proposals``,
retransmission of votes in ``consensus.retransmit``, view change in
``consensus.viewchange``, checkpoints and catch-up in ``consensus.recovery``.

No I/O: the caller feeds events and executes the returned actions in order (rules in
``consensus.api``). Blocks are opaque payloads; the injected ``App`` validates them.

Normal case for height h in view v (epoch E, set S = validators_at(h)):
1. The primary S[v mod n] emits ``RequestProposal(h, v, parent)`` when h is within
   the pipelining window (h <= last commit + W) and the watermarks (h <= low + L); the
   caller answers ``ProposalReady``; the primary signs PRE-PREPARE and its PREPARE.
2. A backup accepts the first PRE-PREPARE for (h, v) whose parent is the block it
   accepted at h - 1 in v (or committed) and that ``App.validate_proposal`` accepts,
   then signs PREPARE(h, v, id, parent).
3. Prepared = accepted + a quorum of matching PREPAREs. A replica signs COMMIT for
   (h, v, id) once it is prepared in view v at h *and at every uncommitted height
   below h* (the rule the view-change safety argument needs, see ``consensus.certs``).
4. A quorum of COMMITs for (h, v', id) -- any view v' -- is a commit certificate;
   blocks are delivered by ``CommitBlock`` strictly in height order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from consensus.api import (
    Action,
    App,
    Applied,
    BlocksReceived,
    CensorshipSuspected,
    CommitBlock,
    Config,
    Crypto,
    Event,
    MessageReceived,
    PersistBlock,
    ProposalReady,
    Start,
    TimerFired,
    TimerKind,
    TxsDropped,
    TxsPending,
)
from consensus.certs import NewViewPlan, VerifyContext, check_new_view
from consensus.messages import (
    Checkpoint,
    CheckpointProof,
    Commit,
    Kind,
    Message,
    NewView,
    Prepare,
    PrePrepare,
    Proof,
    ProofKind,
    ViewChange,
)
from consensus.proposals import ProposalMixin
from consensus.record import SigningGuard, SigningRecord
from consensus.recovery import RecoveryMixin
from consensus.retransmit import RetransmitMixin
from consensus.state import COMMITS_PER_VALIDATOR, MAX_PAYLOADS_PER_SLOT, Slot
from consensus.viewchange import ViewChangeMixin
from ledger.types import CommitCertificate, ValidatorSet


class Replica(ViewChangeMixin, RecoveryMixin, ProposalMixin, RetransmitMixin):
    """One validator's consensus state machine.

    ``committed_height``/``committed_block_id`` describe the caller's durable chain
    (0 and the genesis id for a new node); ``record`` is the last persisted
    ``SigningRecord`` (None for a new node). After construction, step ``Start()``.
    """

    def __init__(
        self,
        config: Config,
        app: App,
        crypto: Crypto,
        *,
        committed_height: int = 0,
        committed_block_id: bytes | None = None,
        record: SigningRecord | None = None,
        blocks: Iterable[bytes] = (),
    ) -> None:
        self.config, self.app, self.crypto = config, app, crypto
        self.me = crypto.public_key
        self.stats = {}
        self.ctx = VerifyContext(
            config.chain_id, crypto, app, config.genesis_block_id, config.log_size
        )
        self.guard = SigningGuard(record)
        if committed_block_id is None:
            assert committed_height == 0, "committed_block_id is required above genesis"
            committed_block_id = config.genesis_block_id
        self.committed, self.last_block_id = committed_height, committed_block_id
        self.committed_ids = {committed_height: committed_block_id}
        self.certs = {}
        self.applied = committed_height
        self.stable = CheckpointProof(0, config.genesis_block_id, b"", ())
        self.low = 0
        if record is not None and record.stable is not None:
            self.stable, self.low = record.stable, record.stable.height
        self.view, self.in_vc, self.fresh_from = 0, False, 1
        self.new_view_msg = self.my_vc = None
        self.vcs, self.failed_views, self.requested, self.stalls = {}, 0, set(), 0
        self.views_voted = {}
        self.quorum_seen = False
        self.answered = {}
        self._epoch_checked = (-1, -1, -1)
        self.slots, self.top_seen = {}, 0
        self.cps, self.own_cps, self.ahead, self.helped = {}, {}, {}, {}
        self.stale_from: dict[bytes, tuple[int, int]] = {}  # signer -> (height, copies)
        self.peer: bytes | None = None  # the connection the current message came from
        self.nv_asks: dict[bytes, int] = {}  # stale VIEW-CHANGEs answered with our NEW-VIEW
        self.fetch, self.fetch_attempt, self.fetched, self.gap_tried = None, 0, {}, -1
        self.catch_up_due = False
        self.pending_txs, self.tx_gen, self.evidence_keys = {}, 0, {}
        self.block_due = False
        self.timers, self._out, self._signed_out = set(), [], []
        epoch = app.epoch_start(committed_height + 1)
        validators = app.validators_at(committed_height + 1)
        assert epoch is not None and validators is not None, "App must know the next height's set"
        self.enter_epoch(epoch, validators, view=0)
        if record is not None and record.epoch == epoch:
            self._restore(record)
        for cp in record.checkpoints if record is not None else ():
            if cp.height > self.low:  # signed before the crash, not yet stable: resend
                self.own_cps[cp.height] = cp
                self.cps.setdefault(self.me, {})[cp.height] = cp
        for payload in blocks:  # blocks persisted with PersistBlock before a crash
            info = app.block_info(payload)
            if info is not None and self.low < info.height <= self.low + config.log_size:
                slot = self.slot(info.height)
                self.keep_payload(slot, info.block_id, payload, durable=False)
                slot.durable.add(info.block_id)  # it came from our own disk
        self.view_reported = self.view  # a restored view is not a change

    def _restore(self, record: SigningRecord) -> None:
        """Resume in the recorded view without ever contradicting what we signed."""
        self.view = record.view
        self.fresh_from = 1 << 62  # unknown re-proposals: propose/accept nothing fresh
        if record.view == 0:
            self.fresh_from = max(self.low, self.epoch - 1) + 1
        for proof in record.proofs:
            if self.low < proof.height <= self.low + self.config.log_size:
                self.slot(proof.height).prepared = proof
        last_vc = record.view_changes[-1] if record.view_changes else None
        if last_vc is not None and last_vc.view == record.view:
            self.in_vc, self.my_vc = True, last_vc
            self.vcs = {record.view: {self.me: last_vc}}
            self.set_timer(TimerKind.VIEW_CHANGE, record.view, self.backoff_ms())
        elif record.new_view is not None and record.new_view.view == record.view:
            plan = check_new_view(record.new_view, self.epoch, self.vset, self.ctx, lambda vc: True)
            if isinstance(plan, NewViewPlan):
                self.install(record.new_view, plan)

    def enter_epoch(self, epoch: int, validators: ValidatorSet, view: int) -> None:
        self.epoch, self.vset = epoch, validators
        self.me_index = validators.index_of(self.me)
        self._epoch_ok_upto = epoch - 1
        self.view, self.in_vc, self.fresh_from = view, False, max(self.low, epoch - 1) + 1
        self.new_view_msg = self.my_vc = None
        self.vcs, self.ahead, self.views_voted = {}, {}, {}
        self.requested.clear()
        self.cancel_kind(TimerKind.VIEW_CHANGE)
        self.cancel_timer(TimerKind.RETRANSMIT, 0)
        self.count("epochs_entered")

    # -- the one entry point --------------------------------------------------------

    def step(self, event: Event) -> list[Action]:
        """Apply one event; return the actions to execute, in order."""
        if isinstance(event, MessageReceived):
            self.peer = event.peer
            self.on_message(event.message, event.verified)
            self.peer = None
        elif isinstance(event, TimerFired):
            self.on_timer(event.kind, event.key)
        elif isinstance(event, ProposalReady):
            self.on_proposal(event)
        elif isinstance(event, Applied):
            self.on_applied(event)
        elif isinstance(event, BlocksReceived):
            self.on_blocks(event)
        elif isinstance(event, TxsPending):
            for tx_id in event.tx_ids:
                if len(self.pending_txs) >= self.config.max_pending_txs:
                    self.count("pending_txs_dropped")
                    break
                self.pending_txs.setdefault(tx_id, self.tx_gen)
        elif isinstance(event, TxsDropped):
            for tx_id in event.tx_ids:
                self.pending_txs.pop(tx_id, None)
        elif isinstance(event, Start):
            if self.in_vc and self.my_vc is not None:
                self.send_signed(self.my_vc)
                self.set_timer(TimerKind.RETRANSMIT, 0, self.config.view_timeout_ms)
        else:
            raise TypeError(f"not a consensus event: {event!r}")
        self.pump()
        return self.flush()

    def on_message(self, message: Message, verified: bool) -> None:
        self.count("messages_received")
        if isinstance(message, PrePrepare):
            self.on_pre_prepare(message, verified)
        elif isinstance(message, Prepare):
            self.on_prepare(message, verified)
        elif isinstance(message, Commit):
            self.on_commit(message, verified)
        elif isinstance(message, Checkpoint):
            self.on_checkpoint(message, verified)
        elif isinstance(message, ViewChange):
            self.on_view_change(message, verified)
        elif isinstance(message, NewView):
            self.on_new_view(message, verified)
        else:
            self.count("unknown_message")

    def pump(self) -> None:
        """Everything that may follow any event: deliver, enter epochs, fetch, propose, arm."""
        while True:
            self.deliver()
            key = (self.committed, self.low, self.applied)  # what the answer depends on
            if key == self._epoch_checked or not self.maybe_enter_epoch():
                break
        self._epoch_checked = (self.committed, self.low, self.applied)
        self.try_accept(self.committed + 1)  # a parent may have arrived by catch-up
        self.maybe_fetch()
        self.propose()
        self.arm_timers()

    # -- normal case ------------------------------------------------------------------

    def window_check(self, message: Message, height: int, view: int, verified: bool) -> bool:
        """Common filters for PRE-PREPARE / PREPARE: window, epoch, member, view, signature."""
        if height <= self.low:
            self.count("stale")
            signers = self.app.validators_at(height)
            if (
                signers is not None
                and signers.index_of(message.sender) is not None
                and self.verify(message, verified)
            ):
                self.help(message.sender, height)
            return False
        if height > self.low + self.config.log_size or not self.in_epoch(height):
            self.count("beyond_window")
            self.note_ahead(message, height, verified)
            return False
        if not self.is_member(message.sender):
            self.count("non_member")
            return False
        if view != self.view:
            self.count("wrong_view")
            if view > self.view:
                self.note_higher_view(message, view, verified)
            return False
        return self.verify(message, verified)

    def on_pre_prepare(self, pp: PrePrepare, verified: bool) -> None:
        if pp.view != self.view:
            self.keep_other_view_payload(pp, verified)
        if not self.window_check(pp, pp.height, pp.view, verified):
            return
        if pp.sender != self.primary(pp.view):
            self.count("not_primary")
            return
        slot = self.slot(pp.height)
        slot.enter_view(self.view)
        for prior in (slot.pre_prepare, slot.pending):
            if prior is not None:
                if prior == pp:
                    self.answer_retransmission(pp.sender, slot)
                else:
                    self.report(prior, pp)  # an equivocating primary
                return
        if not self.in_vc and pp.height < self.fresh_from:
            self.count("pre_prepare_for_reproposal")
            return
        slot.pending = pp
        # A proposal is pending work (one Byzantine member's votes are not: they must
        # not be able to start view changes on their own).
        self.top_seen = max(self.top_seen, pp.height)
        self.try_accept(pp.height)

    def keep_other_view_payload(self, pp: PrePrepare, verified: bool) -> None:
        """Keep the block of a proposal from a view we are not in, without voting.

        A replica left behind in a view change follows by commit certificates; keeping
        the payload (keyed by its real id, so a lie cannot match a certificate) spares
        it a fetch per height.
        """
        h = pp.height
        if not (self.low < h <= self.low + self.config.log_size and self.in_epoch(h)):
            return
        if pp.sender != self.primary(pp.view) or not self.verify(pp, verified):
            return
        info = self.app.block_info(pp.payload)
        if info is not None and info.block_id == pp.block_id and info.height == h:
            self.keep_payload(self.slot(h), pp.block_id, pp.payload, durable=False)
            self.count("payload_from_other_view")

    def try_accept(self, height: int) -> None:
        """Accept buffered PRE-PREPAREs from ``height`` upward whose parents are known."""
        while not self.in_vc:
            slot = self.slots.get(height)
            if slot is None or slot.view != self.view or slot.pending is None:
                return
            pp, slot.pending = slot.pending, None
            if slot.accepted is not None or height < self.fresh_from:
                return
            parent = self.block_at(height - 1)
            if parent is None:
                slot.pending = pp  # wait until the parent is accepted
                return
            slot.pre_prepare = pp
            if pp.parent_id != parent:
                self.count("bad_parent")
                return
            if height <= self.committed and pp.block_id != self.committed_ids.get(height):
                self.count("conflicts_with_commit")
                return
            if self.app.validate_proposal(height, pp.payload, parent) != pp.block_id:
                self.count("invalid_proposal")
                return
            self.keep_payload(slot, pp.block_id, pp.payload)
            self.accept(slot, pp.block_id, parent)
            height += 1

    def keep_payload(
        self, slot: Slot, block_id: bytes, payload: bytes, durable: bool = True
    ) -> None:
        """Hold a validated payload; make it durable before we vote for it.

        PBFT logs the request with the pre-prepare (TOCS'02 §4.2): a block we prepared
        may be re-proposed by a later NEW-VIEW, and after a crash someone must still
        have its bytes, so ``PersistBlock`` precedes our PREPARE.
        """
        if block_id not in slot.payloads:
            if len(slot.payloads) >= MAX_PAYLOADS_PER_SLOT:  # evict what we never voted for
                spare = [k for k in slot.payloads if k not in slot.durable]
                slot.payloads.pop(spare[0] if spare else next(iter(slot.payloads)))
            slot.payloads[block_id] = payload
        if durable and block_id not in slot.durable:
            slot.durable.add(block_id)
            self.emit(PersistBlock(slot.height, block_id, payload))

    def accept(self, slot: Slot, block_id: bytes, parent_id: bytes) -> None:
        """Pre-prepared: sign our PREPARE (if a validator and the guard agrees)."""
        slot.enter_view(self.view)
        slot.accepted = (block_id, parent_id)
        self.top_seen = max(self.top_seen, slot.height)
        if self.me_index is not None:
            if self.guard.allow_vote(Kind.PREPARE, slot.height, self.view, block_id, parent_id):
                prepare = self.sign(Prepare(slot.height, self.view, block_id, parent_id))
                slot.prepares[self.me] = prepare
                self.send_signed(prepare)
            else:
                self.count("guard_refused")
        self.check_prepared(slot)

    def on_prepare(self, prepare: Prepare, verified: bool) -> None:
        if not self.window_check(prepare, prepare.height, prepare.view, verified):
            return
        slot = self.slot(prepare.height)
        slot.enter_view(self.view)
        prior = slot.prepares.get(prepare.sender)
        if prior is not None:
            if prior == prepare:
                self.answer_retransmission(prepare.sender, slot)
            else:
                self.report(prior, prepare)
            return
        slot.prepares[prepare.sender] = prepare
        self.check_prepared(slot)

    def check_prepared(self, slot: Slot) -> None:
        if slot.accepted is None or (slot.prepared is not None and slot.prepared.view == self.view):
            return
        block_id, parent_id = slot.accepted
        sigs = [
            (self.vset.index_of(s), p.signature)
            for s, p in slot.prepares.items()
            if p.block_id == block_id and p.parent_id == parent_id
        ]
        if len(sigs) < self.vote_quorum():
            return
        slot.prepared = Proof(
            ProofKind.PREPARED,
            slot.height,
            self.view,
            block_id,
            parent_id,
            tuple(sorted(sigs)),  # type: ignore[arg-type]
        )
        self.try_commit()

    def try_commit(self) -> None:
        """Sign COMMITs for the prepared prefix of the current view (module docstring, 3)."""
        if self.in_vc or self.me_index is None:
            return
        for height in range(max(self.low, self.epoch - 1) + 1, self.low + self.config.log_size + 1):
            slot = self.slots.get(height)
            prepared = slot.prepared if slot is not None else None
            if prepared is None or prepared.view != self.view:
                if height <= self.committed:
                    continue
                return
            assert slot is not None
            if slot.commit_view == self.view:
                continue
            if not self.guard.allow_vote(Kind.COMMIT, height, self.view, prepared.block_id, b""):
                self.count("guard_refused")
                return
            self.guard.note_commit_proof(prepared)
            slot.commit_view = self.view
            commit = self.sign(Commit(height, self.view, prepared.block_id))
            self.send_signed(commit)
            self.add_commit(slot, commit)

    def on_commit(self, commit: Commit, verified: bool) -> None:
        height = commit.height
        if height <= self.low:
            self.count("stale")
            return
        if height > self.low + self.config.log_size or not self.in_epoch(height):
            self.count("beyond_window")
            self.note_ahead(commit, height, verified)
            return
        if not self.is_member(commit.sender):
            self.count("non_member")
            return
        slot = self.slot(height)
        prior = slot.commits.get((commit.view, commit.sender))
        if prior is not None:
            if prior == commit:
                self.answer_retransmission(commit.sender, slot)
            elif self.verify(commit, verified):
                self.report(prior, commit)
            return
        if not self.verify(commit, verified):
            return
        self.add_commit(slot, commit)
        if commit.view > self.view:
            self.note_higher_view(commit, commit.view, verified=True)

    def add_commit(self, slot: Slot, commit: Commit) -> None:
        slot.commits[(commit.view, commit.sender)] = commit
        if len(slot.commits) > COMMITS_PER_VALIDATOR * self.vset.n:
            oldest = min(k for k in slot.commits if k[0] != self.view)
            del slot.commits[oldest]
        if slot.cert is not None:
            return
        sigs = [
            (self.vset.index_of(s), c.signature)
            for (v, s), c in slot.commits.items()
            if v == commit.view and c.block_id == commit.block_id
        ]
        if len(sigs) >= self.vote_quorum():
            slot.cert = CommitCertificate(
                slot.height,
                commit.view,
                commit.block_id,
                tuple(sorted(sigs)),  # type: ignore[arg-type]
            )
            self.top_seen = max(self.top_seen, slot.height)

    # -- delivery ----------------------------------------------------------------------

    def deliver(self) -> None:
        """CommitBlock for every height above the last commit that is certified and known."""
        while True:
            height = self.committed + 1
            slot = self.slots.get(height)
            if slot is not None and slot.cert is not None:
                payload = slot.payloads.get(slot.cert.block_id)
                if payload is not None:
                    info = self.app.block_info(payload)
                    if info is None or info.parent_id != self.last_block_id:
                        self.count("certified_block_off_chain")  # > f faulty; never deliver
                        return
                    self.commit(height, payload, slot.cert)
                    continue
            item = self.take_fetched()
            if item is None:
                return
            self.commit(height, item.payload, item.certificate)

    def commit(self, height: int, payload: bytes, cert: CommitCertificate) -> None:
        assert height == self.committed + 1 and cert.height == height, (height, self.committed)
        self.emit(CommitBlock(height, payload, cert))
        self.count("commits")
        self.committed, self.last_block_id = height, cert.block_id
        self.committed_ids[height] = cert.block_id
        self.certs[height] = cert
        self.fetched.pop(height, None)
        self.prune_chain()
        for tx_id in self.app.tx_ids(payload):
            self.pending_txs.pop(tx_id, None)
        self.block_due = False
        self.failed_views = self.stalls = 0  # progress: timeouts reset (PBFT §4.5.2)
        self.timers.discard((TimerKind.PROGRESS, 0))  # re-armed afresh by arm_timers

    # -- timers --------------------------------------------------------------------------

    def has_work(self) -> bool:
        if not self.in_epoch(self.committed + 1):
            return False  # waiting for the epoch boundary checkpoint, not for a primary
        return bool(self.pending_txs) or self.block_due or self.top_seen > self.committed

    def arm_timers(self) -> None:
        voting = self.me_index is not None and not self.in_vc
        if voting and self.has_work():
            if (TimerKind.PROGRESS, 0) not in self.timers:
                # Fires twice per timeout: first retransmit, then change view.
                self.set_timer(TimerKind.PROGRESS, 0, max(1, self.backoff_ms() // 2))
        else:
            self.cancel_timer(TimerKind.PROGRESS, 0)
        if (
            voting
            and self.pending_txs
            and (TimerKind.CENSOR, self.tx_gen - 1) not in self.timers
            and self.has_work()
        ):
            # Keyed by generation: it fires for the transactions known before it was set.
            self.cancel_kind(TimerKind.CENSOR)
            self.set_timer(TimerKind.CENSOR, self.tx_gen, self.config.censor_timeout_ms)
            self.tx_gen += 1
        beat = self.config.heartbeat_ms
        if beat and not self.block_due and (TimerKind.HEARTBEAT, self.committed) not in self.timers:
            # PBFT changes view only when work is pending; an idle chain whose primary
            # died would stop for good. A heartbeat block overdue counts as work.
            self.cancel_kind(TimerKind.HEARTBEAT)
            self.set_timer(TimerKind.HEARTBEAT, self.committed, 2 * beat)
        retransmit = (self.in_vc and self.my_vc is not None) or bool(self.own_cps)
        if retransmit and (TimerKind.RETRANSMIT, 0) not in self.timers:
            self.set_timer(TimerKind.RETRANSMIT, 0, self.config.view_timeout_ms)

    def on_timer(self, kind: TimerKind, key: int) -> None:
        if (kind, key) not in self.timers:
            self.count("stale_timer")
            return
        self.timers.discard((kind, key))
        if kind is TimerKind.PROGRESS:
            if self.in_vc:
                return
            self.stalls += 1
            if self.stalls == 1:
                self.retransmit_votes()
            elif self.behind():
                # Lagging, not stalled: the group commits on without us. A view change
                # now would take us alone into the next view, where we could not vote
                # again until the others change view too (``consensus.recovery.behind``).
                self.count("progress_timeouts_behind")
            elif not self.fetch_gap():
                self.count("progress_timeouts")
                self.start_view_change(self.view + 1)
        elif kind is TimerKind.CENSOR:
            oldest = next(iter(self.pending_txs.values()), None)
            if self.behind():
                self.count("censor_timeouts_behind")  # our transactions may be in blocks we lack
            elif not self.in_vc and oldest is not None and oldest <= key:
                self.count("censorship_timeouts")
                first = tuple(itertools.islice(self.pending_txs, 3))
                self.emit(CensorshipSuspected(self.view + 1, len(self.pending_txs), first))
                self.start_view_change(self.view + 1)
        elif kind is TimerKind.HEARTBEAT:
            self.block_due = key == self.committed
        elif kind is TimerKind.VIEW_CHANGE:
            if self.in_vc and key == self.view:
                self.on_view_change_timeout()
        elif kind is TimerKind.RETRANSMIT:
            if self.in_vc and self.my_vc is not None:
                for vc in self.guard.view_changes:  # older ones help replicas behind us
                    if vc.epoch == self.epoch and vc.view <= self.view:
                        self.send_signed(vc)
                self.announce_epoch_start()
            for cp in self.own_cps.values():
                self.send_signed(cp)
        elif kind is TimerKind.FETCH:
            self.on_fetch_timeout(key)
