"""The consent commands end to end against a real node (docs/CONSENT.md): ``dvp subject
new|key|grant|grants|log|revoke``, ``dvp attest --subject`` and ``dvp verify --key``,
with their exit statuses. One devnet validator in-process (open mode), the CLI called as
``main(argv)`` from the harness's worker thread."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main as dvp
from node.node import Node
from tests.support.rpc_node import run_nodes

pytestmark = pytest.mark.timeout(180)


def test_the_applicants_commands_against_a_node(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "net"
    applicant = tmp_path / "applicant.json"
    report = tmp_path / "report.pdf"
    report.write_bytes(b"%PDF-1.7 credit report of the applicant\n")

    def run(*argv: str) -> tuple[int, Any, str]:
        capsys.readouterr()
        status = dvp(list(argv))
        out = capsys.readouterr()
        try:
            doc = json.loads(out.out) if "--json" in argv and out.out else None
        except ValueError:
            doc = None
        return status, doc, out.err

    def client(nodes: list[Node]) -> None:
        url = f"http://127.0.0.1:{nodes[0].rpc_ports['rpc']}/"
        node = ["--rpc", url, "--genesis", str(root / "genesis.json")]
        keys = root / "keys"
        assert run("subject", "new", "--out", str(applicant))[0] == 0
        status, key, _ = run("subject", "key", "--key", str(applicant), "--label", "cr", "--json")
        assert status == 0
        status, attested, _ = run(
            "attest", str(report), "--doc-type", "credit-report", "--wait", "--json",
            "--key", str(keys / "szcredit.member.json"), "--rpc", url,
            "--subject", key["public_key"],
        )  # fmt: skip
        assert status == 0, attested
        code = attested["verification_code"]
        verify = ["verify", str(report), "--code", code, *node]

        # Bound, and nobody holds consent: refused, one line saying what to do.
        status, _, err = run(*verify)
        assert status == 1 and err.count("\n") == 1 and "--key" in err, err
        status, _, err = run(*verify, "--key", str(keys / "hkbank.member.json"))
        assert status == 1 and "no_grant" in err, err

        grant = ["subject", "grant", "--key", str(applicant), "--label", "cr", "--to", "hkbank"]
        status, _, err = run(*grant, "--purpose", "loan-aplication", *node)
        assert status == 1 and "unknown_purpose" in err and "loan-application" in err, err
        status, granted, err = run(*grant, "--purpose", "loan-application", "--json", *node)
        assert status == 0, err
        gid = granted["grant_id"]
        status, listed, _ = run("subject", "grants", "--key", str(applicant), "--json", *node)
        assert [(g["grant_id"], g["to"], g["state"]) for g in listed["grants"]] == [
            (gid, "hkbank", "live")
        ]

        # The bank verifies with its key: the access is recorded, then the bundle served.
        status, verdict, err = run(*verify, "--key", str(keys / "hkbank.member.json"), "--json")
        assert status == 0 and verdict["status"] == "VALID" and verdict["access"], err
        status, log, _ = run("subject", "log", "--key", str(applicant), "--json", *node)
        assert status == 0
        assert [(e["event"], e["member"], e["label"]) for e in log["entries"]] == [
            ("grant", "hkbank", "cr"),
            ("access", "hkbank", "cr"),
        ]
        assert log["entries"][1]["tx_id"] == verdict["access"]

        # Its one use is spent; the subject revokes; the next verification is refused.
        status, _, err = run(*verify, "--key", str(keys / "hkbank.member.json"))
        assert status == 1 and "grant_used_up" in err, err
        revoke = ["subject", "revoke", "--key", str(applicant)]
        assert run(*revoke, gid, *node)[0] == 0
        status, _, err = run(*revoke, gid, *node)
        assert status == 1 and "already_revoked" in err, err
        status, _, err = run(*revoke, "ab" * 32, *node)
        assert status == 2 and "no grant" in err, err
        status, listed, _ = run("subject", "grants", "--key", str(applicant), "--json", *node)
        assert listed["grants"][0]["state"].startswith("revoked")

    run_nodes(root, client)
