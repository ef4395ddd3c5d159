"""Certificates: checking them with the injected ``Crypto`` and choosing re-proposals.

Owns the pure functions that decide whether a quorum of signatures proves something,
and ``select_reproposals`` -- the heart of PBFT's view change (Castro & Liskov,
OSDI'99 §4.4, TOCS'02 §4.5: the new primary's O set).

Selection rule (deterministic, recomputed by every replica from the NEW-VIEW):

1. ``base`` = the highest stable checkpoint among the VIEW-CHANGEs (>= epoch - 1).
2. Walk heights base+1, base+2, ... For each height take, over all VIEW-CHANGEs:
   a COMMITTED proof if any (all agree, by agreement); otherwise the PREPARED proof of
   the highest view. A PREPARED choice must name the previous choice as its parent.
3. Stop at the first height with no proof, or whose chosen PREPARED proof does not
   extend the chain. Everything from there on is proposed afresh.

Why nothing committed is lost (full argument in docs/CONSENSUS.md): a COMMIT for
(h, v, d) is only signed by a replica that is prepared in view v at h *and at every
uncommitted height below h*. A quorum signed it, so at least one honest replica of
any view-change quorum reports proofs of view >= v for all of (base, h], and every
proof of view >= v at those heights names the same chain (by induction over views).
So step 2 picks that chain and step 3 never stops below h.

Here "valid signatures" always means: distinct validator indexes, strictly
increasing, each inside the set in force at that height, each signature valid, and at
least ``quorum`` of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from consensus.api import App, Crypto
from consensus.messages import (
    CheckpointProof,
    Message,
    NewView,
    Proof,
    ProofKind,
    SignatureList,
    ViewChange,
)
from consensus.quorum import primary_key
from ledger.codec import Domain
from ledger.types import CommitCertificate, ValidatorSet, commit_vote_body


def verify_signed(message: Message, chain_id: str, crypto: Crypto) -> bool:
    """The message's own signature by its ``sender``."""
    return crypto.verify(message.sender, message.DOMAIN, message.body(chain_id), message.signature)


def verify_quorum(
    signatures: SignatureList,
    validators: ValidatorSet,
    domain: Domain,
    body: bytes,
    crypto: Crypto,
    quorum: int | None = None,
) -> bool:
    """True iff >= ``quorum`` (default: the set's) distinct validators validly signed ``body``."""
    need = validators.quorum if quorum is None else quorum
    if len(signatures) < need:
        return False
    last = -1
    for index, sig in signatures:
        if index <= last or index >= validators.n:
            return False
        last = index
        if not crypto.verify(validators.keys[index], domain, body, sig):
            return False
    return True


def verify_commit_certificate(
    cert: CommitCertificate,
    chain_id: str,
    validators: ValidatorSet,
    crypto: Crypto,
    quorum: int | None = None,
) -> bool:
    """``CommitCertificate.verify`` with the injected crypto, returning a bool."""
    body = commit_vote_body(chain_id, cert.height, cert.view, cert.block_id)
    return verify_quorum(cert.signatures, validators, Domain.COMMIT, body, crypto, quorum)


def verify_proof(proof: Proof, chain_id: str, validators: ValidatorSet, crypto: Crypto) -> bool:
    return verify_quorum(
        proof.signatures, validators, proof.domain, proof.vote_body(chain_id), crypto
    )


def verify_checkpoint_proof(
    proof: CheckpointProof, chain_id: str, app: App, crypto: Crypto, genesis_block_id: bytes
) -> bool:
    """A stable checkpoint; height 0 is the genesis anchor and needs no signatures."""
    if proof.height == 0:
        return proof.block_id == genesis_block_id and not proof.signatures
    validators = app.validators_at(proof.height)
    if validators is None:
        return False
    return verify_quorum(
        proof.signatures, validators, Domain.CHECKPOINT, proof.body(chain_id), crypto
    )


@dataclass(frozen=True)
class VerifyContext:
    """Everything the view-change checks need besides the message."""

    chain_id: str
    crypto: Crypto
    app: App
    genesis_block_id: bytes
    log_size: int


def check_view_change(
    vc: ViewChange, epoch: int, validators: ValidatorSet, ctx: VerifyContext
) -> str | None:
    """None if ``vc`` is a well-formed, fully proven VIEW-CHANGE for ``epoch``; else why not.

    The sender's own signature is checked separately (``verify_signed``).
    """
    if vc.epoch != epoch:
        return "wrong epoch"
    if validators.index_of(vc.sender) is None:
        return "sender is not a validator"
    stable = vc.stable
    if stable.height < epoch - 1:
        return "stable checkpoint below the epoch start"
    if stable.height > 0 and ctx.app.validators_at(stable.height) is None:
        return "stable checkpoint above what we can verify yet"
    if not verify_checkpoint_proof(stable, ctx.chain_id, ctx.app, ctx.crypto, ctx.genesis_block_id):
        return "invalid stable checkpoint proof"
    for proof in vc.proofs:
        if not stable.height < proof.height <= stable.height + ctx.log_size:
            return "proof outside the log window"
        if ctx.app.epoch_start(proof.height) != epoch:
            return "proof outside the epoch"
        if proof.kind is ProofKind.PREPARED and proof.view >= vc.view:
            return "prepared proof from a view not below the new view"
        if not verify_proof(proof, ctx.chain_id, validators, ctx.crypto):
            return "invalid proof signatures"
    return None


@dataclass(frozen=True)
class Reproposal:
    """One element of PBFT's O set: ``block_id`` is re-proposed at ``height``."""

    height: int
    block_id: bytes
    parent_id: bytes


@dataclass(frozen=True)
class NewViewPlan:
    """What a valid NEW-VIEW implies: the new low watermark and the re-proposals."""

    base: CheckpointProof
    reproposals: tuple[Reproposal, ...]

    @property
    def fresh_from(self) -> int:
        """First height the new primary proposes afresh."""
        last = self.reproposals[-1].height if self.reproposals else self.base.height
        return last + 1


def select_reproposals(view_changes: Iterable[ViewChange]) -> NewViewPlan:
    """PBFT's O set from a quorum of verified VIEW-CHANGEs (see the module docstring)."""
    vcs = list(view_changes)
    assert vcs, "select_reproposals needs at least one view-change"
    base = max((vc.stable for vc in vcs), key=lambda s: (s.height, s.block_id))
    by_height: dict[int, list[Proof]] = {}
    for vc in vcs:
        for proof in vc.proofs:
            if proof.height > base.height:
                by_height.setdefault(proof.height, []).append(proof)
    out: list[Reproposal] = []
    prev = base.block_id
    height = base.height + 1
    while height in by_height:
        candidates = by_height[height]
        committed = [p for p in candidates if p.kind is ProofKind.COMMITTED]
        if committed:
            chosen = min(committed, key=lambda p: p.block_id)
        else:
            chosen = max(candidates, key=lambda p: (p.view, p.block_id))
            if chosen.parent_id != prev:
                break
        out.append(Reproposal(height, chosen.block_id, prev))
        prev = chosen.block_id
        height += 1
    return NewViewPlan(base, tuple(out))


def check_new_view(
    nv: NewView,
    epoch: int,
    validators: ValidatorSet,
    ctx: VerifyContext,
    known_valid: Callable[[ViewChange], bool],
) -> NewViewPlan | str:
    """The plan of a NEW-VIEW whose content is valid, or the reason it is not.

    The NEW-VIEW's own signature is checked separately. ``known_valid(vc)`` lets the
    caller skip re-verifying view-changes it has already checked.
    """
    if nv.epoch != epoch:
        return "wrong epoch"
    if nv.sender != primary_key(validators, nv.view):
        return "sender is not the primary of the view"
    senders: set[bytes] = set()
    for vc in nv.view_changes:
        if vc.epoch != epoch or vc.view != nv.view:
            return "view-change for another view"
        if vc.sender in senders:
            return "two view-changes from one sender"
        senders.add(vc.sender)
        if known_valid(vc):
            continue
        if not verify_signed(vc, ctx.chain_id, ctx.crypto):
            return "view-change with a bad signature"
        reason = check_view_change(vc, epoch, validators, ctx)
        if reason is not None:
            return f"view-change invalid: {reason}"
    if len(senders) < validators.quorum:
        return "fewer than a quorum of view-changes"
    return select_reproposals(nv.view_changes)
