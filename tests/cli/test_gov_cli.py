"""``dvp gov propose|vote|list|show`` end to end: four validators (in-process, in-memory
transport) serving real HTTP RPC, driven only through the ``dvp`` command.

The story: Shenzhen Credit Service may not attest payslips; CNIX proposes admitting it
for the new document type, WeBank votes yes, the Hong Kong bank no, a non-validator's
vote is refused, Shenzhen Credit Service's yes reaches the quorum (3 of 4), the change
takes effect, and the same attestation now commits. Proposals that could never pass are
refused at submission; one voted down says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main as dvp
from node.node import Node
from tests.support.rpc_node import run_nodes


def test_propose_vote_list_and_the_change_takes_effect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "net"
    payslip = tmp_path / "payslip.pdf"
    payslip.write_bytes(b"%PDF-1.7 payslip of an applicant, March")

    def run(*argv: str) -> tuple[int, Any, str]:
        """``dvp argv``: exit status, parsed JSON stdout (if any), stderr."""
        status = dvp(list(argv))
        out, err = capsys.readouterr()
        try:
            doc = json.loads(out) if out.strip() else None
        except json.JSONDecodeError:
            doc = out
        return status, doc, err

    def key(member: str) -> str:
        return str(root / "keys" / f"{member}.member.json")

    def client(nodes: list[Node]) -> None:
        url = {n.config.name: f"http://127.0.0.1:{n.rpc_ports['rpc']}/" for n in nodes}
        attest = (
            "attest",
            str(payslip),
            "--doc-type",
            "payslip",
            "--key",
            key("szcredit"),
            "--wait",
            "--json",
        )

        status, _, err = run(*attest, "--rpc", url["szcredit"])
        assert status == 1 and "doc_type_not_granted" in err and "Traceback" not in err

        def propose(*argv: str) -> tuple[int, Any, str]:
            return run("gov", "propose", *argv, "--key", key("cnix"), "--rpc", url["cnix"])

        # Proposals that could never pass are refused at submission, in one line, with
        # the nearest known name: by the node's rules (exit 1) or the CLI (exit 2).
        for argv, code, line in [
            (("remove-member", "gzfintek"), 1, "unknown_member: no member 'gzfintek' (did "),
            (("grant-role", "szcredit", "issuer"), 1, "no_change: szcredit already holds"),
            (("withdraw-doc-type", "szcredit", "payslips"), 1, "unknown_doc_type"),
            (("set-param", "heartbeat", "900"), 1, "(did you mean 'heartbeat_ms'?)"),
            (("grant-role", "gzfintech", "isuer"), 2, "(did you mean 'issuer'?)"),
            (("grant-doc-type", "szcredit", "credit-reprot"), 2, "did you mean 'credit-report'"),
            (("grant-doc-type", "szcredit", "payslip"), 2, "pass --new-doc-type"),
        ]:
            status, _, err = propose(*argv)
            assert status == code and line in err and len(err.strip().splitlines()) == 1, err

        status, prop, err = propose(
            "grant-doc-type", "szcredit", "payslip", "--new-doc-type", "--wait", "--json"
        )
        assert status == 0, err
        pid = prop["proposal_id"]
        assert prop["status"] == "committed" and len(pid) == 64
        assert prop["proposal"]["status"] == "open" and prop["proposal"]["yes"] == ["cnix"]
        assert prop["proposal"]["args"] == ["szcredit", "payslip"]

        status, listed, _ = run("gov", "list", "--rpc", url["hkbank"], "--json")
        assert status == 0 and listed["quorum"] == 3
        assert [p["proposal_id"] for p in listed["proposals"]] == [pid]

        status, v, err = run(
            "gov",
            "vote",
            pid,
            "--yes",
            "--key",
            key("webank"),
            "--rpc",
            url["webank"],
            "--wait",
            "--json",
        )
        assert status == 0, err
        assert v["proposal"]["yes"] == ["cnix", "webank"] and v["proposal"]["status"] == "open"
        status, v, err = run(
            "gov",
            "vote",
            pid,
            "--no",
            "--key",
            key("hkbank"),
            "--rpc",
            url["hkbank"],
            "--wait",
            "--json",
        )
        assert status == 0 and v["proposal"]["no"] == ["hkbank"], err

        status, _, err = run(
            "gov", "vote", pid, "--yes", "--key", key("gzfintech"), "--rpc", url["cnix"], "--wait"
        )
        assert status == 1 and "not_validator" in err and len(err.strip().splitlines()) == 1

        status, _, _ = run("gov", "list", "--rpc", url["szcredit"])  # human: a table
        status2, human, _ = run("gov", "list", "--rpc", url["szcredit"])
        assert status == status2 == 0 and "grant-doc-type szcredit payslip" in human
        assert "cnix, webank" in human and "hkbank" in human

        status, v, err = run(
            "gov",
            "vote",
            pid,
            "--yes",
            "--key",
            key("szcredit"),
            "--rpc",
            url["szcredit"],
            "--wait",
            "--json",
        )
        assert status == 0, err
        assert v["proposal"]["status"] == "approved" and v["proposal"]["decided_height"]

        # Decided: no longer open, still visible by id, and in force.
        status, listed, _ = run("gov", "list", "--rpc", url["webank"], "--json")
        assert status == 0 and listed["proposals"] == []
        status, human, _ = run("gov", "list", pid, "--rpc", url["webank"])
        assert status == 0 and "APPROVED at block" in human
        status, members, _ = run("gov", "list", pid, "--rpc", url["webank"], "--json")
        assert members["proposals"][0]["yes"] == ["cnix", "szcredit", "webank"]
        status, done, err = run(*attest, "--rpc", url["szcredit"])
        assert status == 0 and done["status"] == "committed", err

        # Voted down: `gov show` (and getProposals' `reason`) says why.
        status, down, err = propose("set-param", "max_block_txs", "4000", "--wait", "--json")
        assert status == 0, err
        for voter in ("webank", "hkbank"):
            status, v, err = run(
                "gov", "vote", down["proposal_id"], "--no", "--key", key(voter),
                "--rpc", url["cnix"], "--wait", "--json",
            )  # fmt: skip
            assert status == 0, err
        decided = v["proposal"]["decided_height"]
        assert v["proposal"]["reason"] == (
            f"rejected at block {decided}: 2 of 4 voted no; cannot reach 3 yes"
        )
        status, human, _ = run("gov", "show", down["proposal_id"], "--rpc", url["szcredit"])
        assert (
            status == 0
            and (
                f"REJECTED at block {decided}: 2 of 4 voted no; cannot reach 3 yes "
                "(yes: cnix; no: hkbank, webank)"
            )
            in human
        )

        status, _, err = run(
            "gov", "vote", pid, "--yes", "--key", key("hkbank"), "--rpc", url["szcredit"]
        )  # the node that saw it decided
        assert status == 1 and "no_open_proposal" in err

        # Usage errors: one line, exit 2; an unreachable node: exit 3.
        status, _, err = run(
            "gov", "vote", "beef", "--yes", "--key", key("cnix"), "--rpc", url["cnix"]
        )
        assert status == 2 and "PROPOSAL_ID" in err and len(err.strip().splitlines()) == 1
        status, _, err = run(
            "gov",
            "propose",
            "grant-role",
            "gzfintech",
            "wizard",
            "--key",
            key("cnix"),
            "--rpc",
            url["cnix"],
        )
        assert status == 2 and "issuer" in err
        status, _, err = run(
            "gov",
            "propose",
            "add-member",
            "bad id!",
            "X",
            "00" * 32,
            "--key",
            key("cnix"),
            "--rpc",
            url["cnix"],
        )
        assert status == 2 and "not a valid proposal" in err
        status, _, err = run("gov", "list", "--rpc", "http://127.0.0.1:1/")
        assert status == 3 and "cannot reach" in err

    run_nodes(root, client, nodes=4, timeout_s=150)
