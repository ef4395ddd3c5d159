"""One replica driven by hand: the event/action contract and each transition in isolation.

Section references are to Castro & Liskov, "Practical Byzantine Fault Tolerance and
Proactive Recovery", TOCS'02 (§4.2 normal case, §4.3 garbage collection, §4.5 view
change), and OSDI'99 §4.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Sequence

import pytest

from consensus.api import (
    Action,
    Applied,
    BlocksReceived,
    Broadcast,
    CertifiedPayload,
    CommitBlock,
    Config,
    MessageReceived,
    Persist,
    PersistBlock,
    ProposalReady,
    ReportEvidence,
    RequestBlocks,
    RequestProposal,
    SetTimer,
    Start,
    TimerFired,
    TimerKind,
    TxsPending,
)
from consensus.certs import verify_commit_certificate
from consensus.evidence import verify_evidence
from consensus.messages import Checkpoint, Commit, Prepare, PrePrepare, ViewChange
from consensus.record import SigningRecord
from consensus.replica import Replica
from ledger.codec import encode
from ledger.types import CommitCertificate, ValidatorSet
from node.sim.pbft.app import GENESIS_ID, MemApp, make_payload, parse
from node.sim.pbft.crypto import FakeCrypto, make_keys

CHAIN = "sim-chain"
KEYS = make_keys(5)
CONFIG = Config(
    CHAIN, GENESIS_ID, window=2, checkpoint_interval=4, view_timeout_ms=100, censor_timeout_ms=1000
)
FORBIDDEN = {
    "trio",
    "plyvel",
    "libp2p",
    "time",
    "random",
    "socket",
    "os",
    "asyncio",
    "threading",
    "subprocess",
}


def app() -> MemApp:
    return MemApp(KEYS, [0, 1, 2, 3], change_delay=8)


def validators() -> ValidatorSet:
    v = app().validators_at(1)
    assert v is not None
    return v


def replica(i: int, record: SigningRecord | None = None, **kw: object) -> Replica:
    r = Replica(CONFIG, app(), FakeCrypto(KEYS[i]), record=record, **kw)  # type: ignore[arg-type]
    r.step(Start())
    return r


def signed(i: int, message):  # type: ignore[no-untyped-def]
    return message.signed_by(FakeCrypto(KEYS[i]), CHAIN)


def recv(r: Replica, message) -> list[Action]:  # type: ignore[no-untyped-def]
    return r.step(MessageReceived(message))


def block(height: int, parent: bytes, nonce: int = 0, **kw: object) -> tuple[bytes, bytes]:
    payload = make_payload(height, parent, 0, nonce, **kw)  # type: ignore[arg-type]
    return payload, parse(payload).block_id  # type: ignore[union-attr]


def of_type(actions: Sequence[Action], kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def sent(actions: Sequence[Action], kind: type) -> list:
    return [a.message for a in actions if isinstance(a, Broadcast) and isinstance(a.message, kind)]


def test_consensus_package_does_no_io() -> None:
    """The sans-IO rule: nothing in consensus/ imports I/O, clocks or randomness."""
    for path in pathlib.Path("consensus").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path} imports {name}"


def test_primary_asks_for_a_block_and_persists_before_sending() -> None:
    """§4.2: the primary assigns the sequence number; raft's rule: persist, then send."""
    r0 = Replica(CONFIG, app(), FakeCrypto(KEYS[0]))
    actions = r0.step(Start())
    assert of_type(actions, RequestProposal) == [RequestProposal(1, 0, GENESIS_ID)]
    payload, block_id = block(1, GENESIS_ID)
    actions = r0.step(ProposalReady(1, 0, payload))
    kinds = [type(a).__name__ for a in actions]
    first_send = kinds.index("Broadcast")
    assert "PersistBlock" in kinds[:first_send] and "Persist" in kinds[:first_send]
    (pp,) = sent(actions, PrePrepare)
    (prepare,) = sent(actions, Prepare)
    assert (
        (pp.height, pp.view, pp.block_id)
        == (1, 0, block_id)
        == (prepare.height, prepare.view, prepare.block_id)
    )
    record = of_type(actions, Persist)[-1].record
    assert {(v.height, v.kind.name) for v in record.votes} == {(1, "PRE_PREPARE"), (1, "PREPARE")}
    # Pipelining (window 2): the next height is requested on top of the first one.
    assert of_type(actions, RequestProposal) == [RequestProposal(2, 0, block_id)]


def test_normal_case_commits_with_a_certificate_of_commit_signatures() -> None:
    """§4.2: pre-prepare -> prepare -> commit; a quorum of COMMITs commits the block."""
    r1 = replica(1)
    payload, block_id = block(1, GENESIS_ID)
    actions = recv(r1, signed(0, PrePrepare(1, 0, block_id, GENESIS_ID, payload)))
    assert of_type(actions, PersistBlock) == [PersistBlock(1, block_id, payload)]
    assert len(sent(actions, Prepare)) == 1
    recv(r1, signed(0, Prepare(1, 0, block_id, GENESIS_ID)))
    actions = recv(r1, signed(2, Prepare(1, 0, block_id, GENESIS_ID)))
    (commit,) = sent(actions, Commit)
    assert (commit.height, commit.view, commit.block_id) == (1, 0, block_id)
    recv(r1, signed(0, Commit(1, 0, block_id)))
    actions = recv(r1, signed(3, Commit(1, 0, block_id)))
    (done,) = of_type(actions, CommitBlock)
    assert done.height == 1 and done.payload == payload
    assert verify_commit_certificate(done.certificate, CHAIN, validators(), FakeCrypto(KEYS[0]))
    assert [i for i, _ in done.certificate.signatures] == [0, 1, 3]
    # Exactly once: more commit votes for the same height deliver nothing.
    assert not of_type(recv(r1, signed(2, Commit(1, 0, block_id))), CommitBlock)


def test_peer_misbehaviour_is_dropped_and_counted_never_raised() -> None:
    r1 = replica(1)
    payload, block_id = block(1, GENESIS_ID)
    good = signed(0, PrePrepare(1, 0, block_id, GENESIS_ID, payload))
    outsider = FakeCrypto(b"\x77" * 32)
    bad_payload, bad_id = block(1, GENESIS_ID, nonce=5, invalid=True)
    junk = [
        PrePrepare(1, 0, block_id, GENESIS_ID, payload, KEYS[0], b"\x00" * 64),  # bad sig
        PrePrepare(1, 0, block_id, GENESIS_ID, payload).signed_by(outsider, CHAIN),  # stranger
        signed(2, PrePrepare(1, 0, block_id, GENESIS_ID, payload)),  # not the primary
        signed(0, PrePrepare(1, 7, block_id, GENESIS_ID, payload)),  # wrong view
        signed(0, PrePrepare(999, 0, block_id, GENESIS_ID, payload)),  # far above
        # wrong view (the same member as above: votes of higher views from f+1
        # members are evidence to join, see test_votes_of_a_higher_view_...)
        signed(0, Prepare(1, 3, block_id, GENESIS_ID)),
        signed(2, Commit(10_000, 0, block_id)),  # far above the window
        signed(3, Checkpoint(4, block_id, b"r" * 32)).__class__(
            4, block_id, b"r", KEYS[3], b"\x01" * 64
        ),
        signed(3, ViewChange(1, 50_000, r1.stable, ())),  # beyond max_views_ahead
    ]
    for message in junk:
        recv(r1, message)
    r2 = replica(2)
    recv(r2, signed(0, PrePrepare(1, 0, bad_id, GENESIS_ID, bad_payload)))  # invalid block
    stats = {**r1.stats, **{f"r2_{k}": v for k, v in r2.stats.items()}}
    for key in (
        "bad_signature",
        "non_member",
        "not_primary",
        "wrong_view",
        "beyond_window",
        "view_too_far",
        "r2_invalid_proposal",
    ):
        assert stats.get(key, 0) >= 1, (key, stats)
    # After all that, the genuine proposal is still accepted, and a replay is harmless.
    assert sent(recv(r1, good), Prepare)
    assert not sent(recv(r1, good), Prepare)
    with pytest.raises(TypeError):
        r1.step("not an event")  # type: ignore[arg-type]  # our misuse: a programming error


def test_equivocating_primary_yields_verifiable_evidence() -> None:
    r1 = replica(1)
    a_payload, a_id = block(1, GENESIS_ID, nonce=1)
    b_payload, b_id = block(1, GENESIS_ID, nonce=2)
    recv(r1, signed(0, PrePrepare(1, 0, a_id, GENESIS_ID, a_payload)))
    actions = recv(r1, signed(0, PrePrepare(1, 0, b_id, GENESIS_ID, b_payload)))
    (report,) = of_type(actions, ReportEvidence)
    assert verify_evidence(report.evidence, CHAIN, validators(), FakeCrypto(KEYS[1]))
    assert not sent(actions, Prepare), "never prepare the second proposal"
    # Conflicting votes from one backup are evidence too.
    recv(r1, signed(2, Prepare(1, 0, a_id, GENESIS_ID)))
    actions = recv(r1, signed(2, Prepare(1, 0, b_id, GENESIS_ID)))
    assert len(of_type(actions, ReportEvidence)) == 1


def test_restored_record_never_signs_a_conflicting_prepare() -> None:
    """Restart safety: the signing record survives, the rest of the state does not."""
    r1 = replica(1)
    a_payload, a_id = block(1, GENESIS_ID, nonce=1)
    actions = recv(r1, signed(0, PrePrepare(1, 0, a_id, GENESIS_ID, a_payload)))
    record = of_type(actions, Persist)[-1].record
    assert SigningRecord.decode(record.encode()) == record  # what the node writes to disk
    restarted = replica(1, record=SigningRecord.decode(record.encode()))
    b_payload, b_id = block(1, GENESIS_ID, nonce=2)
    actions = recv(restarted, signed(0, PrePrepare(1, 0, b_id, GENESIS_ID, b_payload)))
    assert not sent(actions, Prepare) and restarted.stats["guard_refused"] == 1
    again = replica(1, record=record)
    (prepare,) = sent(
        recv(again, signed(0, PrePrepare(1, 0, a_id, GENESIS_ID, a_payload))), Prepare
    )
    assert prepare.block_id == a_id, "re-signing the same vote is allowed"


def test_restarted_replica_resends_its_view_change_instead_of_signing_another() -> None:
    r1 = replica(1)
    r1.step(TxsPending((b"tx1",)))
    vc = None
    for _ in range(2):
        actions = r1.step(TimerFired(TimerKind.PROGRESS, 0))
        vc = (sent(actions, ViewChange) or [vc])[0]
    assert vc is not None and vc.view == 1
    record = r1.guard.snapshot()
    restarted = Replica(CONFIG, app(), FakeCrypto(KEYS[1]), record=record)
    (again,) = sent(restarted.step(Start()), ViewChange)
    assert again == vc and restarted.in_vc and restarted.view == 1


def timer_delay(actions: Sequence[Action], kind: TimerKind) -> int | None:
    delays = [a.delay_ms for a in actions if isinstance(a, SetTimer) and a.kind is kind]
    return delays[-1] if delays else None


def test_progress_timeout_retransmits_then_changes_view_with_exponential_backoff() -> None:
    """§4.5.2: a backup that waits too long starts a view change; timeouts double per
    consecutive failed view and reset after progress."""
    r1 = replica(1)
    actions = r1.step(TxsPending((b"tx1",)))  # known pending work, but no proposal
    assert timer_delay(actions, TimerKind.PROGRESS) == 50  # half the timeout: retransmit
    actions = r1.step(TimerFired(TimerKind.PROGRESS, 0))
    assert not sent(actions, ViewChange) and r1.stats["retransmissions"] == 1
    actions = r1.step(TimerFired(TimerKind.PROGRESS, 0))
    (vc,) = sent(actions, ViewChange)
    assert vc.view == 1 and r1.in_vc
    assert timer_delay(actions, TimerKind.VIEW_CHANGE) == 200
    # A quorum for view 1 whose primary (validator 1 = us) builds NEW-VIEW at once.
    recv(r1, signed(2, ViewChange(1, 1, r1.stable, ())))
    actions = recv(r1, signed(3, ViewChange(1, 1, r1.stable, ())))
    assert not r1.in_vc and r1.view == 1 and of_type(actions, RequestProposal)
    # Progress resets the backoff.
    payload, block_id = block(1, GENESIS_ID)
    r1.step(ProposalReady(1, 1, payload))
    for i in (2, 3):
        recv(r1, signed(i, Prepare(1, 1, block_id, GENESIS_ID)))
    assert r1.failed_views == 1
    for i in (2, 3):
        recv(r1, signed(i, Commit(1, 1, block_id)))
    assert r1.committed == 1 and r1.failed_views == 0 and r1.backoff_ms() == 100


def test_view_change_timer_escalates_only_after_a_quorum() -> None:
    r2 = replica(2)
    r2.step(TxsPending((b"tx1",)))
    r2.step(TimerFired(TimerKind.PROGRESS, 0))
    r2.step(TimerFired(TimerKind.PROGRESS, 0))
    assert r2.in_vc and r2.view == 1
    actions = r2.step(TimerFired(TimerKind.VIEW_CHANGE, 1))  # alone: wait, do not run ahead
    assert r2.view == 1 and not sent(actions, ViewChange)
    recv(r2, signed(0, ViewChange(1, 1, r2.stable, ())))
    recv(r2, signed(3, ViewChange(1, 1, r2.stable, ())))  # quorum, but primary 1 is silent
    actions = r2.step(TimerFired(TimerKind.VIEW_CHANGE, 1))
    (vc,) = sent(actions, ViewChange)
    assert vc.view == 2 and timer_delay(actions, TimerKind.VIEW_CHANGE) == 400


def test_f_plus_one_higher_view_changes_make_a_replica_join() -> None:
    """§4.5.2: f+1 VIEW-CHANGEs for higher views prove an honest replica moved on."""
    r3 = replica(3)
    recv(r3, signed(0, ViewChange(1, 5, r3.stable, ())))
    assert r3.view == 0
    actions = recv(r3, signed(1, ViewChange(1, 6, r3.stable, ())))
    (vc,) = sent(actions, ViewChange)
    assert vc.view == 5 and r3.in_vc


def test_votes_of_a_higher_view_from_f_plus_one_members_make_a_replica_join() -> None:
    """A replica that missed a view change (a primary restarted after the others
    replaced it) commits their certificates and never times out: votes of the higher
    view from f+1 members prove an honest replica is there (as in §4.5.2's rule), so it
    joins; one member alone (possibly Byzantine) does not move it."""
    r0 = replica(0)
    payload, block_id = block(1, GENESIS_ID)
    actions = recv(r0, signed(2, Prepare(1, 1, block_id, GENESIS_ID)))
    actions += recv(r0, signed(2, Commit(1, 1, block_id)))
    assert r0.view == 0 and not sent(actions, ViewChange)
    actions = recv(r0, signed(3, Commit(1, 1, block_id)))
    (vc,) = sent(actions, ViewChange)
    assert vc.view == 1 and r0.in_vc and r0.stats["joined_higher_view"] == 1


def test_censored_transaction_triggers_a_view_change() -> None:
    r1 = replica(1)
    actions = r1.step(TxsPending((b"victim",)))
    key = [a.key for a in actions if isinstance(a, SetTimer) and a.kind is TimerKind.CENSOR][0]
    actions = r1.step(TimerFired(TimerKind.CENSOR, key))
    assert sent(actions, ViewChange) and r1.stats["censorship_timeouts"] == 1


def certified_chain(length: int) -> list[CertifiedPayload]:
    out, parent = [], GENESIS_ID
    for h in range(1, length + 1):
        payload, block_id = block(h, parent, nonce=h)
        sigs = []
        for i in (0, 1, 2):
            c = signed(i, Commit(h, 0, block_id))
            sigs.append((i, c.signature))
        out.append(CertifiedPayload(payload, CommitCertificate(h, 0, block_id, tuple(sigs))))
        parent = block_id
    return out


def test_catch_up_from_a_stable_checkpoint_verifies_certificates() -> None:
    """§4.3/§5.3: a stable checkpoint above our state makes us fetch; we verify first."""
    chain = certified_chain(4)
    r3 = replica(3)
    root = b"r" * 32
    for i in (0, 1):
        recv(r3, signed(i, Checkpoint(4, chain[-1].certificate.block_id, root)))
    actions = recv(r3, signed(2, Checkpoint(4, chain[-1].certificate.block_id, root)))
    (request,) = of_type(actions, RequestBlocks)
    assert (request.from_height, request.to_height) == (1, 4) and r3.low == 4
    forged = [
        CertifiedPayload(
            b.payload,
            CommitCertificate(
                b.certificate.height,
                0,
                b.certificate.block_id,
                ((0, b"\x00" * 64), (1, b"\x01" * 64), (2, b"\x02" * 64)),
            ),
        )
        for b in chain
    ]
    actions = r3.step(BlocksReceived(request.peer, tuple(forged)))
    assert not of_type(actions, CommitBlock) and r3.stats["bad_fetched_block"] == 1
    actions = r3.step(BlocksReceived(request.peer, tuple(chain)))
    assert [c.height for c in of_type(actions, CommitBlock)] == [1, 2, 3, 4]
    for h in range(1, 5):
        r3.step(Applied(h, root))
    assert r3.committed == 4


def test_a_replica_behind_a_stable_checkpoint_catches_up_instead_of_changing_view() -> None:
    """§4.5.2 starts a view change when *requests* wait too long; a replica whose stable
    checkpoint (§4.3) is above its last commit knows a quorum executed past it: the
    primary works, the lag is ours. It fetches, asks the next peer soon after an empty
    answer, and neither its progress nor its censorship timeout takes it alone into
    the next view (where it could not vote until f + 1 others moved too)."""
    chain = certified_chain(4)
    r3 = replica(3)
    r3.step(TxsPending((b"tx1",)))  # pending work: the timers run
    root = b"r" * 32
    actions: list[Action] = []
    for i in (0, 1, 2):
        actions = recv(r3, signed(i, Checkpoint(4, chain[-1].certificate.block_id, root)))
    (request,) = of_type(actions, RequestBlocks)
    assert r3.low == 4 > r3.committed == 0 and r3.behind()
    # The peer had nothing yet: retried soon (a quarter view timeout), not after 2 s.
    actions = r3.step(BlocksReceived(request.peer, ()))
    assert timer_delay(actions, TimerKind.FETCH) == CONFIG.view_timeout_ms // 4
    for _ in range(3):
        actions = r3.step(TimerFired(TimerKind.PROGRESS, 0))
        assert not sent(actions, ViewChange) and not r3.in_vc
    assert r3.stats["progress_timeouts_behind"] == 2
    key = max(k for kind, k in r3.timers if kind is TimerKind.CENSOR)
    actions = r3.step(TimerFired(TimerKind.CENSOR, key))
    assert not sent(actions, ViewChange) and r3.stats["censor_timeouts_behind"] == 1
    actions = r3.step(TimerFired(TimerKind.FETCH, 0))
    (again,) = of_type(actions, RequestBlocks)
    assert again.peer != request.peer
    actions = r3.step(BlocksReceived(again.peer, tuple(chain)))
    assert [c.height for c in of_type(actions, CommitBlock)] == [1, 2, 3, 4]
    assert not r3.behind() and r3.view == 0
    # Caught up and still stalled: now the timeout is the primary's fault.
    r3.step(TxsPending((b"tx2",)))
    r3.step(TimerFired(TimerKind.PROGRESS, 0))
    actions = r3.step(TimerFired(TimerKind.PROGRESS, 0))
    assert sent(actions, ViewChange) and r3.view == 1


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        Config(CHAIN, GENESIS_ID, window=0)
    with pytest.raises(ValueError):
        Config(CHAIN, GENESIS_ID, window=8, checkpoint_interval=4, log_size=8)
    assert Config(CHAIN, GENESIS_ID, window=4, checkpoint_interval=16).log_size == 32
    assert encode([1]) == b"\x91\x01"


def test_a_validator_is_counted_once_and_conflicting_commits_are_evidence() -> None:
    r1 = replica(1)
    payload, block_id = block(1, GENESIS_ID)
    recv(r1, signed(0, PrePrepare(1, 0, block_id, GENESIS_ID, payload)))
    for _ in range(5):  # replays of one validator's votes never make a quorum
        recv(r1, signed(2, Prepare(1, 0, block_id, GENESIS_ID)))
        recv(r1, signed(2, Commit(1, 0, block_id)))
    assert r1.slots[1].prepared is None and r1.committed == 0
    actions = recv(r1, signed(2, Commit(1, 0, b"\x05" * 32)))
    (report,) = of_type(actions, ReportEvidence)
    assert report.evidence.sender == KEYS[2]
    assert verify_evidence(report.evidence, CHAIN, validators(), FakeCrypto(KEYS[1]))


def test_two_view_changes_for_one_view_are_evidence() -> None:
    r1 = replica(1)
    recv(r1, signed(2, ViewChange(1, 3, r1.stable, ())))
    again = signed(2, ViewChange(1, 3, r1.stable, ()))
    assert not of_type(recv(r1, again), ReportEvidence), "an identical copy is no evidence"
    from consensus.messages import Proof, ProofKind

    forged_proof = Proof(ProofKind.PREPARED, 1, 0, b"\x01" * 32, GENESIS_ID, ((0, b"\x00" * 64),))
    actions = recv(r1, signed(2, ViewChange(1, 3, r1.stable, (forged_proof,))))
    (report,) = of_type(actions, ReportEvidence)
    assert verify_evidence(report.evidence, CHAIN, validators(), FakeCrypto(KEYS[1]))


def test_forged_view_changes_and_new_views_are_rejected() -> None:
    """A NEW-VIEW needs a quorum of valid VIEW-CHANGEs with valid proofs (§4.5.1)."""
    from consensus.messages import NewView, Proof, ProofKind

    r2 = replica(2)
    forged = Proof(
        ProofKind.PREPARED,
        1,
        0,
        b"\x01" * 32,
        GENESIS_ID,
        tuple((i, b"\x00" * 64) for i in range(3)),
    )
    recv(r2, signed(3, ViewChange(1, 1, r2.stable, (forged,))))
    assert r2.stats["bad_view_change: invalid proof signatures"] == 1
    vcs = tuple(signed(i, ViewChange(1, 1, r2.stable, ())) for i in (0, 3))
    recv(r2, signed(1, NewView(1, 1, vcs)))  # only two view-changes: not a quorum
    assert r2.view == 0 and r2.stats["bad_new_view: fewer than a quorum of view-changes"] == 1
    vcs = tuple(signed(i, ViewChange(1, 1, r2.stable, ())) for i in (0, 2, 3))
    recv(r2, signed(3, NewView(1, 1, vcs)))  # right quorum, wrong primary
    assert r2.view == 0 and r2.stats["bad_new_view: sender is not the primary of the view"] == 1
    recv(r2, signed(1, NewView(1, 1, vcs)))
    assert r2.view == 1 and not r2.in_vc


def test_events_and_actions_are_frozen() -> None:
    import dataclasses

    with pytest.raises(dataclasses.FrozenInstanceError):
        Start().x = 1  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        RequestProposal(1, 0, GENESIS_ID).height = 2  # type: ignore[misc]
