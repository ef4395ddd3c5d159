"""Ed25519 keys, signatures and key files (PyNaCl); the only place keys are handled.

Rules:
- A key is identified by its 32-byte Ed25519 public key; nothing shorter is trusted.
- Signatures are made and checked over ``codec.tagged(domain, body)``: callers never
  sign raw bytes, so a signature cannot be lifted from one message kind to another.
- ``verify`` returns a bool and never raises on garbage: a bad signature from a peer is
  data, not an exception.
- Key files hold the 32-byte seed (ledger/keyfile.py: mode 0600, optionally under a
  passphrase). The same seed also derives the node's libp2p identity, so one file is
  the node's whole identity.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import nacl.bindings
import nacl.exceptions
import nacl.signing

from ledger.codec import Domain, tagged
from ledger.errors import KeyFileError

if TYPE_CHECKING:
    from ledger.keyfile import KdfLimits, Passphrase

__all__ = [
    "PUBLIC_KEY_SIZE",
    "SIGNATURE_SIZE",
    "KeyFileError",
    "KeyPair",
    "read_key_file",
    "sign_message",
    "verify",
    "verify_message",
    "write_key_file",
]

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


@dataclass(frozen=True)
class KeyPair:
    """An Ed25519 signing key and its public key."""

    seed: bytes
    public_key: bytes

    @classmethod
    def from_seed(cls, seed: bytes) -> KeyPair:
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        signing = nacl.signing.SigningKey(seed)
        return cls(seed=bytes(seed), public_key=bytes(signing.verify_key))

    @classmethod
    def generate(cls) -> KeyPair:
        return cls.from_seed(secrets.token_bytes(32))

    def sign(self, domain: Domain, body: bytes) -> bytes:
        """Ed25519 signature over ``tag || 0x00 || body``."""
        return sign_message(self.seed, tagged(domain, body))

    def __repr__(self) -> str:  # never print the seed by accident
        return f"KeyPair(public_key={self.public_key.hex()})"


_SK_CACHE: dict[bytes, bytes] = {}


def sign_message(seed: bytes, message: bytes) -> bytes:
    """Detached signature of ``message`` (already domain-tagged) with the key of ``seed``."""
    sk = _SK_CACHE.get(seed)
    if sk is None:
        _pk, sk = nacl.bindings.crypto_sign_seed_keypair(seed)
        if len(_SK_CACHE) < 1024:
            _SK_CACHE[seed] = sk
    return nacl.bindings.crypto_sign(message, sk)[:SIGNATURE_SIZE]


def verify(public_key: bytes, domain: Domain, body: bytes, signature: bytes) -> bool:
    """True iff ``signature`` is a valid signature by ``public_key`` of ``(domain, body)``."""
    return verify_message(public_key, tagged(domain, body), signature)


_sign_open = nacl.bindings.crypto_sign_open
_VERIFY_ERRORS = (
    nacl.exceptions.BadSignatureError,
    nacl.exceptions.ValueError,
    ValueError,
    TypeError,
)


def verify_message(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        # crypto_sign_open on signature||message is libsodium's verify; it rejects
        # non-canonical S and small-order keys, so signatures are not malleable.
        _sign_open(signature + message, public_key)
    except _VERIFY_ERRORS:
        return False
    return True


# ---------------------------------------------------------------------------
# Key files (the format, permissions and passphrases are ledger/keyfile.py's; imported
# when used, as its schema costs ~80 ms that verifiers and most commands never need)
# ---------------------------------------------------------------------------


def write_key_file(
    path: Path,
    key: KeyPair,
    *,
    overwrite: bool = False,
    passphrase: bytes | None = None,
    limits: KdfLimits | None = None,
) -> None:
    """Write ``key`` as a key file only its owner can read (encrypted under
    ``passphrase`` if given; ``limits`` default: ``keyfile.DEFAULT_LIMITS``)."""
    from ledger import keyfile

    keyfile.write_seed(
        Path(path),
        key.seed,
        overwrite=overwrite,
        passphrase=passphrase,
        limits=limits or keyfile.DEFAULT_LIMITS,
    )


def read_key_file(path: Path, passphrase: Passphrase | None = None) -> KeyPair:
    """Read a key file: refused if others may read it; a protected one is decrypted
    with ``passphrase`` (default: ``$DVP_KEY_PASSPHRASE[_FILE]``, no prompt)."""
    from ledger import keyfile

    return KeyPair.from_seed(keyfile.read_seed(Path(path), passphrase))
