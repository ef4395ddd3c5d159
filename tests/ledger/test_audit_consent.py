"""The auditor and consent (docs/CONSENT.md §7): the replay counts the grants,
revocations and accesses it checked, and names an access a colluding quorum of
validators certified without a live grant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ledger.consent
from ledger.audit import replay_datadir
from ledger.chain import Ledger
from ledger.genesis import write_genesis
from ledger.testchain import GENESIS_TIME_MS, Consortium
from tests.ledger.test_audit import _run as run_cli

C1, C2 = b"\xa1" * 32, b"\xa2" * 32
S = Consortium.subject("applicant")


def _chain(datadir: Path, cons: Consortium) -> tuple[bytes, bytes]:
    """Two bound documents, a grant each, two accesses and a revocation; returns the
    grant ids. The first grant ends at block 3's time."""
    with Ledger.open(datadir / "ledger", cons.genesis) as lg:
        cons.commit(lg, [cons.bound_attest(C1, S), cons.bound_attest(C2, S)])
        short = cons.grant(S, (C1,), not_after_ms=GENESIS_TIME_MS + 3000)
        other = cons.grant(S, (C2,))
        cons.commit(lg, [short, other])
        cons.commit(lg, [cons.access(short.tx_id, C1), cons.access(other.tx_id, C2)])
        cons.commit(lg, [cons.revoke_grant(S, other.tx_id)])
    write_genesis(datadir.parent.parent / "genesis.json", cons.genesis)
    return short.tx_id, other.tx_id


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code, out, _err = run_cli(argv, capsys)
    return code, out


def test_the_replay_counts_the_consent_it_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    datadir = tmp_path / "data" / "cnix"
    _chain(datadir, Consortium.make())
    code, out = _run(["audit", "replay", "--datadir", str(datadir)], capsys)
    assert code == 0
    assert "consent: 2 grants, 1 revocations, 2 accesses checked" in out
    code, out = _run(["audit", "replay", "--datadir", str(datadir), "--json"], capsys)
    doc = json.loads(out)
    assert code == 0 and doc["consent"] == {"grants": 2, "revocations": 1, "accesses": 2}


def test_an_access_certified_without_a_live_grant_fails_the_replay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cons = Consortium.make()
    datadir = tmp_path / "data" / "cnix"
    short, revoked = _chain(datadir, cons)
    # A quorum of validators runs a rule book that records accesses without checking
    # the grant is live: their blocks are consistent (roots, certificates), but wrong.
    with Ledger.open(datadir / "ledger", cons.genesis) as lg:
        with monkeypatch.context() as m:
            m.setattr(ledger.consent, "grant_live_at", lambda *_a, **_k: None)
            bad = cons.commit(lg, [cons.attest(b"\x01" * 32), cons.access(short, C1)])
            cons.commit(lg, [cons.access(revoked, C2)])
    report = replay_datadir(datadir, cons.genesis)
    failure = report.failure
    assert failure is not None and (failure.height, failure.check) == (bad, "rules")
    assert failure.message.startswith(
        f"access by hkbank under grant {short.hex()[:16]} without a live grant at block "
        f"{bad}: grant_expired: "
    ), failure.message
    assert (report.height, report.accesses) == (bad - 1, 2)
    code, out = _run(["audit", "replay", "--datadir", str(datadir)], capsys)
    assert code == 1
    assert out.startswith(f"FAILED at height {bad}: rules: access by hkbank under grant ")
