"""Quorum arithmetic (Castro & Liskov, TOCS'02 §4.1: any two quorums of 2f+1 out of
3f+1 intersect in at least one correct replica) and the new-view selection rule."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consensus.certs import select_reproposals
from consensus.messages import CheckpointProof, Proof, ProofKind, ViewChange
from consensus.quorum import Tally, kth_highest, max_faulty, primary_index, quorum_size, weak_quorum


@given(st.integers(min_value=1, max_value=400))
def test_two_quorums_share_an_honest_validator(n: int) -> None:
    q, f = quorum_size(n), max_faulty(n)
    assert q <= n, "a quorum must be reachable with everyone up"
    assert 2 * q - n >= f + 1, "the overlap of two quorums outnumbers the faulty"
    assert n - f >= q, "liveness: the honest validators alone form a quorum"
    assert weak_quorum(n) == f + 1


def test_classic_sizes() -> None:
    assert [(n, max_faulty(n), quorum_size(n)) for n in (1, 4, 7, 10)] == [
        (1, 0, 1),
        (4, 1, 3),
        (7, 2, 5),
        (10, 3, 7),
    ]


def test_tally_counts_each_validator_once() -> None:
    t: Tally[str] = Tally()
    assert t.add("a", 0, b"s0") == 1
    assert t.add("a", 0, b"s0-again") == 1, "a repeated vote is counted once"
    assert t.add("a", 2, b"s2") == 2
    assert t.add("b", 1, b"s1") == 1, "votes for different contents never add up"
    assert t.signatures("a") == ((0, b"s0"), (2, b"s2"))
    assert t.size() == 3 and len(t) == 2


def test_kth_highest_and_primary_rotation() -> None:
    assert kth_highest([5, 1, 9, 7], 2) == 7
    assert kth_highest([5], 2) is None
    assert [primary_index(v, 4) for v in range(6)] == [0, 1, 2, 3, 0, 1]


B = [bytes([i]) * 32 for i in range(10)]
GEN = CheckpointProof(0, B[0], b"", ())


def vc(*proofs: Proof, stable: CheckpointProof = GEN, view: int = 3) -> ViewChange:
    return ViewChange(1, view, stable, tuple(proofs), B[9], b"\x00" * 64)


def prepared(h: int, v: int, block: int, parent: int) -> Proof:
    return Proof(ProofKind.PREPARED, h, v, B[block], B[parent], ())


def test_selection_takes_highest_view_and_keeps_the_chain() -> None:
    """PBFT's O set (TOCS'02 §4.5.1): per height, the prepared certificate of the
    highest view; we also stop at the first height whose choice does not extend the
    chain, because (by the commit rule) nothing from there on can have committed."""
    plan = select_reproposals(
        [
            vc(prepared(1, 0, 1, 0), prepared(2, 0, 2, 1)),
            vc(prepared(1, 1, 3, 0)),  # a later view re-proposed something else at 1
            vc(),
        ]
    )
    # Height 1: view 1 wins (block 3); height 2's only proof extends block 1: cut there.
    assert [(r.height, r.block_id, r.parent_id) for r in plan.reproposals] == [(1, B[3], B[0])]
    assert plan.fresh_from == 2


def test_selection_prefers_committed_and_starts_at_the_highest_checkpoint() -> None:
    stable = CheckpointProof(4, B[4], b"r", ())
    committed = Proof(ProofKind.COMMITTED, 5, 0, B[5], b"", ())
    plan = select_reproposals(
        [
            vc(prepared(5, 2, 6, 4), prepared(6, 2, 7, 6), stable=stable),
            vc(committed, prepared(6, 3, 8, 5)),
            vc(prepared(3, 1, 3, 2)),  # below the checkpoint: ignored
        ]
    )
    assert plan.base == stable
    assert [(r.height, r.block_id) for r in plan.reproposals] == [(5, B[5]), (6, B[8])]
    assert plan.fresh_from == 7


def test_selection_stops_at_a_gap() -> None:
    plan = select_reproposals([vc(prepared(1, 0, 1, 0), prepared(3, 0, 3, 2))])
    assert [r.height for r in plan.reproposals] == [1]


def test_kth_highest_at_the_edges() -> None:
    """k = the number of claims still has an answer; one more has none."""
    assert kth_highest([5], 1) == 5
    assert kth_highest([3, 8, 6], 3) == 3
    assert kth_highest([3, 8, 6], 4) is None
    assert kth_highest([], 1) is None


def test_tally_reports_counts_keys_and_forgets_a_key() -> None:
    t: Tally[str] = Tally()
    assert t.count("a") == 0 and t.signatures("a") == ()
    for index in (2, 0, 1):
        t.add("a", index, b"s%d" % index)
    t.add("b", 3, b"s3")
    assert t.count("a") == 3 and t.count("b") == 1
    assert sorted(t.keys()) == ["a", "b"]
    t.discard("a")
    assert t.count("a") == 0 and t.keys() == ["b"] and t.size() == 1
    t.discard("never-added")  # nothing to forget: no error
    assert len(t) == 1
