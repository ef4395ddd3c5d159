"""The store's index of attested commitments ("K"): what admission asks of every
transaction ("was this ever attested?") without walking the state tree. It must agree
with the tree, survive a reopen, and never answer for a store that did not keep it."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ledger.chain import Ledger
from ledger.records import AttestationRecord, attestation_key
from ledger.store_format import K_ATTESTED_INDEX
from ledger.testchain import Consortium
from ledger.types import Revoke, RevokeReason
from tests.support.bundles import commit_block


def _c(i: int) -> bytes:
    return hashlib.sha256(b"doc %d" % i).digest()


def _from_tree(lg: Ledger, commitment: bytes) -> AttestationRecord | None:
    raw = lg.tree.get(attestation_key(commitment), lg.height)
    return AttestationRecord.decode(raw) if raw is not None else None


def test_the_head_answers_from_the_index_exactly_as_the_tree(tmp_path: Path) -> None:
    cons = Consortium.make()
    lg = Ledger.open(tmp_path / "db", cons.genesis)
    for block in range(3):
        commit_block(lg, cons, [cons.attest(_c(10 * block + i)) for i in range(5)])
    commit_block(lg, cons, [cons.tx("szcredit", Revoke(_c(0), RevokeReason.DATA_CHANGED))])
    head = lg.head
    assert head.never_attested is not None, "a new store keeps the index"
    for i in range(40):
        assert head.attestation(_c(i)) == _from_tree(lg, _c(i)), i
        assert lg.store.ever_attested(_c(i)) == (i % 10 < 5 and i < 30), i
    assert head.attestation(_c(0)) is not None and head.attestation(_c(0)).revoked_height
    lg.close()

    # Reopened, the committed head reads the index again.
    lg = Ledger.open(tmp_path / "db", cons.genesis)
    assert lg.head.never_attested is not None
    assert lg.head.attestation(_c(1)) == _from_tree(lg, _c(1)) is not None
    assert lg.head.attestation(_c(99)) is None
    lg.close()


def test_a_store_without_the_index_is_read_through_the_tree(tmp_path: Path) -> None:
    cons = Consortium.make()
    lg = Ledger.open(tmp_path / "db", cons.genesis)
    commit_block(lg, cons, [cons.attest(_c(1))])
    lg.store._db.delete(K_ATTESTED_INDEX)  # as a store made before the index was
    lg.close()
    lg = Ledger.open(tmp_path / "db", cons.genesis)
    assert not lg.store.attestation_indexed
    assert lg.head.never_attested is None
    assert lg.head.attestation(_c(1)) is not None
    lg.close()


def test_speculative_states_do_not_trust_the_index(tmp_path: Path) -> None:
    """A block built but not committed attests what the store's index cannot know yet."""
    cons = Consortium.make()
    lg = Ledger.open(tmp_path / "db", cons.genesis)
    ex = lg.build([cons.attest(_c(7))], time_ms=lg.tip.time_ms + 1000, proposer=cons.proposer)
    assert ex.state.never_attested is None
    assert ex.state.attestation(_c(7)) is not None
    assert not lg.store.ever_attested(_c(7))
    lg.close()
