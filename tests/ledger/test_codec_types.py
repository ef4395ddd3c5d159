"""Canonical encoding and strict decoding of every ledger type (docs/PROOFS.md §Encoding)."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import codec
from ledger.errors import DecodeError, ValidationError
from ledger.types import (
    Block,
    BlockHeader,
    ChainParams,
    CommitCertificate,
    Member,
    Transaction,
    ValidatorSet,
)
from tests.support import strategies as S

TYPES: list[tuple[Any, Any]] = [
    (Transaction, S.transactions()),
    (BlockHeader, S.headers),
    (ValidatorSet, S.validator_sets),
    (CommitCertificate, S.certificates),
]


def _decode(cls: Any, data: bytes) -> Any:
    if hasattr(cls, "decode"):
        return cls.decode(data)
    return cls.from_wire(codec.decode(data))


@pytest.mark.parametrize("cls,strategy", TYPES, ids=lambda x: getattr(x, "__name__", ""))
def test_round_trip(cls: Any, strategy: Any) -> None:
    @given(strategy)
    @settings(max_examples=150, deadline=None)
    def check(obj: Any) -> None:
        data = obj.encode()
        again = _decode(cls, data)
        assert again.to_wire() == obj.to_wire()
        assert again.encode() == data

    check()


@given(S.members())
def test_member_and_params_round_trip(m: Member) -> None:
    assert Member.from_wire(codec.decode(codec.encode(m.to_wire()))) == m
    p = ChainParams()
    assert ChainParams.from_wire(codec.decode(codec.encode(p.to_wire()))) == p


@pytest.mark.parametrize("cls,strategy", TYPES, ids=lambda x: getattr(x, "__name__", ""))
def test_single_byte_mutations_never_crash(cls: Any, strategy: Any) -> None:
    """Every one-byte change either fails to decode (DecodeError only) or changes the object.

    For signed transactions a changed object must also fail its signature check, so no
    mutation yields a different transaction that still verifies.
    """

    @given(strategy, st.data())
    @settings(max_examples=60, deadline=None)
    def check(obj: Any, data: st.DataObject) -> None:
        raw = obj.encode()
        pos = data.draw(st.integers(0, len(raw) - 1))
        new = data.draw(st.integers(0, 255).filter(lambda b: b != raw[pos]))
        mutated = raw[:pos] + bytes([new]) + raw[pos + 1 :]
        try:
            decoded = _decode(cls, mutated)
        except DecodeError:
            return
        assert decoded.encode() == mutated
        assert decoded.to_wire() != obj.to_wire()
        if isinstance(decoded, Transaction):
            assert not decoded.signature_ok()

    check()


def test_every_byte_of_a_transaction_is_covered() -> None:
    """Exhaustive: each position and each replacement byte of one signed transaction."""
    tx = S.sample_tx(3)
    raw = tx.encode()
    for pos in range(len(raw)):
        for new in (raw[pos] ^ 0x01, raw[pos] ^ 0x80, 0x00, 0xFF, 0xC1):
            if new == raw[pos]:
                continue
            mutated = raw[:pos] + bytes([new]) + raw[pos + 1 :]
            try:
                t = Transaction.decode(mutated)
            except DecodeError:
                continue
            assert not t.signature_ok(), f"mutation at byte {pos} still verifies"


@pytest.mark.parametrize(
    "bad,reason",
    [
        (codec.encode([1, 2]) + b"\x00", "trailing"),
        (b"\xcd\x00\x05", "non-canonical"),  # 5 encoded as uint16
        (msgpack.packb({"a": 1}), "maps"),
        (msgpack.packb(1.5), "floats"),
        (msgpack.packb(None), "nil"),
        (b"\xc1", "malformed"),
        (b"", "empty"),
        (b"\xd9\x01a", "non-canonical"),  # str8 for a 1-char string
        (b"\xa2\xff\xfe", "malformed"),  # invalid UTF-8
        (msgpack.ExtType(1, b"x") and msgpack.packb(msgpack.ExtType(1, b"x")), "extension"),
    ],
)
def test_decode_rejects(bad: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        codec.decode(bad)


def test_decode_size_limit() -> None:
    big = codec.encode([b"x" * 5000])
    with pytest.raises(DecodeError, match="exceeds"):
        codec.decode(big, max_bytes=4096)
    with pytest.raises(DecodeError, match="exceeds"):
        Transaction.decode(codec.encode([b"x" * 5000]))


def test_unknown_and_missing_fields_rejected() -> None:
    tx = S.sample_tx(4)
    wire = tx.to_wire()
    with pytest.raises(DecodeError, match="expected 7 fields"):
        Transaction.decode(codec.encode([*wire, 1]))
    with pytest.raises(DecodeError, match="expected 7 fields"):
        Transaction.decode(codec.encode(wire[:-1]))
    bad_type = list(wire)
    bad_type[2] = "7"
    with pytest.raises(DecodeError, match="nonce"):
        Transaction.decode(codec.encode(bad_type))
    bool_int = list(wire)
    bool_int[3] = True
    with pytest.raises(DecodeError, match="expiry_height"):
        Transaction.decode(codec.encode(bool_int))


def test_deep_nesting_is_a_decode_error() -> None:
    deep = b"\x91" * 100_000 + b"\x00"
    with pytest.raises(DecodeError):
        codec.decode(deep)


def test_block_splice_encoding_matches_canonical() -> None:
    txs = tuple(S.sample_tx(i) for i in range(20))
    header = S.sample_header()
    from dataclasses import replace

    block = Block(replace(header, tx_count=len(txs)), txs)
    assert block.encode() == codec.encode(block.to_wire())
    assert Block.decode(block.encode()).tx_ids == block.tx_ids
    empty = Block(replace(header, tx_count=0), ())
    assert empty.encode() == codec.encode(empty.to_wire())


def test_certificate_verification_counts_distinct_valid_signatures() -> None:
    keys = S.KEYS[:4]
    from ledger.types import Validator, commit_vote_body

    vs = ValidatorSet.of([Validator(f"v{i}", k.public_key) for i, k in enumerate(keys)])
    block_id = b"\x07" * 32
    body = commit_vote_body("dvp-test", 5, 0, block_id)
    sigs = tuple(
        (vs.index_of(k.public_key), k.sign(codec.Domain.COMMIT, body))  # type: ignore[misc]
        for k in keys
    )
    sigs = tuple(sorted(sigs))
    CommitCertificate(5, 0, block_id, sigs[:3]).verify("dvp-test", vs, block_id)
    with pytest.raises(ValidationError, match="3 of 4 needed"):
        CommitCertificate(5, 0, block_id, sigs[:2]).verify("dvp-test", vs)
    with pytest.raises(ValidationError, match="invalid"):
        CommitCertificate(5, 1, block_id, sigs[:3]).verify("dvp-test", vs)  # wrong view
    with pytest.raises(ValidationError, match="invalid"):
        CommitCertificate(5, 0, block_id, sigs[:3]).verify("other-chain", vs)
    with pytest.raises(ValidationError, match="different block"):
        CommitCertificate(5, 0, block_id, sigs[:3]).verify("dvp-test", vs, b"\x08" * 32)
    forged = ((0, sigs[0][1]), (1, sigs[0][1]), (2, sigs[0][1]))
    with pytest.raises(ValidationError, match="invalid"):
        CommitCertificate(5, 0, block_id, forged).verify("dvp-test", vs)
    # A signature under another domain tag (e.g. a prepare) is not a commit.
    prep = tuple(
        (i, keys[j].sign(codec.Domain.PREPARE, body))
        for j, (i, _) in enumerate(sorted((vs.index_of(k.public_key), k) for k in keys)[:3])
    )  # type: ignore[misc]
    with pytest.raises(ValidationError):
        CommitCertificate(5, 0, block_id, tuple(sorted(prep))).verify("dvp-test", vs)


def test_block_decode_reusing_known_transactions_is_as_strict_as_the_plain_decoder() -> None:
    """``Block.decode(raw, known)`` (replicas reuse mempool transactions) must accept
    exactly what the plain decoder accepts, and yield the same block, for every
    single-byte mutation of a block and for trailing, truncated and oversize input."""
    from dataclasses import replace

    txs = tuple(S.sample_tx(i) for i in range(20))
    block = Block(replace(S.sample_header(), tx_count=len(txs)), txs)
    raw = block.encode()
    known = {tx.tx_id: tx for tx in txs[::2]}

    def outcome(data: bytes, k: Any) -> Any:
        try:
            b = Block.decode(data, k)
        except DecodeError:
            return "refused"
        return (b.encode(), b.tx_ids)

    assert outcome(raw, known.get) == outcome(raw, None) == (raw, block.tx_ids)
    assert Block.decode(raw, known.get).txs[0] is txs[0]  # reused, not decoded again
    cases = [raw + b"\x00", raw[:-1], b"\x93" + raw[1:], b"", raw[:1]]
    cases += [
        raw[:p] + bytes([(raw[p] + d) % 256]) + raw[p + 1 :]
        for p in range(0, len(raw), 7)
        for d in (1, 128)
    ]
    for data in cases:
        assert outcome(data, known.get) == outcome(data, None), data.hex()


_ISSUED = 1_700_000_000_000
_EDGE_VALUES: list[Any] = [
    "dvp-test",
    "credit-report",
    "other-doc",
    "Bad Id",
    "",
    "x" * 300,
    *(b"\x07" * n for n in (0, 1, 31, 32, 33, 63, 64, 65)),
    -1,
    0,
    1,
    2,
    5,
    _ISSUED - 1,
    _ISSUED,
    _ISSUED + 1,
    2**64 - 1,
    2**64,
    True,
    False,
    None,
    1.0,
    [],
    [0, 1, 2, 3, 4],
]


def _edited(edits: list[tuple[int, Any]]) -> list[Any]:
    """A signed ATTEST's wire array with fields replaced: index 0-4 a payload field,
    5 the payload's length (value: new length), 6-12 a transaction field but the payload."""
    wire = S.sample_tx(0).to_wire()
    payload = list(wire[5])
    for i, value in edits:
        if i < 5:
            if i < len(payload):
                payload[i] = value
        elif i == 5:
            payload = (payload + [b""] * 2)[:value]
        elif i != 11:
            wire[i - 6] = value
    wire[5] = payload
    return wire


def _both_paths(wire: list[Any]) -> None:
    try:
        expected = Transaction.from_wire_checked(wire)
    except DecodeError:
        expected = None
    try:
        got = Transaction.from_wire(wire)
    except DecodeError:
        got = None
    assert got == expected, wire
    if got is not None:
        assert got.encode() == expected.encode()  # type: ignore[union-attr]


def test_fast_attest_decoding_agrees_with_the_general_readers() -> None:
    """``Transaction.from_wire`` takes an inlined path for ATTEST; it must accept exactly
    what the general field readers (``from_wire_checked``) accept, and build the same
    transaction: every field replaced by every edge value, every payload length."""
    Transaction.from_wire_checked(S.sample_tx(0).to_wire())  # identifiers now known
    for i in (0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12):
        for value in _EDGE_VALUES:
            _both_paths(_edited([(i, value)]))
    for length in range(7):
        _both_paths(_edited([(5, length)]))


@settings(max_examples=300)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, 3, 4, 6, 7, 8, 9, 10, 12]), st.sampled_from(_EDGE_VALUES)
        ),
        min_size=2,
        max_size=3,
    )
)
def test_fast_attest_decoding_agrees_under_several_edits(edits: list[tuple[int, Any]]) -> None:
    Transaction.from_wire_checked(S.sample_tx(0).to_wire())
    _both_paths(_edited(edits))
