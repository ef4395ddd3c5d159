"""Document commitments and verification codes (docs/PROOFS.md §Commitment)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.commitment import (
    CodeError,
    commitment_from_digest,
    commitment_of_bytes,
    commitment_of_file,
    decode_code,
    encode_code,
)


def test_commitment_definition() -> None:
    salt = bytes(range(32))
    data = b"credit report of applicant 42"
    expected = hashlib.sha256(b"dvp/doc/v1" + salt + hashlib.sha256(data).digest()).digest()
    assert commitment_of_bytes(data, salt) == expected


def test_file_is_streamed_in_chunks(tmp_path: Path) -> None:
    data = bytes(range(256)) * 20_000  # ~5 MB, several chunks
    path = tmp_path / "statement.pdf"
    path.write_bytes(data)
    salt = b"\x11" * 32
    assert commitment_of_file(path, salt) == commitment_of_bytes(data, salt)


def test_salt_changes_commitment() -> None:
    d = hashlib.sha256(b"x").digest()
    assert commitment_from_digest(b"\x00" * 32, d) != commitment_from_digest(b"\x01" * 32, d)


@given(st.binary(min_size=32, max_size=32))
def test_code_round_trip_and_forgiving_form(salt: bytes) -> None:
    code = encode_code(salt)
    assert len(code.replace("-", "")) == 56
    assert decode_code(code) == salt
    assert decode_code(code.lower().replace("-", " ")) == salt
    assert decode_code(code.replace("0", "O").replace("1", "I")) == salt


@given(st.binary(min_size=32, max_size=32), st.data())
def test_single_typo_is_caught(salt: bytes, data: st.DataObject) -> None:
    code = encode_code(salt).replace("-", "")
    pos = data.draw(st.integers(0, len(code) - 1))
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    new = data.draw(st.sampled_from([c for c in alphabet if c != code[pos]]))
    typo = code[:pos] + new + code[pos + 1 :]
    with pytest.raises(CodeError):
        decode_code(typo)


@pytest.mark.parametrize("bad", ["", "ABC", "U" * 56, "!" * 56])
def test_malformed_codes(bad: str) -> None:
    with pytest.raises(CodeError):
        decode_code(bad)
