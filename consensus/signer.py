"""Signing for the replica: the ``Crypto`` protocol and its production Ed25519 adapter.

Owns the one Ed25519 wrapper of the code base (the node and the tests use it) between
the replica's injected ``Crypto`` and the ledger's key handling, so COMMIT signatures
made here verify with ``ledger.types.CommitCertificate.verify`` unchanged. Verified
(key, message, signature) triples are cached (bounded): the same vote often arrives
twice (retransmission, view-change proofs). The simulator uses
``node.sim.pbft.crypto.FakeCrypto`` instead, to isolate consensus cost.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import Protocol, runtime_checkable

from ledger import crypto
from ledger.codec import Domain, tagged


@runtime_checkable
class Crypto(Protocol):
    """Signing for this replica and verification for everyone.

    The node uses Ed25519 (``Ed25519Crypto``); the simulator uses a fast keyed-hash
    test double. Signatures are over ``codec.tagged(domain, body)``.
    """

    public_key: bytes

    def sign(self, domain: Domain, body: bytes) -> bytes: ...

    def verify(self, public_key: bytes, domain: Domain, body: bytes, signature: bytes) -> bool: ...


class Ed25519Crypto:
    """Signs with this validator's key pair; verifies anyone's Ed25519 signatures."""

    def __init__(self, key: crypto.KeyPair, cache_size: int = 50_000) -> None:
        self._key = key
        self.public_key = key.public_key
        self._ok: OrderedDict[bytes, None] = OrderedDict()
        self._cap = cache_size

    def sign(self, domain: Domain, body: bytes) -> bytes:
        return self._key.sign(domain, body)

    def verify(self, public_key: bytes, domain: Domain, body: bytes, signature: bytes) -> bool:
        message = tagged(domain, body)
        k = hashlib.sha256(public_key + signature + message).digest()
        if k in self._ok:
            return True
        if not crypto.verify_message(public_key, message, signature):
            return False
        self._ok[k] = None
        if len(self._ok) > self._cap:
            self._ok.popitem(last=False)
        return True

    def __repr__(self) -> str:
        return f"Ed25519Crypto({self.public_key.hex()[:16]}...)"
