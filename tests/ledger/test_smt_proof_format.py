"""State-tree proofs (ledger/smt_proof.py) as bytes and JSON: strict decoders, a verifier
that never raises, and every single-byte mutation of a real proof rejected.
"""

from __future__ import annotations

import json
import random
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.smt import (
    Proof,
    ProofError,
    ProofLevel,
    root_from_proof,
    verify_proof,
)
from ledger.smt_proof import MAX_PROOF_BYTES
from tests.ledger.smt_support import (
    ALL_KEYS,
    OTHER_LEAF_PROBE,
    POOL,
    PROBES,
    build,
    mutations,
    rejected,
)

# --------------------------------------------------------------------------- proof format


def _sample_proofs() -> tuple[bytes, list[tuple[bytes, bytes | None, Proof]]]:
    model = {k: k[:5] for k in POOL}
    tree, _, root = build(model)
    return root, [(k, model.get(k), tree.prove(k, 1)) for k in ALL_KEYS]


def test_every_single_byte_mutation_is_rejected() -> None:
    root, cases = _sample_proofs()
    rng = random.Random(11)
    for key, value, proof in cases[:6] + cases[-7:]:
        raw = proof.to_bytes()
        for bad in mutations(raw, rng, len(raw)):
            assert rejected(bad, root, key, value)


def test_from_bytes_is_strict() -> None:
    root, cases = _sample_proofs()
    key, value, proof = cases[9]
    raw = proof.to_bytes()
    obj = msgpack.unpackb(raw)
    assert Proof.from_bytes(raw) == proof
    bad_inputs = [
        raw + b"\x00",  # trailing byte
        raw[:-1],  # truncated
        b"",
        msgpack.packb(obj + [0]),  # unknown field
        msgpack.packb(obj[:3]),  # missing field
        msgpack.packb({"terminal": 0}),  # a map
        msgpack.packb([9] + obj[1:]),  # unknown terminal
        msgpack.packb([True] + obj[1:]),  # bool, not int
        msgpack.packb(obj[:2] + [obj[2].hex(), obj[3]]),  # str instead of bin
        msgpack.packb(obj[:2] + [obj[2] + b"\x00", obj[3]]),  # 33-byte key
        # a sibling too many; a level with a third field
        msgpack.packb([obj[0], [[lvl[0], lvl[1] + lvl[1][:1]] for lvl in obj[1]]] + obj[2:]),
        msgpack.packb([obj[0], [[lvl[0], lvl[1], 0] for lvl in obj[1]]] + obj[2:]),
        msgpack.packb([obj[0], [[0, []]]] + obj[2:]),  # zero bitmap
        msgpack.packb([obj[0], [[70000, []]]] + obj[2:]),  # bitmap out of range
        msgpack.packb([obj[0], [[None, []]]] + obj[2:]),  # nil
        msgpack.packb([1, obj[1], obj[2], obj[3]]),  # empty terminal with a leaf
        msgpack.packb([0, obj[1], b"", b""]),  # leaf terminal without one
        b"\xdc\x00\x04" + raw[1:],  # array16 where fixarray fits: non-canonical
        b"\x94" + b"\xcc\x00" + raw[2:],  # uint8 0 where fixint fits: non-canonical
        b"\x91" * 100_000,  # oversize
        b"\xc1",  # never-used msgpack byte
    ]
    for bad in bad_inputs:
        with pytest.raises(ProofError):
            Proof.from_bytes(bad)
    with pytest.raises(ProofError):
        Proof.from_bytes("text")  # type: ignore[arg-type]
    assert issubclass(ProofError, ValueError)
    assert MAX_PROOF_BYTES < 40_000


def test_from_json_is_strict() -> None:
    _, cases = _sample_proofs()
    key, value, proof = cases[12]
    good = proof.to_json()
    assert Proof.from_json(good) == proof
    assert Proof.from_json(json.dumps(good)) == proof
    assert Proof.from_json(json.dumps(good).encode()) == proof
    lvl = good["levels"][0]
    bad_docs: list[Any] = [
        {**good, "extra": 1},
        {k: v for k, v in good.items() if k != "leaf_key"},
        {**good, "terminal": "LEAF"},
        {**good, "leaf_key": good["leaf_key"].upper()},
        {**good, "leaf_key": " " + good["leaf_key"][1:]},
        {**good, "leaf_key": good["leaf_key"][:-2]},
        {**good, "levels": [{**lvl, "bitmap": True}] + good["levels"][1:]},
        {**good, "levels": [{**lvl, "bitmap": str(lvl["bitmap"])}] + good["levels"][1:]},
        {**good, "levels": [{**lvl, "x": 0}] + good["levels"][1:]},
        {**good, "levels": [[lvl["bitmap"], lvl["siblings"]]] + good["levels"][1:]},
        {**good, "levels": [{**lvl, "siblings": lvl["siblings"][1:]}] + good["levels"][1:]},
        {**good, "levels": "none"},
        [good],
        "not json",
        '{"terminal": "leaf", "terminal": "leaf"}',
        '{"terminal": NaN}',
    ]
    for bad in bad_docs:
        with pytest.raises(ProofError):
            Proof.from_json(bad)


def test_proof_constructor_checks_structure() -> None:
    h = bytes(32)
    with pytest.raises(ProofError):
        Proof("member", ())
    with pytest.raises(ProofError):
        Proof("empty", (), h, h)
    with pytest.raises(ProofError):
        Proof("leaf", ())
    with pytest.raises(ProofError):
        Proof("leaf", [ProofLevel(3, (h,))], h, h)  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        Proof("leaf", (ProofLevel(1, ()),), h, h)  # a lone leaf would be hoisted
    with pytest.raises(ProofError):
        Proof("leaf", (ProofLevel(3, (h, h)),), h, h)  # one sibling too many
    with pytest.raises(ProofError):
        Proof("empty", (ProofLevel(3, (h,)),))  # empty slot: all children are siblings
    with pytest.raises(ProofError):
        Proof("leaf", (ProofLevel(1, ()),) * 65, h, h)
    Proof("empty", (ProofLevel(3, (h, h)),))
    Proof("leaf", (ProofLevel(1, ()), ProofLevel(3, (h,))), h, h)


def test_verifier_checks_claims_against_the_terminal() -> None:
    model = {k: b"v" for k in POOL}
    tree, _, root = build(model)
    member = tree.prove(POOL[9], 1)
    # right proof, wrong claims
    assert not verify_proof(root, POOL[9], None, member)
    assert not verify_proof(root, POOL[10], b"v", member)
    with pytest.raises(ProofError):
        root_from_proof(POOL[9], None, member)
    absent = tree.prove(PROBES[0], 1)
    assert absent.terminal == "empty"
    assert not verify_proof(root, PROBES[0], b"v", absent)
    assert not verify_proof(root, PROBES[1], None, absent)  # another key's path
    other = tree.prove(OTHER_LEAF_PROBE, 1)
    assert other.terminal == "other_leaf"
    assert not verify_proof(root, other.leaf_key, None, other)  # type: ignore[arg-type]
    # the other leaf moved off the key's path: refused even though hashes would match
    off_path = next(k for k in PROBES if k[:1] != other.leaf_key[:1])  # type: ignore[index]
    assert not verify_proof(root, off_path, None, other)
    # a membership proof dressed as non-membership
    dressed = Proof("other_leaf", member.levels, member.leaf_key, member.leaf_value_hash)
    assert not verify_proof(root, POOL[9], None, dressed)


def _proof_pool() -> list[Proof]:
    return [p for _, _, p in _sample_proofs()[1]]


@settings(max_examples=200, deadline=None)
@given(
    root=st.binary(min_size=0, max_size=40),
    key=st.one_of(
        st.binary(max_size=40),
        st.sampled_from(ALL_KEYS),
        st.text(max_size=3),
        st.integers(),
        st.none(),
    ),
    value=st.one_of(st.binary(max_size=8), st.none(), st.integers()),
    proof=st.one_of(
        st.none(), st.binary(max_size=50), st.integers(), st.sampled_from(_proof_pool())
    ),
)
def test_verify_never_raises(root: Any, key: Any, value: Any, proof: Any) -> None:
    assert verify_proof(root, key, value, proof) in (True, False)


def test_verify_survives_forced_garbage() -> None:
    root, cases = _sample_proofs()
    key, value, proof = cases[0]
    for field, junk in [
        ("levels", ((1, None),)),
        ("levels", None),
        ("terminal", None),
        ("leaf_key", 5),
        ("leaf_value_hash", None),
    ]:
        bad = Proof(proof.terminal, proof.levels, proof.leaf_key, proof.leaf_value_hash)
        object.__setattr__(bad, field, junk)
        assert verify_proof(root, key, value, bad) is False
    # an absent key's proof with its terminal forced to an unknown kind
    key, value, proof = next(c for c in cases if c[2].terminal == "empty" and c[2].levels)
    assert verify_proof(root, key, None, proof)
    object.__setattr__(proof, "terminal", "?")
    assert verify_proof(root, key, None, proof) is False


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_from_bytes_raises_only_proof_error(data: bytes) -> None:
    try:
        proof = Proof.from_bytes(data)
    except ProofError:
        return
    assert proof.to_bytes() == data
