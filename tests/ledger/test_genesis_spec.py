"""Header 0 rebuilt from ``genesis.json`` by following docs/PROOFS.md §5 alone.

``header0_from_genesis_json`` uses only msgpack and hashlib (through the independent
checker's primitives, themselves written from the documents): PROOFS.md §5 "From the
file to Genesis" and "The genesis state and block 0", §2 (encoding), §6 (state keys)
and docs/proofs-smt.md §2–§3 (the state tree's root). Nothing from ``ledger/`` is used to
derive; the node's own block 0 (a ledger store opened on the same file) is what it must
equal, byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ledger import genesis as node_genesis
from ledger.chain import Ledger
from ledger.crypto import KeyPair
from tests.ledger.independent_checker import (
    H,
    _nibble,
    anchor_from_genesis_json,
    enc,
    genesis_from_json,
    state_key,
    tagged,
)

TEMPLATE = Path(__file__).parents[2] / "configs" / "genesis.template.toml"

LEAF_TAG, NODE_TAG = "dvp/smt/leaf/v1", "dvp/smt/node/v1"


def smt_root(pairs: dict[bytes, bytes], depth: int = 0) -> bytes:
    """proofs-smt.md §3: T(S, d), hashed as §2 (empty = 32 zero bytes)."""
    if not pairs:
        return bytes(32)
    if len(pairs) == 1:
        ((key, value),) = pairs.items()
        return H(tagged(LEAF_TAG, key + H(value)))
    bitmap, children = 0, b""
    for slot in range(16):
        sub = {k: v for k, v in pairs.items() if _nibble(k, depth) == slot}
        if sub:
            bitmap |= 1 << slot
            children += smt_root(sub, depth + 1)
    return H(tagged(NODE_TAG, bitmap.to_bytes(2, "big") + children))


def header0_from_genesis_json(doc: dict[str, Any]) -> tuple[bytes, bytes]:
    """(enc(Header 0), block id 0) from the genesis file, per PROOFS.md §5."""
    chain_id, time_ms, members, validators, doc_types, params, purposes = genesis_from_json(doc)
    chain_record = [validators, 1, [], params, doc_types, 1, []]
    state = {state_key("chain", b""): enc(chain_record)}
    for m in members:
        state[state_key("member", m[0])] = enc(m)
    state[state_key("consent", b"")] = enc([purposes])
    valset_hash = H(tagged("dvp/valset/v1", enc(validators)))
    empty = H(b"")
    header = enc(
        [
            1,
            chain_id,
            0,
            bytes(32),
            time_ms,
            b"",
            0,
            empty,
            smt_root(state),
            valset_hash,
            valset_hash,
            empty,
        ]
    )
    return header, H(tagged("dvp/block/v1", header))


def _node_header0(doc: dict[str, Any], datadir: Path) -> tuple[bytes, bytes]:
    ledger = Ledger.open(datadir, node_genesis.genesis_from_json(doc))
    try:
        raw, block_id = ledger.store.get_header_bytes(0), ledger.store.get_block_id(0)
    finally:
        ledger.close()
    assert raw is not None and block_id is not None
    return raw, block_id


def test_demo_genesis_header0_follows_the_spec(tmp_path: Path) -> None:
    template = node_genesis.read_template(TEMPLATE)
    ids = [m["id"] for m in template["members"]]
    mk = {i: KeyPair.from_seed(bytes([n + 1]) * 32).public_key for n, i in enumerate(ids)}
    nk = {i: KeyPair.from_seed(bytes([n + 101]) * 32).public_key for n, i in enumerate(ids)}
    node_genesis.write_genesis(
        tmp_path / "genesis.json",
        node_genesis.genesis_from_template(template, mk, nk, 1_760_000_000_000),
    )
    doc = json.loads((tmp_path / "genesis.json").read_text())  # what a bank is given
    assert _node_header0(doc, tmp_path / "db") == header0_from_genesis_json(doc)
    assert anchor_from_genesis_json(doc)[1].hex() == doc["genesis_hash"]


def test_hand_written_genesis_normalised_as_specified(tmp_path: Path) -> None:
    """Unsorted members and validators, repeated roles and document types, params left
    out: each normalised as §5 says, or the roots would differ."""
    key = {n: KeyPair.from_seed(bytes([n]) * 32).public_key.hex() for n in range(1, 7)}
    doc: dict[str, Any] = {
        "chain_id": "spec-chain",
        "genesis_time_ms": 1_700_000_000_123,
        "members": [
            {
                "id": "zeta",
                "name": "Z",
                "key": key[1],
                "roles": ["issuer", "validator", "issuer"],
                "doc_types": ["payslip", "deed", "payslip"],
            },
            {"id": "alpha", "name": "A", "key": key[2], "roles": ["auditor", "validator"]},
            {"id": "mid", "name": "M", "key": key[3]},
        ],
        "validators": [
            {"member_id": "zeta", "node_key": key[4]},
            {"member_id": "alpha", "node_key": key[5]},
        ],
        "doc_types": ["payslip", "deed", "deed"],
        "params": {"heartbeat_ms": 7000},
    }
    assert _node_header0(doc, tmp_path / "db") == header0_from_genesis_json(doc)
    del doc["params"]
    assert _node_header0(doc, tmp_path / "db2") == header0_from_genesis_json(doc)
