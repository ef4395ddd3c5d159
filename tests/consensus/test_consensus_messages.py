"""Wire format of consensus messages, signing domains, records and evidence encoding.

PBFT requires every message to be signed and bound to its kind (Castro & Liskov,
TOCS'02 §4.1 "all messages are signed"); the COMMIT signature must be exactly the
ledger's commit vote so that a quorum of COMMITs is a CommitCertificate.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.evidence import Evidence, make_evidence, verify_evidence
from consensus.messages import (
    MAX_MESSAGE_BYTES,
    Checkpoint,
    CheckpointProof,
    Commit,
    Kind,
    NewView,
    Prepare,
    PrePrepare,
    Proof,
    ProofKind,
    ViewChange,
    decode_message,
    encode_message,
)
from consensus.record import SigningRecord, VoteEntry
from consensus.signer import Ed25519Crypto
from ledger import crypto as ledger_crypto
from ledger.codec import Domain, encode
from ledger.errors import DecodeError
from ledger.types import CommitCertificate, Validator, ValidatorSet, commit_vote_body
from node.sim.pbft.crypto import FakeCrypto, make_keys

CHAIN = "test-chain"
KEYS = make_keys(4)
SIGNERS = [FakeCrypto(k) for k in KEYS]
H32 = st.binary(min_size=32, max_size=32)
U = st.integers(min_value=1, max_value=2**40)


def sign(i: int, message):  # type: ignore[no-untyped-def]
    return message.signed_by(SIGNERS[i], CHAIN)


def sample_messages() -> list:
    b1, b2 = b"\x01" * 32, b"\x02" * 32
    proof = Proof(ProofKind.PREPARED, 5, 1, b1, b2, ((0, b"\x07" * 64), (2, b"\x08" * 64)))
    cproof = Proof(ProofKind.COMMITTED, 6, 1, b2, b"", ((1, b"\x09" * 64),))
    stable = CheckpointProof(4, b1, b"\x03" * 32, ((0, b"\x04" * 64),))
    vc = sign(1, ViewChange(1, 2, stable, (proof, cproof)))
    return [
        sign(0, PrePrepare(5, 1, b1, b2, b"payload")),
        sign(1, Prepare(5, 1, b1, b2)),
        sign(2, Commit(5, 1, b1)),
        sign(3, Checkpoint(8, b1, b"\x05" * 32)),
        vc,
        sign(2, NewView(1, 2, (vc,))),
    ]


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: type(m).__name__)
def test_round_trip_is_canonical_and_signature_verifies(message) -> None:  # type: ignore[no-untyped-def]
    data = encode_message(message)
    back = decode_message(data)
    assert back == message and encode_message(back) == data
    assert SIGNERS[0].verify(back.sender, back.DOMAIN, back.body(CHAIN), back.signature)
    assert not SIGNERS[0].verify(
        back.sender, back.DOMAIN, back.body("other-chain"), back.signature
    ), "the chain id is part of every signature"


@pytest.mark.parametrize("message", sample_messages(), ids=lambda m: type(m).__name__)
def test_every_truncation_and_extension_is_a_decode_error(message) -> None:  # type: ignore[no-untyped-def]
    data = encode_message(message)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode_message(data[:cut])
    with pytest.raises(DecodeError):
        decode_message(data + b"\x00")


def test_size_limit_and_wrong_shapes_are_decode_errors() -> None:
    big = sign(0, PrePrepare(1, 0, b"\x01" * 32, b"\x02" * 32, b"x" * 2000))
    with pytest.raises(DecodeError):
        decode_message(big.encoded, max_bytes=1000)
    assert MAX_MESSAGE_BYTES > 16 * 1024 * 1024
    bad = [
        encode([9, 1, 2]),  # unknown kind
        encode([int(Kind.PREPARE), 1, 0, b"\x01" * 32, b"\x02" * 32, b"k" * 32]),  # missing sig
        encode([int(Kind.COMMIT), True, 0, b"\x01" * 32, b"k" * 32, b"s" * 64]),  # bool height
        encode([int(Kind.COMMIT), 0, 0, b"\x01" * 32, b"k" * 32, b"s" * 64]),  # height 0
        encode([int(Kind.COMMIT), 1, 0, b"\x01" * 31, b"k" * 32, b"s" * 64]),  # short id
        encode([int(Kind.COMMIT), 1, 0, b"\x01" * 32, b"k" * 32, b"s" * 63]),  # short sig
        b"\x96\xcc\x03\x01\x00\xc4\x20" + b"\x01" * 32,  # non-canonical int, truncated
    ]
    for data in bad:
        with pytest.raises(DecodeError):
            decode_message(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_raises_anything_but_decode_error(data: bytes) -> None:
    try:
        decode_message(data)
    except DecodeError:
        pass


@settings(max_examples=100, deadline=None)
@given(U, U, H32, H32, st.binary(max_size=200))
def test_pre_prepare_round_trip_property(
    height: int, view: int, block_id: bytes, parent: bytes, payload: bytes
) -> None:
    m = sign(0, PrePrepare(height, view, block_id, parent, payload))
    assert decode_message(m.encoded) == m


def test_signatures_are_domain_separated() -> None:
    b1, b2 = b"\x01" * 32, b"\x02" * 32
    prepare = sign(0, Prepare(5, 1, b1, b2))
    commit = sign(0, Commit(5, 1, b1))
    # A prepare's signature is no good as a commit (and vice versa), nor as a pre-prepare.
    assert not SIGNERS[0].verify(KEYS[0], Domain.COMMIT, commit.body(CHAIN), prepare.signature)
    forged = dataclasses.replace(commit, signature=prepare.signature)
    assert not SIGNERS[0].verify(KEYS[0], forged.DOMAIN, forged.body(CHAIN), forged.signature)
    pp = PrePrepare(5, 1, b1, b2, b"")
    assert not SIGNERS[0].verify(KEYS[0], Domain.PRE_PREPARE, pp.body(CHAIN), prepare.signature)


def test_commit_signatures_are_the_ledger_commit_certificate() -> None:
    """Requirement: the certificate is exactly the COMMIT signatures (Ed25519)."""
    keys = [ledger_crypto.KeyPair.from_seed(bytes([i]) * 32) for i in range(4)]
    vset = ValidatorSet.of([Validator(f"m{i}", k.public_key) for i, k in enumerate(keys)])
    block_id = b"\x0b" * 32
    commits = [Commit(7, 3, block_id).signed_by(Ed25519Crypto(k), CHAIN) for k in keys[:3]]
    assert commits[0].body(CHAIN) == commit_vote_body(CHAIN, 7, 3, block_id)
    sigs = tuple(sorted((vset.index_of(c.sender), c.signature) for c in commits))
    cert = CommitCertificate(7, 3, block_id, sigs)  # type: ignore[arg-type]
    cert.verify(CHAIN, vset, block_id)  # raises if not a quorum of valid signatures
    assert CommitCertificate.decode(cert.encode()) == cert


def test_signing_record_round_trip() -> None:
    msgs = sample_messages()
    vc, nv = msgs[4], msgs[5]
    record = SigningRecord(
        epoch=1,
        view=2,
        view_changes=(vc,),
        new_view=nv,
        votes=(
            VoteEntry(5, Kind.PREPARE, 1, b"\x01" * 32, b"\x02" * 32),
            VoteEntry(5, Kind.COMMIT, 1, b"\x01" * 32, b""),
        ),
        proofs=vc.proofs[:1],
        stable=vc.stable,
    )
    assert SigningRecord.decode(record.encode()) == record
    empty = SigningRecord(1, 0, (), None, (), (), None)
    assert SigningRecord.decode(empty.encode()) == empty
    with pytest.raises(DecodeError):
        SigningRecord.decode(record.encode()[:-1])


def test_evidence_encoding_and_verification() -> None:
    vset = ValidatorSet.of([Validator(f"v{i:03d}", k) for i, k in enumerate(KEYS)])
    a = sign(0, PrePrepare(5, 1, b"\x01" * 32, b"\x02" * 32, b"a"))
    b = sign(0, PrePrepare(5, 1, b"\x03" * 32, b"\x02" * 32, b"b"))
    evidence = make_evidence(a, b)
    assert evidence is not None
    assert Evidence.decode(evidence.encode()) == evidence
    assert verify_evidence(evidence, CHAIN, vset, SIGNERS[0])
    assert make_evidence(a, a) is None, "the same message twice is not equivocation"
    other_view = sign(0, PrePrepare(5, 2, b"\x03" * 32, b"\x02" * 32, b"b"))
    assert make_evidence(a, other_view) is None
    tampered = Evidence(a, dataclasses.replace(b, signature=b"\x00" * 64))
    assert not verify_evidence(tampered, CHAIN, vset, SIGNERS[0])
    two_senders = Evidence(a, sign(1, PrePrepare(5, 1, b"\x03" * 32, b"\x02" * 32, b"b")))
    assert not verify_evidence(two_senders, CHAIN, vset, SIGNERS[0])
    outsider = ValidatorSet.of([Validator("x", b"\x99" * 32)])
    assert not verify_evidence(evidence, CHAIN, outsider, SIGNERS[0])
