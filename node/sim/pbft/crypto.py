"""A fast, clearly fake signature scheme for simulation: never use outside tests.

``sign`` is BLAKE2b keyed with the signer's *public* key over the domain-tagged
body, so anyone who knows a public key can "sign" for it. The simulator never lets a
Byzantine node do that (its forgeries are random bytes), which is what makes the
double sound for consensus tests. Signatures are 64 bytes like Ed25519, so
``ledger.types.CommitCertificate`` can carry them.
"""

from __future__ import annotations

import hashlib

from ledger.codec import Domain, tagged

SIG_SIZE = 64


def fake_signature(public_key: bytes, domain: Domain, body: bytes) -> bytes:
    return hashlib.blake2b(tagged(domain, body), key=public_key, digest_size=SIG_SIZE).digest()


class FakeCrypto:
    """``consensus.api.Crypto`` for one simulated validator."""

    def __init__(self, public_key: bytes) -> None:
        self.public_key = public_key

    def sign(self, domain: Domain, body: bytes) -> bytes:
        return fake_signature(self.public_key, domain, body)

    def verify(self, public_key: bytes, domain: Domain, body: bytes, signature: bytes) -> bool:
        return len(signature) == SIG_SIZE and fake_signature(public_key, domain, body) == signature


def make_keys(count: int) -> list[bytes]:
    """Deterministic 32-byte "public keys" for validators 0..count-1."""
    return [hashlib.sha256(b"sim-validator-%d" % i).digest() for i in range(count)]
