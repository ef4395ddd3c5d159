"""Replica state shared by the protocol phases, and the helpers every phase uses.

Owns ``Slot`` (everything known about one height in the watermark window) and
``ReplicaBase`` (the fields of a replica plus emit/sign/timer/verification helpers).
The phases live in ``consensus.replica`` (normal case), ``consensus.viewchange``
(view change, new view) and ``consensus.recovery`` (checkpoints, catch-up); they are
mixins over this base so that each file stays one topic.

Rules:
- Output goes through ``emit`` (actions executed in order) or, for messages this
  replica signed, ``send_signed`` -- queued until the end of the step, where one
  ``Persist`` of the signing record precedes them all (persist before send).
- A peer's bad input is counted in ``stats`` and dropped; ``AssertionError`` is
  reserved for our own broken invariants.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from consensus.api import (
    Action,
    App,
    Broadcast,
    CancelTimer,
    CertifiedPayload,
    Config,
    Crypto,
    PeerMisbehaved,
    Persist,
    ReportEvidence,
    Send,
    SetTimer,
    TimerKind,
    ViewEntered,
)
from consensus.certs import VerifyContext, verify_signed
from consensus.evidence import make_evidence
from consensus.messages import (
    Checkpoint,
    CheckpointProof,
    Commit,
    Message,
    NewView,
    Prepare,
    PrePrepare,
    Proof,
    ViewChange,
    slot_key,
)
from consensus.quorum import primary_key
from consensus.record import SigningGuard
from ledger.types import CommitCertificate, ValidatorSet

#: Bound on distinct payloads kept per height (one per view at most, in practice).
MAX_PAYLOADS_PER_SLOT = 4
#: Bound on commit votes kept per height, as a multiple of n (several views' worth).
COMMITS_PER_VALIDATOR = 3
#: Checkpoint messages kept per sender (PBFT keeps those above the low watermark).
CHECKPOINTS_PER_SENDER = 4
MAX_EVIDENCE_KEYS = 4096


@dataclass
class Slot:
    """One height in the window (PBFT's log entry for a sequence number).

    ``view`` is the view that the normal-case fields (``pre_prepare``..``prepares``)
    belong to; they are reset when the replica moves to a later view. ``prepared``,
    ``commits``, ``cert`` and ``payloads`` survive view changes.
    """

    height: int
    view: int = -1
    pre_prepare: PrePrepare | None = None  # the first pre-prepare seen in ``view``
    pending: PrePrepare | None = None  # waiting for its parent to be accepted
    accepted: tuple[bytes, bytes] | None = None  # (block_id, parent_id) pre-prepared
    prepares: dict[bytes, Prepare] = field(default_factory=dict)
    prepared: Proof | None = None  # highest-view prepared certificate
    commit_view: int = -1  # view of the COMMIT we signed
    commits: dict[tuple[int, bytes], Commit] = field(default_factory=dict)
    cert: CommitCertificate | None = None
    payloads: dict[bytes, bytes] = field(default_factory=dict)
    durable: set[bytes] = field(default_factory=set)  # payloads we emitted PersistBlock for

    def enter_view(self, view: int) -> None:
        if self.view < view:
            self.view = view
            self.pre_prepare = self.pending = self.accepted = None
            self.prepares = {}


class ReplicaBase:
    """Fields and helpers; see ``consensus.replica.Replica`` for the public API."""

    config: Config
    app: App
    crypto: Crypto
    me: bytes
    stats: dict[str, int]
    guard: SigningGuard
    ctx: VerifyContext
    # chain
    committed: int
    last_block_id: bytes
    committed_ids: dict[int, bytes]
    certs: dict[int, CommitCertificate]
    applied: int
    # watermarks and epoch
    low: int
    stable: CheckpointProof
    epoch: int
    vset: ValidatorSet
    me_index: int | None
    _epoch_ok_upto: int
    _epoch_checked: tuple[int, int, int]
    # views
    view: int
    view_reported: int  # the last view announced with ViewEntered
    in_vc: bool
    fresh_from: int
    new_view_msg: NewView | None
    my_vc: ViewChange | None
    vcs: dict[int, dict[bytes, ViewChange]]
    views_voted: dict[bytes, int]  # member -> highest view above ours it voted in
    failed_views: int
    quorum_seen: bool
    stalls: int
    answered: dict[tuple[bytes, int], int]
    requested: set[int]
    # log
    slots: dict[int, Slot]
    top_seen: int  # highest height with a proposal from the primary or a certificate
    # checkpoints, catch-up, censorship, accountability
    cps: dict[bytes, dict[int, Checkpoint]]
    own_cps: dict[int, Checkpoint]
    ahead: dict[bytes, int]
    fetch: tuple[bytes, int, int] | None
    fetch_attempt: int
    fetched: dict[int, CertifiedPayload]
    gap_tried: int
    catch_up_due: bool
    helped: dict[bytes, tuple[int, int]]  # peer -> (low we helped it with, requests since)
    stale_from: dict[bytes, tuple[int, int]]
    peer: bytes | None
    nv_asks: dict[bytes, int]
    pending_txs: dict[bytes, int]
    tx_gen: int
    block_due: bool  # no commit for 2 x heartbeat_ms: a heartbeat block is overdue
    evidence_keys: dict[tuple[Any, ...], None]
    timers: set[tuple[TimerKind, int]]
    _out: list[Action]
    _signed_out: list[Action]

    # -- transitions implemented by the phase mixins (declared for cross-calls) -----

    def accept(self, slot: Slot, block_id: bytes, parent_id: bytes) -> None:
        raise NotImplementedError

    def try_accept(self, height: int) -> None:
        raise NotImplementedError

    def keep_payload(
        self, slot: Slot, block_id: bytes, payload: bytes, durable: bool = True
    ) -> None:
        raise NotImplementedError

    def enter_epoch(self, epoch: int, validators: ValidatorSet, view: int) -> None:
        raise NotImplementedError

    def adopt_stable(self, proof: CheckpointProof) -> None:
        raise NotImplementedError

    def help(self, peer: bytes, their_height: int, force: bool = False) -> None:
        raise NotImplementedError

    def deliver(self) -> None:
        raise NotImplementedError

    def announce_epoch_start(self) -> None:
        raise NotImplementedError

    # -- output ---------------------------------------------------------------

    def emit(self, action: Action) -> None:
        self._out.append(action)

    def count(self, what: str, by: int = 1) -> None:
        self.stats[what] = self.stats.get(what, 0) + by

    def send_signed(self, message: Message, to: bytes | None = None) -> None:
        """Queue a message this replica signed; released after the next Persist."""
        self._signed_out.append(Broadcast(message) if to is None else Send(to, message))
        self.count("messages_sent")

    def flush(self) -> list[Action]:
        out = self._out
        if self.view != self.view_reported:
            self.view_reported = self.view
            out.append(ViewEntered(self.view))
        if self.guard.dirty:
            out.append(Persist(self.guard.snapshot()))
        out.extend(self._signed_out)
        self._out, self._signed_out = [], []
        return out

    def sign(self, message: Any) -> Any:
        return message.signed_by(self.crypto, self.config.chain_id)

    # -- timers ---------------------------------------------------------------

    def set_timer(self, kind: TimerKind, key: int, delay_ms: int) -> None:
        self.timers.add((kind, key))
        self.emit(SetTimer(kind, key, delay_ms))

    def cancel_timer(self, kind: TimerKind, key: int) -> None:
        if (kind, key) in self.timers:
            self.timers.discard((kind, key))
            self.emit(CancelTimer(kind, key))

    def cancel_kind(self, kind: TimerKind) -> None:
        for k, key in sorted(self.timers):
            if k is kind:
                self.cancel_timer(k, key)

    def backoff_ms(self) -> int:
        """Base timeout doubled per consecutive failed view (PBFT §4.5.2), capped."""
        exp = min(self.failed_views, self.config.max_backoff_exp)
        return self.config.view_timeout_ms << exp

    # -- membership, epochs, primaries ---------------------------------------------

    def in_epoch(self, height: int) -> bool:
        """``height`` belongs to the current epoch and its validator set is known."""
        if height < self.epoch:
            return False
        if height <= self._epoch_ok_upto:
            return True
        if self.app.epoch_start(height) == self.epoch:
            self._epoch_ok_upto = height  # epochs are contiguous runs of heights
            return True
        return False

    def primary(self, view: int) -> bytes:
        return primary_key(self.vset, view)

    def is_member(self, key: bytes) -> bool:
        return self.vset.index_of(key) is not None

    def verify(self, message: Message, verified: bool) -> bool:
        if verified or verify_signed(message, self.config.chain_id, self.crypto):
            return True
        self.count("bad_signature")
        if self.peer is not None:  # honest peers forward only signatures they checked
            self.emit(PeerMisbehaved(self.peer, "bad_signature"))
        return False

    def vote_quorum(self) -> int:
        """Votes needed for prepared and committed certificates (a test hook)."""
        return self.vset.quorum

    # -- log ------------------------------------------------------------------

    def slot(self, height: int) -> Slot:
        slot = self.slots.get(height)
        if slot is None:
            assert self.low < height <= self.low + self.config.log_size, (height, self.low)
            slot = self.slots[height] = Slot(height)
        return slot

    def block_at(self, height: int) -> bytes | None:
        """The id of the block this replica builds on at ``height`` in the current view."""
        if height == self.committed:
            return self.last_block_id
        if height < self.committed:
            return self.committed_ids.get(height)
        if height == self.low:
            return self.stable.block_id
        slot = self.slots.get(height)
        if slot is not None and slot.view == self.view and slot.accepted is not None:
            return slot.accepted[0]
        return None

    def report(self, a: Message, b: Message) -> None:
        """Equivocation by ``a.sender``: surface it once as evidence."""
        evidence = make_evidence(a, b)
        if evidence is None:
            self.count("duplicate")
            return
        key = (slot_key(a), a.sender)
        if key in self.evidence_keys:
            return
        self.evidence_keys[key] = None
        if len(self.evidence_keys) > MAX_EVIDENCE_KEYS:
            del self.evidence_keys[next(iter(self.evidence_keys))]
        self.count("evidence")
        self.emit(ReportEvidence(evidence))

    def note_ahead(self, message: Message, height: int, verified: bool) -> None:
        """Remember that a member of our set showed us ``height`` (catch-up evidence)."""
        sender = message.sender
        if not self.is_member(sender) or self.ahead.get(sender, -1) >= height:
            return
        if self.verify(message, verified):
            self.ahead[sender] = height

    def memory_sizes(self) -> dict[str, int]:
        """Sizes of every growable structure (for the bounded-memory test)."""
        return {
            "slots": len(self.slots),
            "prepares": sum(len(s.prepares) for s in self.slots.values()),
            "commits": sum(len(s.commits) for s in self.slots.values()),
            "payloads": sum(len(s.payloads) for s in self.slots.values()),
            "view_changes": sum(len(v) for v in self.vcs.values()),
            "views_voted": len(self.views_voted),
            "checkpoints": sum(len(v) for v in self.cps.values()) + len(self.own_cps),
            "committed_ids": len(self.committed_ids),
            "certs": len(self.certs),
            "fetched": len(self.fetched),
            "pending_txs": len(self.pending_txs),
            "ahead": len(self.ahead),
            "helped": len(self.helped),
            "stale_from": len(self.stale_from),
            "evidence_keys": len(self.evidence_keys),
            "timers": len(self.timers),
            "record": self.guard.size(),
            "requested": len(self.requested),
            "answered": len(self.answered),
        }
