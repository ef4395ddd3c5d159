"""Never-includable transactions on a real 4-validator devnet: refused at the door, and
the chain neither stalls nor changes view (issue 15: a second REVOKE once sat in every
mempool and made the replicas accuse each primary in turn).

Runs scripts/doomed_load.py (its own devnet on 127.0.0.1, stopped at its end) with tens
of transactions of each doomed kind mixed with valid attestations, sent over plain
JSON-RPC to all four nodes, and checks its figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.processes, pytest.mark.timeout(600)]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "doomed_load.py"


def test_doomed_transactions_are_refused_and_the_view_holds(tmp_path: Path) -> None:
    cmd = [sys.executable, str(SCRIPT), "--bad", "30", "--valid", "200", "--watch-s", "25"]
    cmd += ["--dir", str(tmp_path / "devnet")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=540)
    lines = proc.stdout.strip().splitlines()
    assert lines, proc.stderr[-3000:]
    figures = json.loads(lines[-1])
    assert figures["bad_sent"] == 9 * 30
    assert figures["bad_refused"] == figures["bad_sent"], proc.stderr[-3000:]
    assert figures["wrong_codes"] == 0, proc.stderr[-3000:]
    assert figures["valid_sent"] == 230
    assert figures["valid_committed"] == figures["valid_sent"], proc.stderr[-3000:]
    assert figures["view_changes"] == 0
    assert proc.returncode == 0
