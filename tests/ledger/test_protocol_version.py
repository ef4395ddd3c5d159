"""Protocol versions: the header field, governance's ACTIVATE_VERSION, and the refusals.

Version 2 exists only through the rehearsal knob (``DVP_PROTOCOL_MAX``), with version 1's
semantics; these tests use it the way the rolling-upgrade drill does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from ledger.audit import replay_datadir
from ledger.chain import Ledger
from ledger.errors import DecodeError, ProtocolVersionError, RuleError
from ledger.protocol import REHEARSAL_ENV, supported_versions
from ledger.records import ChainRecord
from ledger.testchain import Consortium
from ledger.types import Block, BlockHeader, GovAction, GovPropose, GovVote
from tests.support.strategies import sample_header


@pytest.fixture
def cons() -> Consortium:
    return Consortium.make()


@pytest.fixture
def ledger(tmp_path: Path, cons: Consortium) -> Iterator[Ledger]:
    lg = Ledger.open(tmp_path / "db", cons.genesis)
    yield lg
    lg.close()


def _empty_block(lg: Ledger, cons: Consortium) -> int:
    return cons.commit(lg, [])


def _activate(lg: Ledger, cons: Consortium, version: int, height: int) -> None:
    tx = cons.tx("cnix", GovPropose(GovAction.ACTIVATE_VERSION, (version, height), lg.height + 50))
    cons.commit(lg, [tx])
    cons.commit(lg, [cons.tx(v, GovVote(tx.tx_id, True)) for v in ("hkbank", "webank")])


def _activated(lg: Ledger, cons: Consortium) -> int:
    """Activate version 2 (the rehearsal's) and commit up to its height; that height."""
    _activate(lg, cons, 2, lg.height + 8)
    at = lg.head.chain.scheduled_versions[0][0]
    while lg.height < at:
        _empty_block(lg, cons)
    return at


def _refusal(lg: Ledger, cons: Consortium, version: int, height: int) -> str:
    tx = cons.tx("cnix", GovPropose(GovAction.ACTIVATE_VERSION, (version, height), lg.height + 50))
    ex = lg.build([tx], time_ms=lg.tip.time_ms + 1000, proposer=cons.proposer)
    lg.discard_pending(ex.height)
    assert len(ex.rejected) == 1, "the proposal was accepted"
    return ex.rejected[0][1].code


def test_the_header_carries_its_version_first() -> None:
    h = replace(sample_header(), version=2)
    assert BlockHeader.decode(h.encode()) == h
    assert h.encode()[1] == 2  # fixarray(12), then the version
    assert h.block_id != sample_header().block_id  # the version is certified
    bad = bytearray(h.encode())
    bad[1] = 0
    with pytest.raises(DecodeError, match="header.version"):
        BlockHeader.decode(bytes(bad))


def test_genesis_and_blocks_start_at_version_1(ledger: Ledger, cons: Consortium) -> None:
    _empty_block(ledger, cons)
    assert [ledger.store.get_header(h).version for h in (0, 1)] == [1, 1]  # type: ignore[union-attr]
    assert ledger.head.chain.version_at(10**9) == 1


def test_activation_rules(ledger: Ledger, cons: Consortium) -> None:
    h = ledger.height
    delay = max(cons.genesis.params.validator_change_delay, cons.genesis.params.pipeline_window + 1)
    assert _refusal(ledger, cons, 1, h + 100) == "bad_version"  # not above the current one
    assert _refusal(ledger, cons, 0x10000, h + 100) == "bad_version"
    assert _refusal(ledger, cons, 2, h + delay) == "activation_too_soon"  # inside the pipeline
    _activate(ledger, cons, 2, ledger.height + 20)
    assert ledger.head.chain.scheduled_versions[0][1] == 2
    assert _refusal(ledger, cons, 2, ledger.height + 40) == "bad_version"  # approved already
    at = ledger.head.chain.scheduled_versions[0][0]
    assert _refusal(ledger, cons, 3, at) == "activation_too_soon"  # not after the scheduled one


def test_a_block_switches_at_the_activation_height(
    ledger: Ledger, cons: Consortium, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REHEARSAL_ENV, "2")
    at = _activated(ledger, cons)
    versions = [ledger.store.get_header(h).version for h in (at - 1, at)]  # type: ignore[union-attr]
    assert versions == [1, 2]
    chain = ChainRecord.decode(ledger.head.chain.encode())
    assert (chain.version, chain.scheduled_versions) == (2, ())  # folded in at the height


def test_a_block_of_another_version_is_refused(
    ledger: Ledger, cons: Consortium, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REHEARSAL_ENV, "2")
    ex = ledger.build([], time_ms=ledger.tip.time_ms + 1000, proposer=cons.proposer)
    ledger.discard_pending(ex.height)
    forged = Block(replace(ex.block.header, version=2), ex.block.txs)
    with pytest.raises(RuleError, match="wrong_version: block 1 has protocol version 2"):
        ledger.validate(forged)


def test_a_build_without_the_active_version_stops(
    tmp_path: Path, ledger: Ledger, cons: Consortium, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REHEARSAL_ENV, "2")
    at = _activated(ledger, cons)
    monkeypatch.delenv(REHEARSAL_ENV)  # the old build
    with pytest.raises(ProtocolVersionError, match=f"version 2 from height {at + 1}.*1-1"):
        ledger.build([], time_ms=ledger.tip.time_ms + 1000, proposer=cons.proposer)
    ledger.close()
    report = replay_datadir(tmp_path / "db", cons.genesis)
    assert report.failure is not None
    assert (report.failure.height, report.failure.check) == (at, "protocol_version")
    monkeypatch.setenv(REHEARSAL_ENV, "2")
    assert replay_datadir(tmp_path / "db", cons.genesis).failure is None


@pytest.mark.parametrize("value", ["two", "0", "70000"])
def test_a_bad_rehearsal_override_is_one_line(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REHEARSAL_ENV, value)
    with pytest.raises(ProtocolVersionError, match=REHEARSAL_ENV):
        supported_versions()
