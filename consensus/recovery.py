"""Checkpoints, garbage collection, epochs and catch-up.

Owns the parts of the replica that keep it bounded and bring it back when it falls
behind (Castro & Liskov, OSDI'99 §4.3 "garbage collection", TOCS'02 §4.4, §5.3 state
transfer):

- After applying a checkpoint height (every K heights, and the last height of each
  epoch) a validator signs CHECKPOINT(height, block id, state root). A quorum of the
  set in force at that height makes it *stable*: the low watermark moves up and every
  slot, vote, certificate and record entry at or below it is dropped.
- Epochs: the run of heights with one validator set. A replica enters epoch E only
  once the checkpoint at E - 1 is stable, so one view-change never spans two sets.
- Catch-up: a stable checkpoint above our last commit, a commit certificate whose
  block we never received, or f + 1 members showing heights beyond our window make us
  emit ``RequestBlocks``. Blocks that come back are delivered only after their
  certificate verifies against the set in force at their height and they extend our
  chain. One request is outstanding at a time; a timer moves on to the next peer.
- Helping: a peer whose messages show it below our low watermark gets the signed
  CHECKPOINT messages that make up our stable proof, so it can catch up.
"""

from __future__ import annotations

from consensus.api import (
    Applied,
    BlocksReceived,
    Broadcast,
    CertifiedPayload,
    RequestBlocks,
    Send,
    TimerKind,
)
from consensus.certs import verify_commit_certificate
from consensus.messages import Checkpoint, CheckpointProof
from consensus.quorum import kth_highest, weak_quorum
from consensus.state import CHECKPOINTS_PER_SENDER, ReplicaBase
from ledger.types import CertifiedBlock


class RecoveryMixin(ReplicaBase):
    """Checkpoint, GC, epoch and catch-up transitions."""

    # -- checkpoints ------------------------------------------------------------

    def is_checkpoint_height(self, height: int) -> bool:
        if height % self.config.checkpoint_interval == 0:
            return True
        return self.app.epoch_start(height + 1) == height + 1  # last height of an epoch

    def on_applied(self, event: Applied) -> None:
        height = event.height
        self.applied = max(self.applied, height)
        at_low = height == self.low and self.low > 0 and self.stable_lacks(self.me)
        if (height <= self.low and not at_low) or height > self.committed or height in self.own_cps:
            return
        if not self.is_checkpoint_height(height):
            return
        validators = self.app.validators_at(height)
        block_id = self.committed_ids.get(height)
        if validators is None or block_id is None or validators.index_of(self.me) is None:
            return
        cp = self.sign(Checkpoint(height, block_id, event.state_root))
        if at_low:  # stable without us: add our signature to the proof we hand out
            self.extend_stable(cp)
            self.send_signed(cp)
            return
        self.own_cps[height] = cp
        self.guard.note_checkpoint(cp)  # resent after a crash until stable
        self.send_signed(cp)
        self.on_checkpoint(cp, verified=True)

    def stable_lacks(self, key: bytes) -> bool:
        validators = self.app.validators_at(self.low)
        index = None if validators is None else validators.index_of(key)
        return index is not None and all(i != index for i, _ in self.stable.signatures)

    def extend_stable(self, cp: Checkpoint) -> None:
        """Add a late, matching signature to our stable proof.

        The proofs we hand out (``help``, ``announce_epoch_start``) then carry more than a
        bare quorum: a receiver that holds a Byzantine signer's conflicting checkpoint
        for that height cannot use that signer's entry, and needs the others.
        """
        s = self.stable
        validators = self.app.validators_at(s.height)
        index = None if validators is None else validators.index_of(cp.sender)
        if (
            index is None
            or cp.block_id != s.block_id
            or cp.state_root != s.state_root
            or not self.stable_lacks(cp.sender)
        ):
            return
        sigs = tuple(sorted((*s.signatures, (index, cp.signature))))
        self.stable = CheckpointProof(s.height, s.block_id, s.state_root, sigs)

    def on_checkpoint(self, cp: Checkpoint, verified: bool) -> None:
        height = cp.height
        if height <= self.low:
            if cp.sender != self.me:
                # A peer still *re*sending a checkpoint we already hold as stable lacks the
                # proof: help it on its first retransmission (the first copy is usually
                # just late), then on every 16th. Answering every copy caused a storm on
                # a real network: the CHECKPOINTs of a proof we forward reach replicas
                # that are stable too, and each would "help" every signer back (found with
                # four node processes after a primary restart). A proof includes the
                # helper's own CHECKPOINT, so "the signer sent it" does not mean "the
                # signer lacks the proof"; when the transport names the connection
                # (``MessageReceived.peer``), third-party forwards are ignored outright.
                self.count("stale_checkpoint")
                signers = self.app.validators_at(height)
                forwarded = self.peer is not None and self.peer != cp.sender
                member = signers is not None and signers.index_of(cp.sender) is not None
                if (
                    member
                    and height == self.low
                    and self.stable_lacks(cp.sender)
                    and self.verify(cp, verified)
                ):
                    self.extend_stable(cp)
                if member and not forwarded and self.verify(cp, verified):
                    seen_height, n = self.stale_from.get(cp.sender, (height, 0))
                    n = n + 1 if seen_height == height else 1
                    self.stale_from[cp.sender] = (height, n)
                    if n == 2 or n % 16 == 0:
                        self.help(cp.sender, height, force=True)
            return
        validators = self.app.validators_at(height)
        if validators is None:
            self.note_ahead(cp, height, verified)
            return
        if validators.index_of(cp.sender) is None:
            self.count("non_member")
            return
        mine = self.cps.setdefault(cp.sender, {})
        prior = mine.get(height)
        if prior is not None:
            if prior != cp:
                self.report(prior, cp)
            return
        if not self.verify(cp, verified):
            return
        mine[height] = cp
        if len(mine) > CHECKPOINTS_PER_SENDER:
            # Keep the lowest: the next stable checkpoint is the one we need; a member
            # racing (or lying) far ahead must not push it out.
            del mine[max(mine)]
        if self.is_member(cp.sender):
            self.ahead[cp.sender] = max(self.ahead.get(cp.sender, 0), height)
        sigs = []
        for sender, by_height in self.cps.items():
            other = by_height.get(height)
            index = validators.index_of(sender)
            if (
                other is not None
                and index is not None
                and other.block_id == cp.block_id
                and other.state_root == cp.state_root
            ):
                sigs.append((index, other.signature))
        if len(sigs) >= validators.quorum:
            self.adopt_stable(
                CheckpointProof(height, cp.block_id, cp.state_root, tuple(sorted(sigs)))
            )

    def adopt_stable(self, proof: CheckpointProof) -> None:
        """Move the low watermark to a proven stable checkpoint and collect garbage."""
        if proof.height <= self.low:
            return
        self.deliver()  # certified heights below the checkpoint go out before GC
        self.stable = proof
        self.low = low = proof.height
        self.guard.note_stable(proof)
        self.count("stable_checkpoints")
        self.slots = {h: s for h, s in self.slots.items() if h > low}
        self.own_cps = {h: c for h, c in self.own_cps.items() if h > low}
        for sender in list(self.cps):
            kept = {h: c for h, c in self.cps[sender].items() if h > low}
            if kept:
                self.cps[sender] = kept
            else:
                del self.cps[sender]
        self.prune_chain()
        self.fetched = {h: b for h, b in self.fetched.items() if h > self.committed}
        self.answered = {k: v for k, v in self.answered.items() if k[1] > low}
        self.requested = {h for h in self.requested if h > low}

    def prune_chain(self) -> None:
        """Keep committed ids and certificates only for the last L heights above low."""
        floor = max(self.low, self.committed - self.config.log_size)
        self.committed_ids = {h: b for h, b in self.committed_ids.items() if h >= floor}
        self.certs = {h: c for h, c in self.certs.items() if h > floor}

    # -- epochs -------------------------------------------------------------------

    def maybe_enter_epoch(self) -> bool:
        """Enter the next epoch once our commits reach it and its boundary is stable."""
        nxt = self.app.epoch_start(self.committed + 1)
        if nxt is None or nxt <= self.epoch or self.low < nxt - 1:
            return False
        validators = self.app.validators_at(nxt)
        assert validators is not None, "epoch_start answered but validators_at did not"
        self.enter_epoch(nxt, validators, view=0)
        return True

    # -- catch-up -------------------------------------------------------------------

    def maybe_fetch(self) -> None:
        """Emit one RequestBlocks if there is evidence of certified heights we lack."""
        if self.fetch is not None:
            return
        committed, low = self.committed, self.low
        nxt = self.slots.get(committed + 1)
        missing = nxt is not None and nxt.cert is not None and nxt.cert.block_id not in nxt.payloads
        far_line = low + self.config.log_size
        top_claim = max(self.ahead.values()) if self.ahead else 0
        # One Byzantine member may claim anything: act on the (f+1)-th highest claim.
        far = (
            kth_highest(self.ahead.values(), weak_quorum(self.vset.n))
            if top_claim > committed
            else None
        )
        far_seen = far is not None and far > far_line
        if low <= committed and not missing and not far_seen:
            if far is not None and far > committed:
                self.lagging(far)
            else:
                self.catch_up_due = False
            return  # the common case, checked cheaply on every step
        target, peers = 0, []
        if low > committed:
            target = low
            validators = self.app.validators_at(low)
            if validators is not None:
                peers += [validators.keys[i] for i, _ in self.stable.signatures]
        if missing:
            assert nxt is not None and nxt.cert is not None
            target = max(target, committed + 1)
            peers += [self.vset.keys[i] for i, _ in nxt.cert.signatures if i < self.vset.n]
        if far is not None and far_seen:
            target = max(target, far)
            peers += [s for s, h in self.ahead.items() if h >= far]
        self.request_blocks(target, peers + list(self.vset.keys))  # then anyone may have it

    def lagging(self, claim: int) -> None:
        """f + 1 members claim heights above our last commit, within the window.

        Usually their COMMITs are just ahead of ours, so wait one timeout before
        fetching; an observer or a replica that lost those messages has no other
        timer that would notice.
        """
        if self.catch_up_due:
            self.catch_up_due = False
            peers = [s for s, h in self.ahead.items() if h >= claim]
            self.request_blocks(claim, peers + list(self.vset.keys))
        elif (TimerKind.FETCH, 1) not in self.timers:
            self.set_timer(TimerKind.FETCH, 1, self.config.view_timeout_ms)

    def fetch_gap(self) -> bool:
        """Certificates exist above a height we cannot deliver: fetch rather than time out."""
        top = max((h for h, s in self.slots.items() if s.cert is not None), default=0)
        if top <= self.committed or self.fetch is not None or self.gap_tried == self.committed:
            return False  # tried once for this gap already: let the view change fix it
        self.gap_tried = self.committed
        nxt = self.slots.get(self.committed + 1)
        peers = [] if nxt is None else [m.sender for m in nxt.commits.values()]
        peers += [
            self.vset.keys[i]
            for i, _ in self.slots[top].cert.signatures  # type: ignore[union-attr]
            if i < self.vset.n
        ]
        peers += list(self.vset.keys)
        return self.request_blocks(top, peers)

    def request_blocks(self, target: int, peers: list[bytes]) -> bool:
        peers = [p for p in dict.fromkeys(peers) if p != self.me]
        if target <= self.committed or not peers:
            return False
        peer = peers[self.fetch_attempt % len(peers)]
        hi = min(target, self.committed + self.config.max_fetch_heights)
        self.fetch = (peer, self.committed + 1, hi)
        self.count("fetch_requests")
        self.emit(RequestBlocks(peer, self.committed + 1, hi))
        self.set_timer(TimerKind.FETCH, 0, self.config.fetch_timeout_ms)
        return True

    def on_fetch_timeout(self, key: int) -> None:
        if key == 1:
            self.catch_up_due = True  # the grace period of ``lagging`` is over
            return
        self.fetch = None
        self.fetch_attempt += 1

    def on_blocks(self, event: BlocksReceived) -> None:
        useful = False
        for item in event.blocks[: self.config.max_fetch_heights]:
            if isinstance(item, CertifiedBlock):
                item = CertifiedPayload(item.block.encode(), item.certificate)
            height = item.certificate.height
            if self.committed < height <= self.committed + self.config.max_fetch_heights:
                self.fetched[height] = item
                useful = True
        if self.fetch is not None and self.fetch[0] == event.peer:
            if useful:
                self.fetch = None
                self.cancel_timer(TimerKind.FETCH, 0)
            else:
                # Nothing usable (the peer is behind too, unreachable, or busy): ask the
                # next peer soon, not after the full fetch timeout -- a replica that waits
                # 2 s for a block the group committed long ago times out its view alone
                # (found by the drill that restarts a validator). Not at once either: a
                # shell that answers "busy" instantly would make that a busy loop.
                self.set_timer(TimerKind.FETCH, 0, self.fetch_retry_ms())

    def fetch_retry_ms(self) -> int:
        return max(1, min(self.config.fetch_timeout_ms, self.config.view_timeout_ms // 4))

    def behind(self) -> bool:
        """Certified proof that the group committed beyond our last commit.

        Either our stable checkpoint is above it (a quorum signed CHECKPOINT there, so at
        least f + 1 honest members executed that far), or f + 1 members showed us heights
        more than L above it (an honest member only votes within its own window, so its
        stable checkpoint is above our last commit). Then our missing progress is our own
        lag, not the primary's fault: we catch up instead of changing view. It cannot
        hold for every honest replica at once: the f + 1 honest signers of the highest
        stable checkpoint executed it, so they are not behind and can still time out.
        """
        if self.low > self.committed:
            return True
        claim = kth_highest(self.ahead.values(), weak_quorum(self.vset.n)) if self.ahead else None
        return claim is not None and claim > self.committed + self.config.log_size

    def take_fetched(self) -> CertifiedPayload | None:
        """The verified fetched block at committed + 1, if any (else waits or discards)."""
        height = self.committed + 1
        item = self.fetched.get(height)
        if item is None:
            return None
        validators = self.app.validators_at(height)
        if validators is None:
            return None  # its set depends on a block not applied yet: Applied will retry
        cert = item.certificate
        info = self.app.block_info(item.payload)
        ok = (
            info is not None
            and info.block_id == cert.block_id
            and info.parent_id == self.last_block_id
            and info.height == height
            and verify_commit_certificate(cert, self.config.chain_id, validators, self.crypto)
        )
        if not ok:
            self.count("bad_fetched_block")
            self.fetched.clear()
            self.fetch_attempt += 1
            return None
        del self.fetched[height]
        return item

    # -- helping laggards -------------------------------------------------------------

    def stable_proof_messages(self) -> list[Checkpoint]:
        """The signed CHECKPOINTs that make up our stable checkpoint's proof."""
        s = self.stable
        validators = self.app.validators_at(s.height) if s.height else None
        if validators is None:
            return []
        return [
            Checkpoint(s.height, s.block_id, s.state_root, validators.keys[index], sig)
            for index, sig in s.signatures
        ]

    def announce_epoch_start(self) -> None:
        """Stalled at the start of an epoch: rebroadcast the boundary checkpoint's proof.

        A validator added by this epoch was an observer until now: it sent nothing, so
        nobody helped it, and it cannot enter the epoch without this proof (found by
        the simulator: a new member that missed the checkpoint kept a 5-node set below
        quorum). Only until the epoch's first checkpoint.
        """
        if self.low == self.epoch - 1 and self.low > 0:
            self.count("epoch_start_announced")
            for message in self.stable_proof_messages():
                self.emit(Broadcast(message))

    def help(self, peer: bytes, their_height: int, force: bool = False) -> None:
        """Send ``peer`` the CHECKPOINTs proving our stable checkpoint.

        Once per stable checkpoint; a ``force``d request (the peer keeps asking, e.g. by
        retransmitting an old VIEW-CHANGE) is answered again on its 1st, 9th, 17th...
        occurrence. The cap matters: each answer is a quorum of messages, so answering
        every request let a replaying Byzantine node (or two replicas echoing each
        other) amplify traffic without bound -- the simulator found such a storm.
        """
        if peer == self.me or their_height > self.low or self.low == 0:
            return  # (a peer at exactly our low watermark may lack its proof)
        last_low, asks = self.helped.get(peer, (-1, 0))
        if last_low == self.low:
            if not force:
                return
            asks += 1
            self.helped[peer] = (last_low, asks)
            if asks % 8 != 1:
                return
        else:
            if peer not in self.helped and len(self.helped) >= 4 * self.vset.n:
                return  # bound: only validators we heard from recently
            self.helped[peer] = (self.low, 0)
        self.count("help_sent")
        for message in self.stable_proof_messages():
            self.emit(Send(peer, message))
