"""The README's main job: `dvp demo` plays the loan story on four node processes, the
applicant's consent chapter included (docs/CONSENT.md, issue 18 item 6)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.receipt import decode as decode_receipt

pytestmark = [pytest.mark.processes, pytest.mark.timeout(300)]


def test_demo_prints_every_outcome_and_cleans_up(tmp_path: Path) -> None:
    root = tmp_path / "devnet"
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--dir", str(root)],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=Path(__file__).parents[2],
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = out.stdout[out.stdout.index("Summary") :]
    for line in (
        "genuine credit report            VALID",
        "tampered copy                    NOT_FOUND",
        "revoked bank statement           REVOKED",
        "certificate past its validity    EXPIRED",
        "attestation by a non-issuer      REFUSED (not_issuer)",
        "bank with consent                VALID (access recorded)",
        "bank without consent             REFUSED (-32007 consent required; ledger: wrong_grantee)",
        "applicant's log                  1 access by hkbank, proven",
        "bank after revocation            REFUSED (-32007 grant_revoked; ledger: grant_revoked)",
        "audit replay                     OK",
    ):
        assert line in summary, summary
    # The bank's receipt outlives the demo and re-verifies with no node (docs/PROOFS.md §12).
    flat = " ".join(out.stdout.split())
    saved = re.search(r"receipt saved to (\S+); re-verified offline, as of its time: VALID", flat)
    assert saved, out.stdout[-3000:]
    receipt = decode_receipt(Path(saved.group(1)).read_bytes())
    assert receipt.verdict["status"] == "VALID"
    # It ends with the verification page's URL (a node's /verify) and the receipt's path.
    assert re.search(r"verification page: http://127\.0\.0\.1:\d+/verify", flat), flat[-2000:]
    assert f"the bank's receipt: {saved.group(1)}" in flat
    # the demo stopped the nodes it started
    for pid_file in root.glob("data/*/node.pid"):
        raise AssertionError(f"{pid_file} left behind: a node is still running")
