"""The bundle verifier's checks one at a time (ledger/verify.py), by what a bank would try.

test_bundle.py alters a good bundle's bytes at random places; here each case is built on
purpose -- a certificate one signature short, a header of another chain, a pinned trust
anchor, a repeated validator-set change, a REVOKE decided by governance -- and checked for
its exact refusal reason. Where a check guards against a *certified* lie (a record that
points at the wrong transaction) the test plays a dishonest quorum: it holds the test
consortium's validator keys, so it can certify a head whose state it made up.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from typing import Any

import pytest

from ledger import merkle
from ledger.bundle import CertifiedHeader, IncludedTx, ProofBundle, ValsetChange
from ledger.chain import Ledger
from ledger.codec import Domain
from ledger.crypto import KeyPair
from ledger.prove import Prover
from ledger.records import AttestationRecord, Status, attestation_key
from ledger.smt import MemoryNodeStore, SparseMerkleTree
from ledger.testchain import CHAIN_ID, Consortium
from ledger.types import (
    BlockHeader,
    CommitCertificate,
    GovAction,
    GovPropose,
    GovVote,
    RevokeReason,
    Transaction,
    Validator,
    ValidatorSet,
    commit_vote_body,
)
from ledger.verify import (
    DEFAULT_MAX_AGE_MS,
    Reason,
    TrustAnchor,
    VerificationError,
    check_certificate,
    verify_bundle,
)
from tests.support.bundles import NOW_MS, C, commit_block, make_chain

GOV_REVOKED = C[12]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """test_bundle's chain (with a validator-set change and an issuer's REVOKE), then one
    attestation revoked by a governance vote, so the head block holds that vote."""
    cons, lg, _ = make_chain(tmp_path_factory.mktemp("v") / "db")
    commit_block(lg, cons, [cons.attest(GOV_REVOKED)])
    args = (GOV_REVOKED, int(RevokeReason.DATA_CHANGED))
    prop = cons.tx("cnix", GovPropose(GovAction.REVOKE_ATTESTATION, args, lg.height + 50))
    commit_block(lg, cons, [prop])
    commit_block(lg, cons, [cons.tx(v, GovVote(prop.tx_id, True)) for v in ("hkbank", "szcredit")])
    prover = Prover(lg)
    bundles = {
        name: json.loads(json.dumps(prover.bundle(c).to_json()))
        for name, c in [("valid", C[0]), ("revoked", C[1]), ("expired", C[2]), ("gov", GOV_REVOKED)]
    }
    yield cons, lg, bundles
    lg.close()


def bundle(chain: Any, name: str) -> ProofBundle:
    return ProofBundle.from_json(copy.deepcopy(chain[2][name]))


def anchor(chain: Any) -> TrustAnchor:
    return TrustAnchor.from_genesis(chain[0].genesis)


def refusal(b: ProofBundle, trust: TrustAnchor, **kw: int | None) -> Reason:
    with pytest.raises(VerificationError) as e:
        verify_bundle(b, trust, **{"now_ms": NOW_MS, **kw})
    return e.value.reason


def certify(
    cons: Consortium,
    header: BlockHeader,
    validators: ValidatorSet,
    signers: int | None = None,
    height: int | None = None,
    block_id: bytes | None = None,
    node_keys: list[KeyPair] | None = None,
) -> bytes:
    """A commit certificate made with the test validators' keys (a dishonest quorum can)."""
    block_id = header.block_id if block_id is None else block_id
    height = header.height if height is None else height
    body = commit_vote_body(CHAIN_ID, height, 0, block_id)
    keys = {k.public_key: k for k in (node_keys or cons.node_keys.values())}
    count = validators.quorum if signers is None else signers
    sigs = tuple(
        (i, keys[v.node_key].sign(Domain.COMMIT, body))
        for i, v in enumerate(validators.validators[:count])
    )
    return CommitCertificate(height, 0, block_id, sigs).encode()


def head_of(b: ProofBundle) -> BlockHeader:
    return BlockHeader.decode(b.head.header)


def with_head(b: ProofBundle, header: BlockHeader, certificate: bytes) -> ProofBundle:
    return replace(b, head=CertifiedHeader(header.encode(), certificate))


# -- certificates ------------------------------------------------------------------------


def test_a_verifying_bundle_and_its_head_certificate(chain: Any) -> None:
    cons, lg, _ = chain
    b = bundle(chain, "valid")
    assert verify_bundle(b, anchor(chain), now_ms=NOW_MS).status == Status.VALID
    head = head_of(b)
    cert = check_certificate(head, b.head.certificate, lg.validators_at(head.height), CHAIN_ID, "h")
    assert cert == CommitCertificate.decode(b.head.certificate)


def test_a_certificate_one_signature_short_is_refused(chain: Any) -> None:
    cons, lg, _ = chain
    b = bundle(chain, "valid")
    head = head_of(b)
    vs = lg.validators_at(head.height)
    assert verify_bundle(with_head(b, head, certify(cons, head, vs)), anchor(chain), now_ms=NOW_MS)
    short = with_head(b, head, certify(cons, head, vs, signers=vs.quorum - 1))
    assert refusal(short, anchor(chain)) == Reason.INSUFFICIENT_QUORUM
    # the same for a validator-set change's certificate
    ch = b.valset_changes[0]
    h = BlockHeader.decode(ch.header)
    genesis_set = cons.genesis.validators
    cut = replace(ch, certificate=certify(cons, h, genesis_set, signers=genesis_set.quorum - 1))
    assert refusal(replace(b, valset_changes=(cut,)), anchor(chain)) == Reason.INSUFFICIENT_QUORUM


def test_a_certificate_for_another_height_or_block_is_refused(chain: Any) -> None:
    cons, lg, _ = chain
    b = bundle(chain, "valid")
    head = head_of(b)
    vs = lg.validators_at(head.height)
    # signed by a quorum, but over (height + 1, this block id): never what an honest one signs
    other_height = with_head(b, head, certify(cons, head, vs, height=head.height + 1))
    assert refusal(other_height, anchor(chain)) == Reason.MALFORMED
    other_block = with_head(b, head, certify(cons, head, vs, block_id=b"\x05" * 32))
    assert refusal(other_block, anchor(chain)) == Reason.BAD_SIGNATURE


def test_a_header_of_another_chain_is_refused_as_such(chain: Any) -> None:
    cons, lg, _ = chain
    b = bundle(chain, "valid")
    head = replace(head_of(b), chain_id="another-chain")
    vs = lg.validators_at(head.height)
    assert refusal(with_head(b, head, certify(cons, head, vs)), anchor(chain)) == Reason.WRONG_CHAIN


# -- the chain of validator sets ---------------------------------------------------------


def change_height(b: ProofBundle) -> int:
    return BlockHeader.decode(b.valset_changes[0].header).height


def test_a_pinned_anchor_trusts_its_set_from_its_height_on(chain: Any) -> None:
    cons, lg, _ = chain
    b = bundle(chain, "valid")
    c = change_height(b)
    old = cons.genesis.validators
    # the genesis set pinned at the change's height: the change is still to be followed
    assert verify_bundle(b, TrustAnchor(CHAIN_ID, old, c), now_ms=NOW_MS).status == Status.VALID
    # pinned after it: a change at or below the anchor's height is out of order
    assert refusal(b, TrustAnchor(CHAIN_ID, old, c + 1)) == Reason.VALIDATOR_CHAIN_BROKEN
    # the set in force after the change, pinned after it: no change needed
    new = lg.validators_at(c + 1)
    assert verify_bundle(
        replace(b, valset_changes=()), TrustAnchor(CHAIN_ID, new, c + 1), now_ms=NOW_MS
    )


def ordinary_change(cons: Consortium, lg: Ledger, height: int) -> ValsetChange:
    """A certified header that changes nothing (next set = this set), as a change entry."""
    block = lg.store.get_block(height)
    assert block is not None
    header = block.header
    vs = lg.validators_at(height)
    assert header.next_validator_set_hash == vs.hash
    return ValsetChange(header.encode(), certify(cons, header, vs), vs.encode())


def test_validator_set_changes_must_be_in_order_and_below_the_head(chain: Any) -> None:
    cons, lg, _ = chain
    b = bundle(chain, "valid")
    c, head = change_height(b), head_of(b).height
    real = b.valset_changes[0]
    extra = ordinary_change(cons, lg, c + 2)
    # a certified header that changes nothing may be listed (it proves what it says) ...
    assert verify_bundle(replace(b, valset_changes=(real, extra)), anchor(chain), now_ms=NOW_MS)
    # ... but not twice, nor out of order, nor at the head's height
    for changes in [
        (real, extra, extra),
        (extra, real),
        (real, ordinary_change(cons, lg, head)),
    ]:
        assert refusal(replace(b, valset_changes=changes), anchor(chain)) == (
            Reason.VALIDATOR_CHAIN_BROKEN
        )


def test_a_change_must_hand_over_to_the_set_its_header_names(chain: Any) -> None:
    """An attacker swaps the next set of a real, certified change for its own four keys
    and certifies a head with them: refused at the swap."""
    cons, _, _ = chain
    b = bundle(chain, "valid")
    keys = [KeyPair.from_seed(bytes([0xA0 + i]) * 32) for i in range(4)]
    theirs = ValidatorSet.of([Validator(f"x{i}", k.public_key) for i, k in enumerate(keys)])
    head = replace(head_of(b), validator_set_hash=theirs.hash)
    cert = certify(cons, head, theirs, node_keys=keys)
    swapped = replace(b.valset_changes[0], next_validators=theirs.encode())
    b2 = replace(with_head(b, head, cert), valset_changes=(swapped,))
    assert refusal(b2, anchor(chain)) == Reason.VALIDATOR_CHAIN_BROKEN


# -- freshness ---------------------------------------------------------------------------


def test_freshness_is_inclusive_and_says_how_old(chain: Any) -> None:
    b = bundle(chain, "valid")
    t = head_of(b).time_ms
    trust = anchor(chain)
    v = verify_bundle(b, trust, now_ms=t + 5000, max_age_ms=5000)
    assert (v.height, v.block_time_ms, v.head_age_ms, v.checked_at_ms, v.max_age_ms) == (
        head_of(b).height,
        t,
        5000,
        t + 5000,
        5000,
    ), "a verdict carries the head it was judged at and its age by the verifier's clock"
    with pytest.raises(VerificationError) as e:
        verify_bundle(b, trust, now_ms=t + 5001, max_age_ms=5000)
    assert e.value.reason == Reason.STATE_TOO_OLD
    assert "state too old" in str(e.value)
    assert "is 5001 ms old by this verifier's clock; at most 5000 ms" in str(e.value)
    assert e.value.head is not None and e.value.head.age_ms == 5001
    assert e.value.to_json()["status"] == "UNVERIFIABLE"
    assert e.value.to_json()["head_age_ms"] == 5001


def test_freshness_applies_by_default_and_only_none_turns_it_off(chain: Any) -> None:
    b = bundle(chain, "valid")
    t = head_of(b).time_ms
    trust = anchor(chain)
    assert verify_bundle(b, trust, now_ms=t + DEFAULT_MAX_AGE_MS).max_age_ms == DEFAULT_MAX_AGE_MS
    assert refusal(b, trust, now_ms=t + DEFAULT_MAX_AGE_MS + 1) == Reason.STATE_TOO_OLD
    # an auditor judging an old bundle says so explicitly
    assert verify_bundle(b, trust, now_ms=t + 10**9, max_age_ms=None).status == Status.VALID
    with pytest.raises(ValueError, match="max_age_ms"):
        verify_bundle(b, trust, now_ms=t, max_age_ms=-1)


def test_a_head_ahead_of_the_verifiers_clock_is_fresh(chain: Any) -> None:
    """Clocks differ by a few seconds: a head "from the future" has a negative age."""
    b = bundle(chain, "valid")
    t = head_of(b).time_ms
    assert verify_bundle(b, anchor(chain), now_ms=t - 3000).head_age_ms == -3000


def test_expiry_is_judged_by_the_verifiers_clock_not_the_heads(chain: Any) -> None:
    b = bundle(chain, "expired")
    until = AttestationRecord.decode(b.record or b"").valid_until_ms
    trust = anchor(chain)
    assert head_of(b).time_ms >= until, "by the head's time it has expired"
    # a verifier whose clock is a second behind the head: not yet
    assert verify_bundle(b, trust, now_ms=until - 1).status == Status.VALID
    assert verify_bundle(b, trust, now_ms=until).status == Status.EXPIRED


# -- included transactions ---------------------------------------------------------------


def test_a_transaction_of_another_chain_is_refused_as_such(chain: Any) -> None:
    cons, _, _ = chain
    b = bundle(chain, "valid")
    assert b.attest is not None
    tx = Transaction.decode(b.attest.tx)
    key = cons.member_keys["szcredit"]
    foreign = replace(tx, chain_id="another-chain", signature=b"").signed(key)
    assert foreign.signature_ok()
    b2 = replace(b, attest=replace(b.attest, tx=foreign.encode()))
    assert refusal(b2, anchor(chain)) == Reason.WRONG_CHAIN


def test_a_transaction_in_the_head_block_must_be_in_the_head_block(chain: Any) -> None:
    """The governance REVOKE sits in the head block; a look-alike header at that height
    (same transactions, another time) holds the transaction but is not the head."""
    b = bundle(chain, "gov")
    assert b.revoke is not None
    head = head_of(b)
    assert BlockHeader.decode(b.revoke.header) == head
    twin = replace(head, time_ms=head.time_ms + 1)
    b2 = replace(b, revoke=replace(b.revoke, header=twin.encode()))
    assert refusal(b2, anchor(chain)) == Reason.HISTORY_ROOT_MISMATCH


def test_a_revocation_by_governance_verifies(chain: Any) -> None:
    v = verify_bundle(bundle(chain, "gov"), anchor(chain), now_ms=NOW_MS)
    assert v.status == Status.REVOKED
    assert v.revoke_reason == RevokeReason.DATA_CHANGED
    assert v.revoked_height == head_of(bundle(chain, "gov")).height


def test_a_record_needs_its_attest_and_a_revoked_one_its_revoke(chain: Any) -> None:
    """The ATTEST is the issuer's signed claim and the REVOKE the signed withdrawal the
    record names (issuer and revoker keys): a verdict needs both, so either missing is
    malformed rather than taken on the record's word."""
    trust = anchor(chain)
    b = bundle(chain, "valid")
    assert refusal(replace(b, attest=None), trust) == Reason.MALFORMED
    assert refusal(replace(bundle(chain, "revoked"), revoke=None), trust) == Reason.MALFORMED
    r = verify_bundle(bundle(chain, "revoked"), trust, now_ms=NOW_MS)
    assert r.status == Status.REVOKED and r.revoke_reason == RevokeReason.DATA_CHANGED


def test_verdict_fields_and_json(chain: Any) -> None:
    v = verify_bundle(bundle(chain, "valid"), anchor(chain), now_ms=NOW_MS)
    assert (v.valid_until_ms, v.revoked_height, v.revoke_reason) == (None, None, None)
    doc = v.to_json()
    assert doc["status"] == str(Status.VALID)
    assert doc["commitment"] == C[0].hex() and doc["attest_tx_id"] == v.attest_tx_id.hex()  # type: ignore[union-attr]
    r = verify_bundle(bundle(chain, "revoked"), anchor(chain), now_ms=NOW_MS)
    assert r.revoke_reason == RevokeReason.DATA_CHANGED and r.revoked_height


# -- a dishonest quorum certifying a made-up state ---------------------------------------


def forged(
    chain: Any, name: str, commitment: bytes, record: AttestationRecord | bytes
) -> ProofBundle:
    """``name``'s bundle, re-pointed at ``commitment`` whose record the quorum made up:
    a head with a state root holding only that record, certified by the head's set."""
    cons, lg, _ = chain
    b = bundle(chain, name)
    key = attestation_key(commitment)
    raw = record if isinstance(record, bytes) else record.encode()
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store)
    result = tree.update(None, 1, {key: raw})
    store.apply(result)
    proof = tree.prove(key, 1)
    head = replace(head_of(b), state_root=result.root)
    cert = certify(cons, head, lg.validators_at(head.height))
    return replace(
        with_head(b, head, cert),
        commitment=commitment,
        record=raw,
        state_proof=proof.to_json(),
    )


def test_forged_records_must_match_their_transactions(chain: Any) -> None:
    b = bundle(chain, "valid")
    rec = AttestationRecord.decode(b.record or b"")
    trust = anchor(chain)
    # the forgery machinery itself is sound: the true record re-certified verifies
    assert (
        verify_bundle(forged(chain, "valid", C[0], rec), trust, now_ms=NOW_MS).status
        == Status.VALID
    )
    # a record for another commitment pointing at C[0]'s ATTEST
    assert refusal(forged(chain, "valid", C[7], rec), trust) == Reason.WRONG_COMMITMENT
    for wrong in (rec._replace(doc_type="bank-statement"), rec._replace(valid_until_ms=1)):
        assert refusal(forged(chain, "valid", C[0], wrong), trust) == Reason.RECORD_MISMATCH
    # a certified record that does not decode
    assert refusal(forged(chain, "valid", C[0], b"\x93junk"), trust) == Reason.MALFORMED
    # a REVOKE carried for a record that says it is not revoked
    revoked = bundle(chain, "revoked")
    carrying = replace(forged(chain, "valid", C[0], rec), revoke=revoked.revoke)
    assert refusal(carrying, trust) == Reason.MALFORMED


def test_the_issuers_signature_is_checked_even_in_a_certified_block(chain: Any) -> None:
    """A dishonest quorum puts an ATTEST with a broken signature in a block it certifies
    (the head, holding just that transaction): the verifier still refuses it."""
    cons, lg, _ = chain
    b = bundle(chain, "valid")
    assert b.attest is not None
    tx = Transaction.decode(b.attest.tx)
    bad = replace(tx, signature=bytes(64))
    assert not bad.signature_ok()
    head0 = head_of(b)
    record = AttestationRecord("szcredit", tx.sender, "credit-report", 0, head0.height, 0)
    key = attestation_key(C[0])
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store)
    result = tree.update(None, 1, {key: record.encode()})
    store.apply(result)
    head = replace(head0, tx_count=1, tx_root=merkle.root([bad.tx_id]), state_root=result.root)
    b2 = replace(
        with_head(b, head, certify(cons, head, lg.validators_at(head.height))),
        record=record.encode(),
        state_proof=tree.prove(key, 1).to_json(),
        attest=IncludedTx(bad.encode(), head.encode(), 0, (), ()),
    )
    assert refusal(b2, anchor(chain)) == Reason.BAD_SIGNATURE
    # the same forgery with the signature intact verifies: the signature was the only fault
    good = replace(head, tx_root=merkle.root([tx.tx_id]))
    b3 = replace(
        with_head(b2, good, certify(cons, good, lg.validators_at(good.height))),
        attest=IncludedTx(tx.encode(), good.encode(), 0, (), ()),
    )
    assert verify_bundle(b3, anchor(chain), now_ms=NOW_MS).status == Status.VALID


def test_a_forged_revocation_must_point_at_this_commitments_revoke(chain: Any) -> None:
    """C[0] 'revoked' by pointing at the REVOKE of C[1]: refused."""
    trust = anchor(chain)
    revoked = bundle(chain, "revoked")
    r_rec = AttestationRecord.decode(revoked.record or b"")
    rec = AttestationRecord.decode(bundle(chain, "valid").record or b"")
    lie = rec._replace(
        revoked_height=r_rec.revoked_height,
        revoke_reason=r_rec.revoke_reason,
        revoke_position=r_rec.revoke_position,
        revoker=r_rec.revoker,
        revoker_key=r_rec.revoker_key,
    )
    b = replace(forged(chain, "valid", C[0], lie), revoke=revoked.revoke)
    assert refusal(b, trust) == Reason.WRONG_COMMITMENT
    # the carried transaction must sit where the record says
    assert isinstance(b.revoke, IncludedTx)
    b2 = replace(b, revoke=replace(b.revoke, index=b.revoke.index + 1))
    assert refusal(b2, trust) == Reason.RECORD_MISMATCH


def test_a_block_at_the_head_has_an_empty_history_proof_and_one_below_needs_its_own(
    chain: Any,
) -> None:
    """docs/PROOFS.md §11 step 4: the head is in no history tree of its own, so a
    transaction in the head block comes with ``[]``; anything else is refused. A block
    below the head cannot drop its proof."""
    trust = anchor(chain)
    b = bundle(chain, "gov")  # its REVOKE (the deciding vote) is in the head block
    assert b.revoke is not None and b.revoke.history_proof == ()
    head = head_of(b)
    for forged in ([head.history_root], [b"\x00" * 32], [head.block_id, head.history_root]):
        b2 = replace(b, revoke=replace(b.revoke, history_proof=tuple(forged)))
        assert refusal(b2, trust) == Reason.HISTORY_ROOT_MISMATCH, forged
    assert b.attest is not None and BlockHeader.decode(b.attest.header).height < head.height
    assert b.attest.history_proof, "a block below the head has a proof"
    assert refusal(replace(b, attest=replace(b.attest, history_proof=())), trust) == (
        Reason.HISTORY_ROOT_MISMATCH
    )
