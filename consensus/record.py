"""The signing record: what must survive a crash so a replica never equivocates.

Owns ``SigningRecord`` (the durable value, with canonical encoding) and
``SigningGuard`` (the in-memory rule that every signature passes through).

PBFT assumes non-faulty replicas keep their log across crashes (Castro & Liskov,
TOCS'02 §4.1 "messages are logged"); we keep only what safety needs:

- ``votes``: for every height above the stable checkpoint and each vote kind
  (PRE-PREPARE, PREPARE, COMMIT), the last (view, block id, parent id) signed.
  A vote that conflicts with an entry for the same (height, view), or is for an older
  view than the entry, is refused: a restarted replica never double-signs.
- ``proofs``: the prepared certificate behind every COMMIT we signed above the stable
  checkpoint. The view-change safety argument (docs/CONSENSUS.md §View change) needs
  every member of a commit quorum to report that certificate in later view changes;
  a replica that forgot it on restart would break the quorum-intersection argument.
- ``epoch``/``view`` and the last few VIEW-CHANGEs we signed: after a restart we
  resend the identical VIEW-CHANGE instead of signing a second one for the view, and
  a replica still changing to an older view can get our VIEW-CHANGE for that view
  (helping it reach the quorum PBFT's liveness needs, even if it forgot ours).
- ``new_view``: the NEW-VIEW we installed last (ours or the primary's), so a restart
  can rebuild the re-proposals of the current view instead of guessing.
- ``stable``: the latest stable checkpoint (the low watermark and its proof), and our
  own CHECKPOINTs above it: the window cannot move past a checkpoint until a quorum
  signed it, so a replica that crashed after signing must be able to resend it
  (found by the simulator: two restarts lost two signatures and froze the window).

Rule: the replica emits ``Persist(guard.snapshot())`` before releasing any message
signed since the previous snapshot (``consensus.replica`` does this at the end of
each step). The record is O(log size) in size and pruned at each stable checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consensus.messages import (
    MAX_PROOFS,
    Checkpoint,
    CheckpointProof,
    Kind,
    NewView,
    Proof,
    ViewChange,
    decode_message,
)
from ledger.codec import as_bytes, as_hash, as_int, as_list, decode, encode, fields
from ledger.errors import DecodeError

_VOTE_KINDS = (Kind.PRE_PREPARE, Kind.PREPARE, Kind.COMMIT)
RECENT_VIEW_CHANGES = 4
MAX_RECORD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class VoteEntry:
    """The last vote of ``kind`` this replica signed at ``height``."""

    height: int
    kind: Kind
    view: int
    block_id: bytes
    parent_id: bytes

    def to_wire(self) -> list[Any]:
        return [self.height, int(self.kind), self.view, self.block_id, self.parent_id]

    @classmethod
    def from_wire(cls, obj: Any) -> VoteEntry:
        f = fields(obj, 5, "vote_entry")
        kind = Kind(as_int(f[1], "vote_entry.kind", 1, 3))
        return cls(
            as_int(f[0], "vote_entry.height", 1),
            kind,
            as_int(f[2], "vote_entry.view"),
            as_hash(f[3], "vote_entry.block_id"),
            as_bytes(f[4], "vote_entry.parent_id", max_size=32),
        )


@dataclass(frozen=True)
class SigningRecord:
    """The durable safety state of one replica (see the module docstring)."""

    epoch: int
    view: int
    view_changes: tuple[ViewChange, ...]  # the most recent last
    new_view: NewView | None
    votes: tuple[VoteEntry, ...]
    proofs: tuple[Proof, ...]
    stable: CheckpointProof | None
    checkpoints: tuple[Checkpoint, ...] = ()

    def to_wire(self) -> list[Any]:
        return [
            self.epoch,
            self.view,
            [vc.encoded for vc in self.view_changes],
            [self.new_view.encoded] if self.new_view else [],
            [v.to_wire() for v in self.votes],
            [p.to_wire() for p in self.proofs],
            [self.stable.to_wire()] if self.stable else [],
            [cp.encoded for cp in self.checkpoints],
        ]

    def encode(self) -> bytes:
        return encode(self.to_wire())

    @classmethod
    def decode(cls, data: bytes) -> SigningRecord:
        f = fields(decode(data, MAX_RECORD_BYTES), 8, "signing_record")

        def opt(value: Any, name: str) -> Any:
            items = as_list(value, name, 1)
            return items[0] if items else None

        nv_raw, cp_raw = opt(f[3], "nv"), opt(f[6], "stable")
        vcs = tuple(
            decode_message(as_bytes(v, "vc", max_size=MAX_RECORD_BYTES))
            for v in as_list(f[2], "view_changes", RECENT_VIEW_CHANGES)
        )
        nv = decode_message(as_bytes(nv_raw, "nv", max_size=MAX_RECORD_BYTES)) if nv_raw else None
        if not all(isinstance(vc, ViewChange) for vc in vcs):
            raise DecodeError("signing_record.view_changes: not VIEW-CHANGE messages")
        if nv is not None and not isinstance(nv, NewView):
            raise DecodeError("signing_record.new_view is not a NEW-VIEW")
        cps = tuple(
            decode_message(as_bytes(c, "cp", max_size=4096))
            for c in as_list(f[7], "checkpoints", MAX_PROOFS)
        )
        if not all(isinstance(cp, Checkpoint) for cp in cps):
            raise DecodeError("signing_record.checkpoints: not CHECKPOINT messages")
        return cls(
            as_int(f[0], "epoch", 1),
            as_int(f[1], "view"),
            vcs,  # type: ignore[arg-type]
            nv,
            tuple(VoteEntry.from_wire(v) for v in as_list(f[4], "votes", 3 * MAX_PROOFS)),
            tuple(Proof.from_wire(p) for p in as_list(f[5], "proofs", MAX_PROOFS)),
            CheckpointProof.from_wire(cp_raw) if cp_raw is not None else None,
            cps,  # type: ignore[arg-type]
        )


class SigningGuard:
    """The mutable record plus the rule every signature must pass.

    ``allow_vote`` both checks and records; callers sign only if it returns True.
    ``dirty`` is set whenever something that must be persisted changed.
    """

    def __init__(self, record: SigningRecord | None = None) -> None:
        self.epoch = 1
        self.view = 0
        self.view_changes: tuple[ViewChange, ...] = ()
        self.new_view: NewView | None = None
        self.votes: dict[tuple[int, Kind], VoteEntry] = {}
        self.proofs: dict[int, Proof] = {}
        self.stable: CheckpointProof | None = None
        self.checkpoints: dict[int, Checkpoint] = {}
        self.dirty = False
        if record is not None:
            self.epoch, self.view = record.epoch, record.view
            self.view_changes, self.new_view = record.view_changes, record.new_view
            self.votes = {(v.height, v.kind): v for v in record.votes}
            self.proofs = {p.height: p for p in record.proofs}
            self.stable = record.stable
            self.checkpoints = {cp.height: cp for cp in record.checkpoints}

    # -- votes ---------------------------------------------------------------

    def allow_vote(
        self, kind: Kind, height: int, view: int, block_id: bytes, parent_id: bytes
    ) -> bool:
        """True (and recorded) iff signing this vote cannot conflict with an earlier one."""
        assert kind in _VOTE_KINDS, kind
        prior = self.votes.get((height, kind))
        if prior is not None:
            if prior.view > view:
                return False
            if prior.view == view:
                return prior.block_id == block_id and prior.parent_id == parent_id
        self.votes[(height, kind)] = VoteEntry(height, kind, view, block_id, parent_id)
        self.dirty = True
        return True

    def has_vote(self, kind: Kind, height: int, view: int) -> bool:
        prior = self.votes.get((height, kind))
        return prior is not None and prior.view == view

    def note_commit_proof(self, proof: Proof) -> None:
        """Keep the prepared certificate that justifies a COMMIT we are about to sign."""
        if self.proofs.get(proof.height) != proof:
            self.proofs[proof.height] = proof
            self.dirty = True

    # -- views ----------------------------------------------------------------

    def enter(self, epoch: int, view: int) -> None:
        if (epoch, view) > (self.epoch, self.view):
            self.epoch, self.view = epoch, view
            self.dirty = True

    @property
    def view_change(self) -> ViewChange | None:
        return self.view_changes[-1] if self.view_changes else None

    def view_change_for(self, epoch: int, view: int) -> ViewChange | None:
        """The VIEW-CHANGE already signed for (epoch, view), to resend instead of re-signing."""
        for vc in self.view_changes:
            if vc.epoch == epoch and vc.view == view:
                return vc
        return None

    def may_sign_view_change(self, epoch: int, view: int) -> bool:
        """A new VIEW-CHANGE is only ever for a view above everything signed so far."""
        return (epoch, view) > (self.epoch, self.view)

    def new_view_matches(self, epoch: int, view: int) -> bool:
        nv = self.new_view
        return nv is not None and nv.epoch == epoch and nv.view == view

    def note_view_change(self, vc: ViewChange) -> None:
        self.enter(vc.epoch, vc.view)
        self.view_changes = (*self.view_changes, vc)[-RECENT_VIEW_CHANGES:]
        self.dirty = True

    def note_new_view(self, nv: NewView) -> None:
        self.enter(nv.epoch, nv.view)
        self.new_view = nv
        self.dirty = True

    # -- checkpoints ----------------------------------------------------------

    def note_stable(self, stable: CheckpointProof) -> None:
        """Adopt a new low watermark and drop everything at or below it."""
        self.stable = stable
        low = stable.height
        self.votes = {k: v for k, v in self.votes.items() if k[0] > low}
        self.proofs = {h: p for h, p in self.proofs.items() if h > low}
        self.checkpoints = {h: c for h, c in self.checkpoints.items() if h > low}
        self.dirty = True

    def note_checkpoint(self, cp: Checkpoint) -> None:
        self.checkpoints[cp.height] = cp
        self.dirty = True

    # -- persistence -----------------------------------------------------------

    def snapshot(self) -> SigningRecord:
        """The current record; clears ``dirty``."""
        self.dirty = False
        return SigningRecord(
            self.epoch,
            self.view,
            self.view_changes,
            self.new_view,
            tuple(self.votes.values()),
            tuple(self.proofs.values()),
            self.stable,
            tuple(self.checkpoints.values()),
        )

    def size(self) -> int:
        return len(self.votes) + len(self.proofs) + len(self.checkpoints)
