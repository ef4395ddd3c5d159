"""`dvp verify --receipt` saves what was checked, `dvp verify --offline --receipt`
re-checks it with no node, and `dvp revoke FILE --code CODE` names the document the way a
verifier does (cli/verify_cmd.py, ledger/receipt.py).

Reuses test_verify_exit_codes' chain (real proofs reaching the command through its RPC
client's ``call``); the offline runs point --rpc at a closed port, so a node is never
asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cli.main import main
from cli.rpc_client import RpcClient
from tests.cli.test_verify_exit_codes import consortium, dvp_verify  # noqa: F401


def offline(cons: dict[str, Any], name: str, receipt: Path, *extra: str) -> int:
    root = cons["root"]
    code = cons["codes"][name]
    return main(
        [
            "verify",
            "--offline",
            "--receipt",
            str(receipt),
            str(root / f"{name}.pdf"),
            "--code",
            code,
            "--genesis",
            str(root / "genesis.json"),
            *extra,
        ]
    )


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [("valid", "VALID", 0), ("revoked", "REVOKED", 5), ("absent", "NOT_FOUND", 7)],
)
def test_a_saved_receipt_reverifies_offline_to_the_same_verdict(
    consortium: dict[str, Any],  # noqa: F811
    dvp_verify: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    status: str,
    code: int,
) -> None:
    receipt = tmp_path / "r.json"
    assert dvp_verify(name, "--receipt", str(receipt)) == code
    out = capsys.readouterr().out
    assert out.startswith(f"{status}:") and f"receipt saved to {receipt}" in out
    saved = json.loads(receipt.read_text())
    assert saved["format"] == "dvp-receipt" and saved["verdict"]["status"] == status

    def no_node(self: RpcClient, method: str, **params: Any) -> Any:
        raise AssertionError("an offline check asked a node")

    monkeypatch.setattr(RpcClient, "call", no_node)
    assert offline(consortium, name, receipt) == code
    out = capsys.readouterr().out
    assert out.startswith("Receipt re-verified offline: the verdict as of ")
    assert f"\n{status}:" in out
    assert offline(consortium, name, receipt, "--json") == code
    doc = json.loads(capsys.readouterr().out)
    assert doc["status"] == status and doc["offline"] is True
    assert doc["as_of_ms"] == saved["checked_at_ms"] == doc["checked_at_ms"]


def test_a_receipt_that_does_not_match_is_one_line(
    consortium: dict[str, Any],  # noqa: F811
    dvp_verify: Any,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    receipt = tmp_path / "r.json"
    assert dvp_verify("revoked", "--receipt", str(receipt)) == 5
    capsys.readouterr()
    doc = json.loads(receipt.read_text())

    def refused(path: Path, name: str = "revoked", genesis: str = "genesis.json") -> str:
        code = offline(consortium, name, path, "--genesis", str(consortium["root"] / genesis))
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("dvp verify: "), err
        return f"{code} {err}"

    # the wrong document: another file with its own code
    assert refused(receipt, name="valid").startswith("2 ") and "another document" in refused(
        receipt, name="valid"
    )
    # a verdict altered to VALID: INVALID, exit 4
    doc["verdict"]["status"] = "VALID"
    (tmp_path / "altered.json").write_text(json.dumps(doc))
    assert refused(tmp_path / "altered.json").startswith("4 dvp verify: INVALID receipt")
    # a receipt that does not decode, or is missing
    (tmp_path / "junk.json").write_text('{"format": "dvp-receipt", "version": 1, "x": 1}')
    assert refused(tmp_path / "junk.json").startswith("2 ")
    assert refused(tmp_path / "missing.json").startswith("2 ")
    # another consortium's genesis
    other = json.loads((consortium["root"] / "genesis.json").read_text())
    other["chain_id"] = "dvp-other"
    other.pop("genesis_hash", None)
    (consortium["root"] / "other.json").write_text(json.dumps(other))
    assert "genesis" in refused(receipt, genesis="other.json")
    # --offline needs a receipt
    root = consortium["root"]
    args = [str(root / "valid.pdf"), "--code", consortium["codes"]["valid"], "--offline"]
    assert main(["verify", *args]) == 2
    assert "--receipt" in capsys.readouterr().err


def test_revoke_by_file_and_code(
    consortium: dict[str, Any],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`dvp revoke FILE --code CODE` revokes the same commitment the issuer attested."""
    from cli import documents

    seen: list[bytes] = []

    def revoke(c: Any, k: Any, commitment: bytes, r: Any, wait: bool) -> dict[str, Any]:
        seen.append(commitment)
        return {"tx_id": "ab", "status": "accepted"}

    monkeypatch.setattr(documents, "revoke", revoke)
    monkeypatch.setattr("cli.main.read_key", lambda *a: None)
    root = consortium["root"]
    valid = str(root / "valid.pdf")
    common = ["--reason", "data-changed", "--key", "k.json", "--rpc", "http://127.0.0.1:9/"]
    assert main(["revoke", valid, "--code", consortium["codes"]["valid"], *common]) == 0
    by_hex = [h for h, b in consortium["bundles"].items() if b["commitment"] == seen[0].hex()]
    assert len(by_hex) == 1
    assert main(["revoke", by_hex[0], *common]) == 0
    assert seen[0] == seen[1]
    capsys.readouterr()
    assert main(["revoke", valid, "--code", "not-a-code", *common]) == 2
    assert capsys.readouterr().err.startswith("dvp revoke: verification code")
    assert main(["revoke", "abc", *common]) == 2
    assert "64 hex" in capsys.readouterr().err
