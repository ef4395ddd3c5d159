"""Sparse Merkle tree hashing and proofs: what a verifier needs, without the tree.

This module owns the state tree's hash functions, the ``Proof`` object, its canonical
msgpack and JSON encodings, and proof verification. The tree itself (shape, storage,
updates, proof generation) is ``ledger/smt.py``; the normative byte-level description is
docs/proofs-smt.md, with cross-language vectors in tests/vectors/smt.json.

Rules:

* Keys are 32 bytes; a key's path is its 64 nibbles, high nibble of byte 0 first.
  Values are opaque bytes; the tree commits to SHA-256(value) only.
* Leaf hash = SHA-256("dvp/smt/leaf/v1" || 0x00 || key || SHA-256(value)).
  Internal node hash = SHA-256("dvp/smt/node/v1" || 0x00 || bitmap(2 bytes, big-endian)
  || the non-empty children's hashes in child order), bit i of the bitmap (value 1 << i)
  set iff child i is non-empty. The empty tree's root is 32 zero bytes. The 0x00 after
  each tag is the project-wide ``codec.tagged`` convention (tag || 0x00 || body), so every
  domain-separated hash in the ledger has one shape for re-implementers.
* ``verify_proof`` never raises: any malformed, mistyped or inconsistent input is False.
  ``root_from_proof`` and the decoders raise ``ProofError`` (a ``DecodeError``, hence a
  ``ValueError``) and nothing else on bad input.
* Decoding is strict: exact field counts, exact types, lowercase hex in JSON, no trailing
  bytes, size-capped, and the msgpack bytes must be the canonical re-encoding.
* Pure computation: no I/O, no clocks, no randomness.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from ledger import codec
from ledger.codec import decode, encode
from ledger.errors import DecodeError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "KEY_NIBBLES",
    "KEY_SIZE",
    "LEAF_TAG",
    "MAX_PROOF_BYTES",
    "NODE_TAG",
    "Proof",
    "ProofError",
    "ProofLevel",
    "TERMINAL_EMPTY",
    "TERMINAL_LEAF",
    "TERMINAL_OTHER_LEAF",
    "leaf_hash",
    "node_hash",
    "nibble",
    "root_from_proof",
    "value_hash",
    "verify_proof",
]

HASH_SIZE = codec.HASH_SIZE
KEY_SIZE = 32
KEY_NIBBLES = 2 * KEY_SIZE
EMPTY_ROOT = bytes(HASH_SIZE)
"""Root of the empty tree (no node at all): 32 zero bytes."""

LEAF_TAG = b"dvp/smt/leaf/v1\x00"
NODE_TAG = b"dvp/smt/node/v1\x00"

TERMINAL_LEAF = "leaf"
"""Membership: the path ends at the leaf of the queried key."""
TERMINAL_EMPTY = "empty"
"""Non-membership: the path ends at an empty child slot (or the tree is empty)."""
TERMINAL_OTHER_LEAF = "other_leaf"
"""Non-membership: the path ends at a leaf holding a different key with the same prefix."""

# Wire codes of the terminal kinds in the msgpack form (the JSON form uses the names).
_KIND_CODES = {TERMINAL_LEAF: 0, TERMINAL_EMPTY: 1, TERMINAL_OTHER_LEAF: 2}
_KIND_NAMES = {code: name for name, code in _KIND_CODES.items()}

# Largest canonical encoding of any structurally valid proof: fixarray(4) + kind +
# array16 header + 64 levels x (fixarray(2) + uint16 bitmap + fixarray header +
# 15 x bin8(32)) + 2 x bin8(32). Anything longer is refused before parsing.
MAX_PROOF_BYTES = 1 + 1 + 3 + KEY_NIBBLES * (1 + 3 + 1 + 15 * 34) + 2 * 34
MAX_PROOF_JSON_CHARS = 4 * MAX_PROOF_BYTES

_sha256 = hashlib.sha256
_HEX64 = re.compile(r"[0-9a-f]{64}")


class ProofError(DecodeError):
    """A proof is malformed, non-canonical, or does not fit the key/value it is used with.

    A ``DecodeError`` (so a ``ValueError``): per ledger/errors.py, decoders raise only
    DecodeError, and ``Proof.from_bytes``/``from_json`` are decoders.
    """


class ProofLevel(NamedTuple):
    """One internal node on the path, root first: its bitmap and the hashes of its
    non-empty children other than the path's child, in child order."""

    bitmap: int
    siblings: tuple[bytes, ...]


# --------------------------------------------------------------------------- hashing


def value_hash(value: bytes) -> bytes:
    """SHA-256(value): what a leaf commits to."""
    return _sha256(value).digest()


def leaf_hash(key: bytes, value_hash: bytes) -> bytes:
    """SHA-256(LEAF_TAG || key || value_hash)."""
    return _sha256(LEAF_TAG + key + value_hash).digest()


def node_hash(bitmap: int, children: list[bytes] | tuple[bytes, ...]) -> bytes:
    """SHA-256(NODE_TAG || bitmap(2, BE) || children...), children = non-empty, in order."""
    return _sha256(NODE_TAG + bitmap.to_bytes(2, "big") + b"".join(children)).digest()


def nibble(key: bytes, i: int) -> int:
    """Nibble i of the key's path: the high nibble of byte 0 is nibble 0."""
    b = key[i >> 1]
    return b & 15 if i & 1 else b >> 4


def _same_prefix(a: bytes, b: bytes, nibbles: int) -> bool:
    """True iff the first ``nibbles`` nibbles of a and b are equal."""
    half = nibbles >> 1
    if a[:half] != b[:half]:
        return False
    return not nibbles & 1 or a[half] >> 4 == b[half] >> 4


# --------------------------------------------------------------------------- proof


def _is_hash(value: object) -> bool:
    return type(value) is bytes and len(value) == HASH_SIZE


@dataclass(frozen=True, slots=True)
class Proof:
    """A membership or non-membership proof for one key against one root.

    ``levels[j]`` is the internal node at depth j on the key's path (root first). The
    terminal says what sits in the path's child slot of the last level (or is the root
    when there are no levels): the key's own leaf, nothing, or another key's leaf.
    ``leaf_key``/``leaf_value_hash`` describe that leaf; both are None for ``empty``.

    The constructor checks the structure (types, sizes, sibling counts against the
    bitmaps), so every ``Proof`` object is well-formed; whether it fits a key and a root
    is decided by ``root_from_proof``/``verify_proof``.
    """

    terminal: str
    levels: tuple[ProofLevel, ...]
    leaf_key: bytes | None = None
    leaf_value_hash: bytes | None = None

    def __post_init__(self) -> None:
        kind = self.terminal
        if kind not in _KIND_CODES:
            raise ProofError(f"unknown terminal kind {kind!r}")
        levels = self.levels
        if type(levels) is not tuple:
            raise ProofError("levels must be a tuple")
        depth = len(levels)
        if depth > KEY_NIBBLES:
            raise ProofError(f"{depth} levels exceeds the key length of {KEY_NIBBLES} nibbles")
        for j, level in enumerate(levels):
            if not isinstance(level, tuple) or len(level) != 2:
                raise ProofError(f"level {j} is not a (bitmap, siblings) pair")
            bitmap, siblings = level
            if type(bitmap) is not int or not 0 < bitmap < 1 << 16:
                raise ProofError(f"level {j}: bitmap must be an integer in [1, 65535]")
            if type(siblings) is not tuple:
                raise ProofError(f"level {j}: siblings must be a tuple")
            # Every level but an empty terminal's last one contains the path's child,
            # whose hash the verifier computes and so is not sent.
            on_path = 0 if (kind == TERMINAL_EMPTY and j == depth - 1) else 1
            if len(siblings) != bitmap.bit_count() - on_path:
                raise ProofError(f"level {j}: {len(siblings)} siblings do not match the bitmap")
            for s in siblings:
                if not _is_hash(s):
                    raise ProofError(f"level {j}: a sibling is not a {HASH_SIZE}-byte hash")
        if kind == TERMINAL_EMPTY:
            if self.leaf_key is not None or self.leaf_value_hash is not None:
                raise ProofError("an empty terminal carries no leaf")
        else:
            if not _is_hash(self.leaf_key) or not _is_hash(self.leaf_value_hash):
                raise ProofError(f"a {kind} terminal needs a 32-byte key and value hash")
            # A leaf alone under a node would have been hoisted into the node's place.
            if depth and levels[-1][0].bit_count() < 2:
                raise ProofError("a leaf cannot be the only child of an internal node")

    # ------------------------------------------------------------------ msgpack form

    def to_bytes(self) -> bytes:
        """Canonical msgpack: [kind, [[bitmap, [sibling...]]...], leaf_key, value_hash].

        kind: 0 leaf, 1 empty, 2 other_leaf; leaf_key/value_hash are empty bins for empty.
        """
        return encode(
            [
                _KIND_CODES[self.terminal],
                [[bitmap, list(siblings)] for bitmap, siblings in self.levels],
                self.leaf_key or b"",
                self.leaf_value_hash or b"",
            ]
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Proof:
        """Strictly decode ``to_bytes`` output; raise ProofError on anything else."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ProofError(f"expected bytes, got {type(data).__name__}")
        if len(data) > MAX_PROOF_BYTES:
            raise ProofError(f"proof of {len(data)} bytes exceeds {MAX_PROOF_BYTES}")
        try:
            obj = decode(bytes(data), max_bytes=MAX_PROOF_BYTES)
        except ProofError:
            raise
        except DecodeError as exc:
            raise ProofError(str(exc)) from exc
        if not isinstance(obj, list) or len(obj) != 4:
            raise ProofError("a proof is an array of exactly 4 fields")
        code, raw_levels, raw_key, raw_vh = obj
        if type(code) is not int or code not in _KIND_NAMES:
            raise ProofError(f"unknown terminal code {code!r}")
        if not isinstance(raw_levels, list):
            raise ProofError("levels must be an array")
        levels = []
        for j, raw in enumerate(raw_levels):
            if not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[1], list):
                raise ProofError(f"level {j} must be [bitmap, [siblings...]]")
            levels.append(ProofLevel(raw[0], tuple(raw[1])))
        kind = _KIND_NAMES[code]
        for name, raw in (("leaf_key", raw_key), ("leaf_value_hash", raw_vh)):
            if type(raw) is not bytes:
                raise ProofError(f"{name} must be bytes")
            if (kind == TERMINAL_EMPTY) != (raw == b""):
                raise ProofError(f"{name} must be empty exactly for an empty terminal")
        return cls(kind, tuple(levels), raw_key or None, raw_vh or None)

    # ------------------------------------------------------------------ JSON form

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; binary as lowercase hex, absent leaf fields as null."""
        return {
            "terminal": self.terminal,
            "levels": [
                {"bitmap": bitmap, "siblings": [s.hex() for s in siblings]}
                for bitmap, siblings in self.levels
            ],
            "leaf_key": None if self.leaf_key is None else self.leaf_key.hex(),
            "leaf_value_hash": (
                None if self.leaf_value_hash is None else self.leaf_value_hash.hex()
            ),
        }

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> Proof:
        """Strictly decode ``to_json`` output (as a dict or JSON text); raise ProofError."""
        if isinstance(data, (str, bytes)):
            if len(data) > MAX_PROOF_JSON_CHARS:
                raise ProofError("JSON proof exceeds the size limit")
            try:
                data = json.loads(data, object_pairs_hook=_no_duplicates, parse_constant=_no_nan)
            except ProofError:
                raise
            except (ValueError, RecursionError) as exc:
                raise ProofError(f"malformed JSON: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ProofError("a JSON proof is an object")
        if set(data) != {"terminal", "levels", "leaf_key", "leaf_value_hash"}:
            raise ProofError(
                f"JSON proof fields must be exactly terminal, levels, leaf_key, "
                f"leaf_value_hash; got {sorted(map(str, data))}"
            )
        kind = data["terminal"]
        if type(kind) is not str:
            raise ProofError("terminal must be a string")
        raw_levels = data["levels"]
        if not isinstance(raw_levels, list) or len(raw_levels) > KEY_NIBBLES:
            raise ProofError(f"levels must be an array of at most {KEY_NIBBLES}")
        levels = []
        for j, raw in enumerate(raw_levels):
            if not isinstance(raw, Mapping) or set(raw) != {"bitmap", "siblings"}:
                raise ProofError(f"level {j} must be an object with bitmap and siblings")
            sibs = raw["siblings"]
            if not isinstance(sibs, list) or len(sibs) > 16:
                raise ProofError(f"level {j}: siblings must be an array of hex hashes")
            levels.append(ProofLevel(raw["bitmap"], tuple(_unhex(s) for s in sibs)))
        key = data["leaf_key"]
        vh = data["leaf_value_hash"]
        return cls(
            kind,
            tuple(levels),
            None if key is None else _unhex(key),
            None if vh is None else _unhex(vh),
        )

    # ------------------------------------------------------------------ helpers

    @property
    def is_membership(self) -> bool:
        return self.terminal == TERMINAL_LEAF

    def __repr__(self) -> str:
        return f"Proof({self.terminal}, depth={len(self.levels)})"


def _unhex(value: object) -> bytes:
    # bytes.fromhex alone would accept uppercase and whitespace: not canonical.
    if type(value) is not str or not _HEX64.fullmatch(value):
        raise ProofError("expected a 32-byte hash as 64 lowercase hex digits")
    return bytes.fromhex(value)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ProofError("duplicate field in JSON object")
    return out


def _no_nan(name: str) -> Any:
    raise ProofError(f"{name} is not valid in a JSON proof")


# --------------------------------------------------------------------------- verification


def root_from_proof(key: bytes, value: bytes | None, proof: Proof) -> bytes:
    """The root implied by ``proof`` for ``key`` holding ``value`` (None: key absent).

    Raises ProofError if the proof is malformed or cannot speak for this key/value: a
    membership proof for an absent claim or vice versa, a terminal leaf of another key or
    value, another key's leaf off the key's path, or a bitmap that contradicts the path.
    """
    if not isinstance(proof, Proof):
        raise ProofError("not a Proof")
    if type(key) is not bytes or len(key) != KEY_SIZE:
        raise ProofError(f"key must be {KEY_SIZE} bytes")
    if value is not None and type(value) is not bytes:
        raise ProofError("value must be bytes or None")
    levels = proof.levels
    depth = len(levels)
    kind = proof.terminal
    cur: bytes | None
    if kind == TERMINAL_LEAF:
        if value is None:
            raise ProofError("a membership proof cannot show the key absent")
        if proof.leaf_key != key:
            raise ProofError("the terminal leaf is for another key")
        if proof.leaf_value_hash != _sha256(value).digest():
            raise ProofError("the terminal leaf holds another value")
        cur = _sha256(LEAF_TAG + key + proof.leaf_value_hash).digest()
    elif kind == TERMINAL_OTHER_LEAF:
        if value is not None:
            raise ProofError("a non-membership proof cannot show a value")
        other = proof.leaf_key
        assert other is not None and proof.leaf_value_hash is not None  # by __post_init__
        if other == key:
            raise ProofError("the other leaf is the queried key itself")
        if not _same_prefix(other, key, depth):
            raise ProofError("the other leaf is not on the key's path")
        cur = _sha256(LEAF_TAG + other + proof.leaf_value_hash).digest()
    elif kind == TERMINAL_EMPTY:
        if value is not None:
            raise ProofError("a non-membership proof cannot show a value")
        if depth == 0:
            return EMPTY_ROOT
        cur = None
    else:
        raise ProofError(f"unknown terminal kind {kind!r}")
    sha, tag = _sha256, NODE_TAG
    for j in range(depth - 1, -1, -1):
        bitmap, siblings = levels[j]
        b = key[j >> 1]
        bit = 1 << (b & 15 if j & 1 else b >> 4)
        if cur is None:
            # The empty terminal: the path's slot must really be empty in this node.
            if bitmap & bit:
                raise ProofError(f"level {j}: the bitmap has the path's child, not an empty slot")
            body = b"".join(siblings)
        else:
            if not bitmap & bit:
                raise ProofError(f"level {j}: the bitmap lacks the path's child")
            rank = (bitmap & (bit - 1)).bit_count()
            body = b"".join(siblings[:rank]) + cur + b"".join(siblings[rank:])
        cur = sha(tag + bitmap.to_bytes(2, "big") + body).digest()
    assert cur is not None
    return cur


def verify_proof(root: bytes, key: bytes, value: bytes | None, proof: Proof) -> bool:
    """True iff ``proof`` shows ``key`` holding ``value`` (None: absent) under ``root``.

    Never raises: malformed or wrongly typed input of any kind returns False.
    """
    if type(root) is not bytes or len(root) != HASH_SIZE:
        return False
    try:
        return root_from_proof(key, value, proof) == root
    except (ValueError, TypeError, IndexError, AttributeError):
        # ProofError is the expected one; the others can only come from a Proof whose
        # frozen fields were forced to garbage, and are refused all the same.
        return False
