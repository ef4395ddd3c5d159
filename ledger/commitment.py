"""Document commitments and the printable verification code that carries their salt.

    commitment = SHA-256(b"dvp/doc/v1" || salt || SHA-256(file bytes))

The 32-byte random ``salt`` is what stops anyone from confirming a guess of a
low-entropy document from its on-chain commitment. The issuer hands it to the
document's owner as a *verification code*: salt || first 3 bytes of
SHA-256(b"dvp/code/v1" || salt), written in Crockford base32 (56 characters, shown in
groups of four). Decoding is forgiving about case, dashes, spaces and the usual
confusables (O->0, I/L->1) and strict about the checksum, so a mistyped code is
reported as a typo instead of silently producing a NOT_FOUND verdict.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path
from typing import BinaryIO

DOC_TAG = b"dvp/doc/v1"
CODE_TAG = b"dvp/code/v1"
SALT_SIZE = 32
CHECKSUM_SIZE = 3
CHUNK_BYTES = 1 << 20

_RFC4648 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_TO_CROCKFORD = str.maketrans(_RFC4648, _CROCKFORD)
_FROM_CROCKFORD = str.maketrans(_CROCKFORD, _RFC4648)
_CONFUSABLES = str.maketrans({"O": "0", "I": "1", "L": "1", "-": None, " ": None})


class CodeError(ValueError):
    """A verification code that is malformed or fails its checksum."""


def new_salt() -> bytes:
    return secrets.token_bytes(SALT_SIZE)


def commitment_from_digest(salt: bytes, file_digest: bytes) -> bytes:
    """Commitment for a file whose SHA-256 is ``file_digest``. Requires 32-byte inputs."""
    if len(salt) != SALT_SIZE or len(file_digest) != 32:
        raise ValueError("salt and file digest must both be 32 bytes")
    return hashlib.sha256(DOC_TAG + salt + file_digest).digest()


def digest_stream(stream: BinaryIO) -> bytes:
    """SHA-256 of a stream read in 1 MiB chunks (documents can be large)."""
    h = hashlib.sha256()
    while chunk := stream.read(CHUNK_BYTES):
        h.update(chunk)
    return h.digest()


def digest_file(path: Path | str) -> bytes:
    with open(path, "rb") as fh:
        return digest_stream(fh)


def commitment_of_file(path: Path | str, salt: bytes) -> bytes:
    return commitment_from_digest(salt, digest_file(path))


def commitment_of_bytes(data: bytes, salt: bytes) -> bytes:
    return commitment_from_digest(salt, hashlib.sha256(data).digest())


def _checksum(salt: bytes) -> bytes:
    return hashlib.sha256(CODE_TAG + salt).digest()[:CHECKSUM_SIZE]


def encode_code(salt: bytes) -> str:
    """The printable verification code for ``salt``, e.g. ``7K3M-...`` (14 groups of 4)."""
    if len(salt) != SALT_SIZE:
        raise ValueError("salt must be 32 bytes")
    raw = base64.b32encode(salt + _checksum(salt)).decode("ascii").translate(_TO_CROCKFORD)
    return "-".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def decode_code(code: str) -> bytes:
    """The salt inside a verification code; ``CodeError`` on a malformed or mistyped code."""
    norm = code.strip().upper().translate(_CONFUSABLES)
    if len(norm) != 56 or any(c not in _CROCKFORD for c in norm):
        raise CodeError("a verification code has 56 characters of 0-9 and A-Z (no I, L, O, U)")
    raw = base64.b32decode(norm.translate(_FROM_CROCKFORD))
    salt, check = raw[:SALT_SIZE], raw[SALT_SIZE:]
    if not hmac.compare_digest(check, _checksum(salt)):
        raise CodeError("the verification code's checksum does not match: check it for typos")
    return salt
