"""The store check (ledger/store_check.py): what a checksum cannot see is still found.

One chain is built once (attestations, a validator leaving the set, enough heights for
state versions to be pruned). Each test edits a *copy* of its store the way a bug or a
careless tool would, keeping LevelDB's checksums and the store's own CRC seals valid
(values are re-sealed), so only the check's logic can notice, and asserts the check
names the right place. ``recent=3`` stands for the start-up check's window (64 heights
on a real node) so that "old" heights exist in a short chain.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import plyvel
import pytest

from ledger.chain import Ledger
from ledger.errors import StoreDamage
from ledger.smt_node import root_key
from ledger.store_check import StoreCheck, check_ledger
from ledger.store_format import (
    P_ATTESTED,
    P_BLOCK,
    P_CERT,
    P_HEADER,
    P_NODE,
    P_TX,
    TX_KEY_BYTES,
    h8,
    seal,
)
from ledger.testchain import Consortium
from ledger.types import BlockHeader, GovAction, GovPropose, GovVote

C = [bytes([i]) * 32 for i in range(1, 40)]


@dataclass
class Chain:
    cons: Consortium
    path: Path  # the ledger LevelDB
    height: int
    attested_at: dict[bytes, int]
    after_change: int  # first height certified by the reduced validator set


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Chain:
    cons = Consortium.make()
    path = tmp_path_factory.mktemp("check") / "ledger"
    attested: dict[bytes, int] = {}
    with Ledger.open(path, cons.genesis) as lg:
        prop = cons.tx("cnix", GovPropose(GovAction.REMOVE_VALIDATOR, ("webank",), 100))
        cons.commit(lg, [prop])
        cons.commit(lg, [cons.tx(v, GovVote(prop.tx_id, True)) for v in ("hkbank", "szcredit")])
        after_change = 0
        for i in range(0, 36, 3):
            h = cons.commit(lg, [cons.attest(c) for c in C[i : i + 3]])
            attested.update({c: h for c in C[i : i + 3]})
            if not after_change and len(lg.validators_at(h)) == 3:
                after_change = h
        height = lg.height
    assert after_change and height > 10
    return Chain(cons, path, height, attested, after_change)


@pytest.fixture
def copy(chain: Chain, tmp_path: Path) -> Path:
    dst = tmp_path / "ledger"
    shutil.copytree(chain.path, dst)
    return dst


def _check(chain: Chain, path: Path, recent: int | None) -> StoreCheck:
    with Ledger.open(path, chain.cons.genesis, create=False, verify_tables=True) as lg:
        return check_ledger(lg, recent=recent)


def _edit(path: Path, change: Callable[[plyvel.DB], None]) -> None:
    db = plyvel.DB(str(path))
    try:
        change(db)
    finally:
        db.close()


def _value(path: Path, key: bytes) -> bytes:
    db = plyvel.DB(str(path))
    try:
        value = db.get(key)
    finally:
        db.close()
    assert value is not None, key
    return bytes(value)


def _reseal(db: plyvel.DB, key: bytes, change: Callable[[bytes], bytes]) -> None:
    value = db.get(key)
    assert value is not None, key
    db.put(key, seal(key, change(value[4:])), sync=True)


def _damaged(chain: Chain, path: Path, recent: int | None, where: str, what: str) -> None:
    with pytest.raises(StoreDamage) as err:
        _check(chain, path, recent)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and "\n" not in text, text
    assert what in text and where in text, text


def test_an_intact_store_passes_both_checks(chain: Chain, copy: Path) -> None:
    quick = _check(chain, copy, 3)
    assert (quick.height, quick.blocks, quick.state_entries) == (chain.height, 4, None)
    assert quick.state_versions == 9  # the head and the 8 retained versions: roots only
    full = _check(chain, copy, None)
    assert full.full and full.blocks == chain.height + 1
    assert full.transactions == 3 + 36
    assert full.state_entries is not None and full.state_entries > 36


def test_a_certificate_that_does_not_verify(chain: Chain, copy: Path) -> None:
    h = chain.height - 1  # certified by the reduced set: checked against the set in force

    def flip_signature(payload: bytes) -> bytes:
        return payload[:-5] + bytes([payload[-5] ^ 1]) + payload[-4:]

    _edit(copy, lambda db: _reseal(db, P_CERT + h8(h), flip_signature))
    _damaged(chain, copy, 3, f"(height {h})", "the commit certificate does not verify")
    # An old height is the full check's: the start-up check reads the newest ones only.
    old = chain.after_change
    _edit(copy, lambda db: _reseal(db, P_CERT + h8(h), flip_signature))  # flipped back
    _edit(copy, lambda db: _reseal(db, P_CERT + h8(old), flip_signature))
    _check(chain, copy, 3)
    _damaged(chain, copy, None, f"(height {old})", "the commit certificate does not verify")


def test_a_rewritten_header_is_caught_at_its_height(chain: Chain, copy: Path) -> None:
    h = chain.height - 2

    def later(payload: bytes) -> bytes:
        header = BlockHeader.decode(payload)
        return replace(header, time_ms=header.time_ms + 1).encode()

    def relinked(payload: bytes) -> bytes:
        return replace(BlockHeader.decode(payload), prev_block_id=b"\x01" * 32).encode()

    key = P_HEADER + h8(h)
    original = _value(copy, key)
    # its certificate names the block as it was
    _edit(copy, lambda db: _reseal(db, key, later))
    _damaged(chain, copy, 3, f"(height {h})", "certificate is for a different block")
    # a header pointing elsewhere: the hash chain is checked before the certificate
    _edit(copy, lambda db: db.put(key, original, sync=True))
    _edit(copy, lambda db: _reseal(db, P_HEADER + h8(h + 1), relinked))
    _damaged(chain, copy, 3, f"(height {h + 1})", f"does not link to block {h}'s id")


def test_index_entries_missing_or_stray(chain: Chain, copy: Path) -> None:
    c = C[35]
    h = chain.attested_at[c]
    _edit(copy, lambda db: db.delete(P_ATTESTED + c, sync=True))
    _damaged(chain, copy, 3, f"(height {h}, transaction 2)", "attested-commitment index entry")
    _edit(copy, lambda db: db.put(P_ATTESTED + c, h8(h), sync=True))
    with Ledger.open(copy, chain.cons.genesis, create=False) as lg:
        block = lg.store.get_block(h)
        assert block is not None
        tx_id = block.txs[1].tx_id
    _edit(copy, lambda db: db.delete(P_TX + tx_id[:TX_KEY_BYTES], sync=True))
    _damaged(chain, copy, 3, f"(height {h}, transaction 1)", "the tx index entry")
    _edit(copy, lambda db: db.put(P_TX + tx_id[:TX_KEY_BYTES], bytes([h, 1]), sync=True))
    _check(chain, copy, None)
    # An entry no block explains: only the full check counts them.
    _edit(copy, lambda db: db.put(P_TX + b"\x07" * TX_KEY_BYTES, bytes([1, 0]), sync=True))
    _check(chain, copy, 3)
    _damaged(chain, copy, None, f"heights 0..{chain.height}", "the tx index: ")


def test_a_record_missing_below_the_window(chain: Chain, copy: Path) -> None:
    _edit(copy, lambda db: db.delete(P_BLOCK + h8(2), sync=True))
    _damaged(chain, copy, 3, f"(heights 0..{chain.height})", "block records where")


def test_state_tree_roots_at_start_every_node_in_full(chain: Chain, copy: Path) -> None:
    head_root = P_NODE + root_key(chain.height)

    def flip_hashed(db: plyvel.DB, key: bytes) -> None:
        # byte 5: inside an internal node's first child hash, or a leaf's key
        value = db.get(key)
        db.put(key, value[:5] + bytes([value[5] ^ 1]) + value[6:], sync=True)

    with Ledger.open(copy, chain.cons.genesis, create=False) as lg:
        root = lg.store.get_node(root_key(chain.height))
    assert root is not None and root[:1] == b"\x02"
    # a child of the root, written at the head's version (the last attestation's path)
    version = root[-8:]
    db = plyvel.DB(str(copy))
    child = next(
        k
        for k in db.iterator(prefix=P_NODE + version, include_value=False)
        if k != head_root and k[9] > 1
    )
    db.close()
    _edit(copy, lambda db: flip_hashed(db, child))
    _check(chain, copy, 3)  # the start-up check reads the roots only
    _damaged(chain, copy, None, "(state version", "state node")
    _edit(copy, lambda db: flip_hashed(db, head_root))
    _damaged(chain, copy, 3, f"(state version {chain.height})", "root record")
