"""The production ``Crypto``: Ed25519 through ``ledger.crypto`` (PyNaCl).

Owns the adapter between the replica's injected ``Crypto`` protocol and the ledger's
key handling, so COMMIT signatures made here verify with
``ledger.types.CommitCertificate.verify`` unchanged. The simulator uses
``consensus.sim.crypto.FakeCrypto`` instead, to isolate consensus cost.
"""

from __future__ import annotations

from ledger import crypto
from ledger.codec import Domain


class Ed25519Crypto:
    """Signs with this validator's key pair; verifies anyone's Ed25519 signatures."""

    def __init__(self, key: crypto.KeyPair) -> None:
        self._key = key
        self.public_key = key.public_key

    def sign(self, domain: Domain, body: bytes) -> bytes:
        return self._key.sign(domain, body)

    def verify(self, public_key: bytes, domain: Domain, body: bytes, signature: bytes) -> bool:
        return crypto.verify(public_key, domain, body, signature)

    def __repr__(self) -> str:
        return f"Ed25519Crypto({self.public_key.hex()[:16]}...)"
