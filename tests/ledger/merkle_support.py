"""What the Merkle tests share: hex helpers, a byte flipper, distinct leaves, reference roots.

``ref_root`` comes from tests/ledger/merkle_reference.py (the RFC recursions transcribed
literally), never from the library under test.
"""

from __future__ import annotations

from functools import cache

from ledger.merkle import (
    MerkleTree,
)
from tests.ledger import merkle_reference as ref


def hx(hashes: list[bytes]) -> list[str]:
    return [h.hex() for h in hashes]


def unhx(hexes: list[str]) -> list[bytes]:
    return [bytes.fromhex(h) for h in hexes]


MAX_N = 64
# Distinct leaves: with repeated leaves a proof for one position can honestly verify for
# another, which would blur the "changed index is rejected" properties below.
DATA = [b"leaf %d" % i for i in range(300)]
TREE = MerkleTree.from_leaves(DATA)


@cache
def ref_root(n: int) -> bytes:
    return ref.mth(DATA[:n])


def flip(h: bytes, pos: int, delta: int) -> bytes:
    b = bytearray(h)
    b[pos] ^= delta
    return bytes(b)
