"""What the state-tree tests share: an independent reference of the spec, a key pool, helpers.

``ref_root`` and ``ref_nodes`` are a deliberately naive transcription of docs/proofs-smt.md
(hashlib and plain recursion over a dict, no code from ledger/), so agreement with the tree
is evidence rather than tautology. The key pool gives trees of every shape.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping

from hypothesis import strategies as st

from ledger.smt import (
    EMPTY_ROOT,
    MemoryNodeStore,
    Proof,
    ProofError,
    SparseMerkleTree,
    verify_proof,
)

# --------------------------------------------------------------------------- reference


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _nib(key: bytes, i: int) -> int:
    return key[i // 2] >> 4 if i % 2 == 0 else key[i // 2] & 0x0F


def _ref_subtree(items: list[tuple[bytes, bytes]], depth: int) -> bytes:
    if len(items) == 1:
        key, value = items[0]
        return _h(b"dvp/smt/leaf/v1\x00" + key + _h(value))
    bitmap = 0
    children = b""
    for n in range(16):
        sub = [kv for kv in items if _nib(kv[0], depth) == n]
        if sub:
            bitmap |= 1 << n
            children += _ref_subtree(sub, depth + 1)
    return _h(b"dvp/smt/node/v1\x00" + bitmap.to_bytes(2, "big") + children)


def ref_root(model: Mapping[bytes, bytes]) -> bytes:
    """Root of the key set, straight from the spec's definitions."""
    if not model:
        return bytes(32)
    return _ref_subtree(sorted(model.items()), 0)


def _ref_path(nibbles: list[int]) -> bytes:
    padded = nibbles + [0] * (len(nibbles) % 2)
    return bytes(padded[i] << 4 | padded[i + 1] for i in range(0, len(padded), 2))


def ref_nodes(store: MemoryNodeStore, version: int) -> dict[bytes, bytes]:
    """Every stored node reachable from version's root record, found by decoding node
    encodings as the spec describes (independent of ledger.smt's readers)."""
    out: dict[bytes, bytes] = {}
    root_key = version.to_bytes(8, "big") + b"\x00"
    enc = store.nodes[root_key]
    out[root_key] = enc

    def walk(enc: bytes, nibbles: list[int]) -> None:
        if enc[0] != 2:
            return
        bitmap = int.from_bytes(enc[1:3], "big")
        leafmap = int.from_bytes(enc[3:5], "big")
        present = [i for i in range(16) if bitmap >> i & 1]
        n = len(present)
        assert len(enc) == 5 + 40 * n and leafmap & ~bitmap == 0
        for j, child in enumerate(present):
            version8 = enc[5 + 32 * n + 8 * j : 5 + 32 * n + 8 * j + 8]
            path = nibbles + [child]
            nk = version8 + bytes([len(path)]) + _ref_path(path)
            child_enc = store.nodes[nk]
            assert child_enc[0] == (1 if leafmap >> child & 1 else 2)
            out[nk] = child_enc
            walk(child_enc, path)

    walk(enc, [])
    return out


# --------------------------------------------------------------------------- key pool


def _key(hex_prefix: str, seed: int) -> bytes:
    """A key starting with the given nibbles, the rest pseudo-random."""
    rest = _h(seed.to_bytes(4, "big")).hex()
    return bytes.fromhex((hex_prefix + rest)[:64])


# Keys chosen so that trees over subsets have every shape: spread-out keys, a family
# sharing 3 nibbles, one sharing 10, and two pairs sharing 63 nibbles (64-level paths).
POOL: list[bytes] = (
    [_key("", i) for i in range(8)]
    + [_key("abc", 100 + i) for i in range(4)]
    + [_key("5" * 10, 200 + i) for i in range(3)]
    + [bytes.fromhex("7" * 63 + d) for d in "0f"]
    + [bytes.fromhex("00" * 31 + d) for d in ("01", "02")]
)
# Absent keys that share prefixes with pool keys, so both non-membership kinds occur.
PROBES: list[bytes] = [
    _key("abc", 999),
    _key("ab", 998),
    _key("5" * 10, 997),
    _key("5" * 9, 996),
    bytes.fromhex("7" * 63 + "8"),
    bytes.fromhex("00" * 31 + "03"),
    _key("", 995),
    _key("d0", 994),  # the only pool key under "d" is df3f...: another key's leaf
    _key("40", 993),  # likewise under "4" (433e...)
]
OTHER_LEAF_PROBE = PROBES[-2]
ALL_KEYS = POOL + [k for k in PROBES if k not in POOL]

values = st.binary(max_size=40)
batches = st.dictionaries(st.sampled_from(POOL), st.none() | values, max_size=10)


def fresh_root(model: Mapping[bytes, bytes]) -> bytes:
    """The root of a brand-new tree built from ``model`` in one batch."""
    if not model:
        return EMPTY_ROOT
    return SparseMerkleTree(MemoryNodeStore()).update(None, 0, dict(model)).root


def mutations(raw: bytes, rng: random.Random, count: int) -> list[bytes]:
    """Some single-byte mutations of ``raw`` (every position when count >= len)."""
    positions = range(len(raw)) if count >= len(raw) else rng.sample(range(len(raw)), count)
    out = []
    for i in positions:
        b = bytearray(raw)
        b[i] ^= rng.choice([0x01, 0x80, 0xFF, rng.randrange(1, 256)])
        out.append(bytes(b))
    return out


def rejected(raw: bytes, root: bytes, key: bytes, value: bytes | None) -> bool:
    """True iff the mutated encoding is refused by from_bytes or fails verification."""
    try:
        proof = Proof.from_bytes(raw)
    except ProofError:
        return True
    return not verify_proof(root, key, value, proof)


def build(model: Mapping[bytes, bytes | None]) -> tuple[SparseMerkleTree, MemoryNodeStore, bytes]:
    store = MemoryNodeStore()
    tree = SparseMerkleTree(store)
    result = tree.update(None, 1, dict(model))
    store.apply(result)
    return tree, store, result.root
