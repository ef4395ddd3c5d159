"""Certificates and view-change checks, one rule at a time (consensus/certs.py).

Each test names what a replica must refuse: a repeated signer, a signer outside the
set, a signature over other content, a view-change proof outside its window or epoch,
a NEW-VIEW from the wrong primary or with too few view-changes. The whole-cluster
tests (test_consensus_sim.py) only show that honest runs agree; these pin each check.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from consensus.certs import (
    VerifyContext,
    check_new_view,
    check_view_change,
    select_reproposals,
    verify_checkpoint_proof,
    verify_commit_certificate,
    verify_proof,
    verify_quorum,
    verify_signed,
)
from consensus.messages import (
    CheckpointProof,
    NewView,
    Proof,
    ProofKind,
    ViewChange,
    checkpoint_body,
    prepare_body,
)
from consensus.quorum import primary_key
from ledger.codec import Domain
from ledger.types import CommitCertificate, ValidatorSet, commit_vote_body
from node.sim.pbft.app import validator_set
from node.sim.pbft.crypto import FakeCrypto, fake_signature, make_keys

CHAIN = "certs-chain"
KEYS = make_keys(6)
VS = validator_set(KEYS, [0, 1, 2, 3])  # n = 4, f = 1, quorum = 3
CRYPTO = FakeCrypto(KEYS[0])  # the fake scheme verifies any key's signatures
GENESIS = b"\x07" * 32
B = [bytes([i]) * 32 for i in range(1, 12)]
BODY = commit_vote_body(CHAIN, 5, 0, B[0])


def sig(index: int, body: bytes = BODY, domain: Domain = Domain.COMMIT) -> tuple[int, bytes]:
    return index, fake_signature(VS.keys[index], domain, body)


def sigs(
    *indexes: int, body: bytes = BODY, domain: Domain = Domain.COMMIT
) -> tuple[tuple[int, bytes], ...]:
    return tuple(sig(i, body, domain) for i in indexes)


def quorum_ok(
    signatures: tuple[tuple[int, bytes], ...], quorum: int | None = None, vs: ValidatorSet = VS
) -> bool:
    return verify_quorum(signatures, vs, Domain.COMMIT, BODY, CRYPTO, quorum)


# -- verify_quorum: who counts toward a quorum ------------------------------------------


def test_a_quorum_of_distinct_validators_is_accepted() -> None:
    assert VS.quorum == 3
    assert quorum_ok(sigs(0, 1, 2))
    assert quorum_ok(sigs(1, 2, 3))
    assert quorum_ok(sigs(0, 1, 2, 3))


def test_fewer_than_a_quorum_is_refused() -> None:
    assert not quorum_ok(sigs(0, 1))
    assert not quorum_ok(())


def test_a_signer_listed_twice_counts_once() -> None:
    """Three entries but two validators: not a quorum of 3 (the bug this file was made for)."""
    assert not quorum_ok((sig(0), sig(0), sig(1)))
    assert not quorum_ok((sig(0), sig(1), sig(1)))
    assert not quorum_ok((sig(0), sig(1), sig(1), sig(2))), "a repeat is refused, not skipped"


def test_signers_out_of_order_are_refused() -> None:
    assert not quorum_ok((sig(1), sig(0), sig(2)))


def test_an_index_outside_the_set_is_refused_not_an_error() -> None:
    assert not quorum_ok((*sigs(0, 1, 2), (VS.n, b"\x00" * 64)))
    assert not quorum_ok((*sigs(0, 1), (VS.n + 1, b"\x00" * 64)))


def test_a_negative_index_cannot_alias_a_validator() -> None:
    """Index -1 would be the last validator in Python: it must not count as anyone."""
    last = VS.n - 1
    aliased = (-1, fake_signature(VS.keys[last], Domain.COMMIT, BODY))
    assert not quorum_ok((aliased, sig(0), sig(1)))
    assert not quorum_ok((aliased, sig(0), sig(last)))


def test_one_bad_signature_spoils_the_certificate() -> None:
    forged = (2, b"\x01" * 64)
    assert not quorum_ok((sig(0), sig(1), forged))
    assert not quorum_ok((sig(0), forged, sig(3)))
    other_body = commit_vote_body(CHAIN, 5, 0, B[1])
    assert not quorum_ok((sig(0), sig(1), sig(2, body=other_body)))
    assert not quorum_ok((sig(0), sig(1), sig(2, domain=Domain.PREPARE)))


def test_an_explicit_quorum_overrides_the_sets() -> None:
    assert quorum_ok(sigs(0, 1), quorum=2)
    assert not quorum_ok(sigs(0, 1, 2), quorum=4)
    assert quorum_ok(sigs(0, 1, 2, 3), quorum=4)


def test_commit_certificates() -> None:
    good = CommitCertificate(5, 0, B[0], sigs(0, 2, 3))
    assert verify_commit_certificate(good, CHAIN, VS, CRYPTO)
    assert not verify_commit_certificate(good, "other-chain", VS, CRYPTO)
    assert not verify_commit_certificate(replace(good, block_id=B[1]), CHAIN, VS, CRYPTO)
    assert not verify_commit_certificate(replace(good, height=6), CHAIN, VS, CRYPTO)
    assert not verify_commit_certificate(replace(good, view=1), CHAIN, VS, CRYPTO)
    assert not verify_commit_certificate(good, CHAIN, VS, CRYPTO, quorum=4)
    two = CommitCertificate(5, 0, B[0], sigs(0, 2))
    assert not verify_commit_certificate(two, CHAIN, VS, CRYPTO)
    assert verify_commit_certificate(two, CHAIN, VS, CRYPTO, quorum=2)


def prepared(
    height: int, view: int, block: bytes, parent: bytes, signers: tuple[int, ...] = (0, 1, 2)
) -> Proof:
    body = prepare_body(CHAIN, height, view, block, parent)
    return Proof(
        ProofKind.PREPARED,
        height,
        view,
        block,
        parent,
        sigs(*signers, body=body, domain=Domain.PREPARE),
    )


def committed(height: int, view: int, block: bytes, signers: tuple[int, ...] = (0, 1, 2)) -> Proof:
    body = commit_vote_body(CHAIN, height, view, block)
    return Proof(ProofKind.COMMITTED, height, view, block, b"", sigs(*signers, body=body))


def test_prepared_and_committed_proofs_sign_different_things() -> None:
    p = prepared(3, 1, B[2], B[1])
    c = committed(3, 1, B[2])
    assert verify_proof(p, CHAIN, VS, CRYPTO) and verify_proof(c, CHAIN, VS, CRYPTO)
    # the same signatures relabelled as the other kind prove nothing
    assert not verify_proof(replace(p, kind=ProofKind.COMMITTED, parent_id=b""), CHAIN, VS, CRYPTO)
    assert not verify_proof(replace(c, kind=ProofKind.PREPARED, parent_id=B[1]), CHAIN, VS, CRYPTO)
    assert not verify_proof(replace(p, parent_id=B[3]), CHAIN, VS, CRYPTO)
    assert not verify_proof(prepared(3, 1, B[2], B[1], signers=(0, 1)), CHAIN, VS, CRYPTO)


# -- checkpoints and view-changes ----------------------------------------------------------


@dataclass
class Schedule:
    """A stand-in ``App``: one validator set; epochs start at ``starts``; sets known up
    to ``known`` (as a replica knows them only up to its applied height + delay)."""

    starts: tuple[int, ...] = (1,)
    known: int = 40

    def validators_at(self, height: int) -> ValidatorSet | None:
        return VS if 1 <= height <= self.known else None

    def epoch_start(self, height: int) -> int | None:
        if not 1 <= height <= self.known:
            return None
        return max(s for s in self.starts if s <= height)


def ctx(app: Schedule | None = None, log_size: int = 4) -> VerifyContext:
    return VerifyContext(CHAIN, CRYPTO, app or Schedule(), GENESIS, log_size)  # type: ignore[arg-type]


GEN = CheckpointProof(0, GENESIS, b"", ())


def checkpoint(
    height: int, block: bytes = B[9], signers: tuple[int, ...] = (0, 1, 2)
) -> CheckpointProof:
    body = checkpoint_body(CHAIN, height, block, b"root")
    return CheckpointProof(
        height, block, b"root", sigs(*signers, body=body, domain=Domain.CHECKPOINT)
    )


def test_the_genesis_checkpoint_is_the_configured_block_and_unsigned() -> None:
    app = Schedule()
    assert verify_checkpoint_proof(GEN, CHAIN, app, CRYPTO, GENESIS)  # type: ignore[arg-type]
    assert not verify_checkpoint_proof(GEN, CHAIN, app, CRYPTO, B[0])  # type: ignore[arg-type]
    signed = replace(GEN, signatures=sigs(0, 1, 2))
    assert not verify_checkpoint_proof(signed, CHAIN, app, CRYPTO, GENESIS)  # type: ignore[arg-type]


def test_a_checkpoint_needs_a_quorum_of_the_set_at_its_height() -> None:
    app = Schedule(known=10)
    assert verify_checkpoint_proof(checkpoint(8), CHAIN, app, CRYPTO, GENESIS)  # type: ignore[arg-type]
    assert not verify_checkpoint_proof(
        checkpoint(8, signers=(0, 1)),
        CHAIN,
        app,  # type: ignore[arg-type]
        CRYPTO,
        GENESIS,
    )
    # a checkpoint whose validator set is not known yet cannot be checked: refused
    assert not verify_checkpoint_proof(checkpoint(11), CHAIN, app, CRYPTO, GENESIS)  # type: ignore[arg-type]
    # the genesis block id at a real height is not the genesis anchor
    fake_genesis = replace(checkpoint(1), block_id=GENESIS)
    assert not verify_checkpoint_proof(fake_genesis, CHAIN, app, CRYPTO, GENESIS)  # type: ignore[arg-type]


def view_change(
    *proofs: Proof,
    stable: CheckpointProof = GEN,
    epoch: int = 1,
    view: int = 3,
    sender: int = 1,
) -> ViewChange:
    vc = ViewChange(epoch, view, stable, tuple(proofs))
    return vc.signed_by(FakeCrypto(VS.keys[sender]), CHAIN)


def vc_reason(vc: ViewChange, epoch: int = 1, app: Schedule | None = None) -> str | None:
    return check_view_change(vc, epoch, VS, ctx(app))


def test_a_well_formed_view_change_is_accepted() -> None:
    vc = view_change(committed(1, 0, B[0]), prepared(2, 2, B[1], B[0]))
    assert vc_reason(vc) is None


def test_view_change_for_another_epoch_or_from_a_non_validator() -> None:
    assert vc_reason(view_change(epoch=2)) == "wrong epoch"
    stranger = ViewChange(1, 3, GEN, ()).signed_by(FakeCrypto(KEYS[5]), CHAIN)
    assert vc_reason(stranger) == "sender is not a validator"


def test_view_change_stable_checkpoint_rules() -> None:
    epochs = Schedule(starts=(1, 9))
    # epoch 9 may start from checkpoint 8 (= epoch - 1) but not from 7
    assert vc_reason(view_change(epoch=9, stable=checkpoint(8)), 9, epochs) is None
    assert (
        vc_reason(view_change(epoch=9, stable=checkpoint(7)), 9, epochs)
        == "stable checkpoint below the epoch start"
    )
    for stable, known in [(12, 10), (1, 0)]:
        assert (
            vc_reason(view_change(stable=checkpoint(stable)), 1, Schedule(known=known))
            == "stable checkpoint above what we can verify yet"
        ), stable
    assert (
        vc_reason(view_change(stable=checkpoint(4, signers=(0, 1))))
        == "invalid stable checkpoint proof"
    )
    assert vc_reason(view_change(stable=replace(GEN, block_id=B[0]))) == (
        "invalid stable checkpoint proof"
    )


def test_view_change_proofs_must_lie_in_the_log_window() -> None:
    """Window = (stable, stable + log_size]; log_size is 4 here."""
    stable = checkpoint(4)
    for height, ok in [(4, False), (5, True), (8, True), (9, False)]:
        vc = view_change(committed(height, 0, B[0]), stable=stable)
        assert (vc_reason(vc) is None) is ok, height
        if not ok:
            assert vc_reason(vc) == "proof outside the log window"


def test_view_change_proofs_must_lie_in_the_epoch() -> None:
    epochs = Schedule(starts=(1, 4))
    assert vc_reason(view_change(committed(3, 0, B[0])), 1, epochs) is None
    assert vc_reason(view_change(committed(4, 0, B[0])), 1, epochs) == "proof outside the epoch"


def test_a_prepared_proof_must_come_from_an_earlier_view() -> None:
    assert vc_reason(view_change(prepared(1, 2, B[0], GENESIS), view=3)) is None
    for v in (3, 4):
        assert (
            vc_reason(view_change(prepared(1, v, B[0], GENESIS), view=3))
            == "prepared proof from a view not below the new view"
        )
    # a COMMITTED proof is final whatever its view
    assert vc_reason(view_change(committed(1, 5, B[0]), view=3)) is None


def test_view_change_proofs_need_valid_signatures() -> None:
    assert (
        vc_reason(view_change(committed(1, 0, B[0], signers=(0, 1)))) == "invalid proof signatures"
    )
    forged = replace(committed(1, 0, B[0]), block_id=B[1])
    assert vc_reason(view_change(forged)) == "invalid proof signatures"
    assert vc_reason(view_change(committed(1, 0, B[0]), forged)) == "invalid proof signatures"


def test_verify_signed_checks_the_sender() -> None:
    vc = view_change(sender=2)
    assert verify_signed(vc, CHAIN, CRYPTO)
    assert not verify_signed(vc, "other-chain", CRYPTO)
    assert not verify_signed(replace(vc, sender=VS.keys[1]), CHAIN, CRYPTO)


# -- NEW-VIEW ------------------------------------------------------------------------------


def new_view(
    vcs: list[ViewChange], view: int = 3, epoch: int = 1, sender: int | None = None
) -> NewView:
    key = primary_key(VS, view) if sender is None else VS.keys[sender]
    return NewView(epoch, view, tuple(vcs)).signed_by(FakeCrypto(key), CHAIN)


def nv_result(nv: NewView, known: bool = False, epoch: int = 1) -> object:
    return check_new_view(nv, epoch, VS, ctx(), lambda vc: known)


def test_a_new_view_with_a_quorum_yields_the_selection() -> None:
    vcs = [view_change(committed(1, 0, B[0]), sender=i) for i in (0, 1, 2)]
    plan = nv_result(new_view(vcs))
    assert plan == select_reproposals(vcs)
    assert [(r.height, r.block_id) for r in plan.reproposals] == [(1, B[0])]  # type: ignore[attr-defined]


def test_a_new_view_needs_a_quorum_of_distinct_senders() -> None:
    two = [view_change(sender=i) for i in (0, 1)]
    assert nv_result(new_view(two)) == "fewer than a quorum of view-changes"
    repeated = [view_change(sender=0), view_change(sender=1), view_change(sender=1)]
    assert nv_result(new_view(repeated)) == "two view-changes from one sender"


def test_a_new_view_from_another_replica_or_epoch_is_refused() -> None:
    vcs = [view_change(sender=i) for i in (0, 1, 2)]
    assert primary_key(VS, 3) == VS.keys[3]
    assert nv_result(new_view(vcs, sender=0)) == "sender is not the primary of the view"
    assert nv_result(new_view(vcs), epoch=9) == "wrong epoch"


def test_a_new_view_carries_only_view_changes_for_its_view_and_epoch() -> None:
    for other in (view_change(sender=2, view=2), view_change(sender=2, epoch=9)):
        vcs = [view_change(sender=0), view_change(sender=1), other]
        assert nv_result(new_view(vcs)) == "view-change for another view"


def test_a_new_view_checks_each_view_change_it_has_not_seen() -> None:
    unsigned = replace(view_change(sender=2), signature=b"\x00" * 64)
    vcs = [view_change(sender=0), view_change(sender=1), unsigned]
    assert nv_result(new_view(vcs)) == "view-change with a bad signature"
    # already verified by the caller (known_valid): not checked again
    assert not isinstance(nv_result(new_view(vcs), known=True), str)
    bad = view_change(committed(1, 0, B[0], signers=(0,)), sender=2)
    vcs = [view_change(sender=0), view_change(sender=1), bad]
    assert nv_result(new_view(vcs)) == "view-change invalid: invalid proof signatures"


@pytest.mark.parametrize("n", [1, 4, 7])
def test_selection_is_empty_without_proofs(n: int) -> None:
    plan = select_reproposals([view_change(sender=i % 4) for i in range(n)])
    assert plan.reproposals == () and plan.fresh_from == 1 and plan.base == GEN
