"""Ed25519 keys, signatures and key files (PyNaCl); the only place keys are handled.

Rules:
- A key is identified by its 32-byte Ed25519 public key; nothing shorter is trusted.
- Signatures are made and checked over ``codec.tagged(domain, body)``: callers never
  sign raw bytes, so a signature cannot be lifted from one message kind to another.
- ``verify`` returns a bool and never raises on garbage: a bad signature from a peer is
  data, not an exception.
- Key files are JSON holding the 32-byte seed, written with mode 0600. The same seed
  also derives the node's libp2p identity, so one file is the node's whole identity.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.signing

from ledger.codec import Domain, tagged

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
KEY_FILE_TYPE = "dvp-ed25519-key"


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not a dvp key file."""


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
# Key files
# ---------------------------------------------------------------------------


def write_key_file(path: Path, key: KeyPair, *, overwrite: bool = False) -> None:
    """Write ``key`` as a JSON key file readable only by its owner."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "type": KEY_FILE_TYPE,
        "public_key": key.public_key.hex(),
        "seed": key.seed.hex(),
    }
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    os.chmod(path, 0o600)


def read_key_file(path: Path) -> KeyPair:
    """Read a key file, checking that its seed matches its recorded public key."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise KeyFileError(f"key file {path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"key file {path} is not readable JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("type") != KEY_FILE_TYPE:
        raise KeyFileError(f"{path} is not a dvp key file (type must be {KEY_FILE_TYPE!r})")
    try:
        seed = bytes.fromhex(doc["seed"])
        public = bytes.fromhex(doc["public_key"])
        key = KeyPair.from_seed(seed)
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(f"{path}: malformed key: {exc}") from exc
    if key.public_key != public:
        raise KeyFileError(f"{path}: the seed does not match the recorded public key")
    return key
