"""`dvp verify` exits with its verdict (cli/verify_cmd.py): one status per verdict, and
never a verdict from state older than ``--max-age``.

The proofs come from a real ledger built here (block times by this test's clock) and
reach the command through its RPC client's ``call``; the unreachable case is a real
closed port. What is checked is what a script sees: the exit status, one line on stderr
for errors, and the ``--json`` document.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli.devnet_files import free_ports
from cli.main import build_parser, main
from cli.rpc_client import RpcClient
from cli.verify_cmd import VERIFY_EXIT_CODES
from ledger.chain import Ledger
from ledger.commitment import commitment_from_digest, digest_file, encode_code
from ledger.genesis import write_genesis
from ledger.prove import Prover
from ledger.testchain import Consortium
from ledger.types import Attest, Revoke, RevokeReason
from tests.support.bundles import mutate

DOCS = ("valid", "revoked", "expired", "absent", "forged")


@pytest.fixture(scope="module")
def consortium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Files and their codes; a chain (blocks a few seconds old) attesting all but
    ``absent``, with ``revoked`` revoked and ``expired`` past its validity."""
    root = tmp_path_factory.mktemp("verify")
    cons = Consortium.make()
    write_genesis(root / "genesis.json", cons.genesis)
    codes, commitments = {}, {}
    for i, name in enumerate(DOCS):
        path = root / f"{name}.pdf"
        path.write_bytes(f"%PDF-1.7 document {name}\n".encode())
        salt = bytes([i + 1]) * 32
        codes[name] = encode_code(salt)
        commitments[name] = commitment_from_digest(salt, digest_file(path))
    now = int(time.time() * 1000)
    lg = Ledger.open(root / "db", cons.genesis)

    def commit(txs: list[Any], time_ms: int) -> None:
        ex = lg.build(txs, time_ms=time_ms, proposer=cons.proposer)
        assert not ex.rejected, ex.rejected
        lg.commit(ex.block, cons.certify(ex.block, validators=lg.validators_at(ex.height)))

    def attest(name: str, valid_until_ms: int = 0) -> Any:
        issued = now - 5000
        return cons.tx(
            "szcredit", Attest("credit-report", commitments[name], issued, valid_until_ms)
        )

    commit(
        [attest("valid"), attest("revoked"), attest("expired", now - 1), attest("forged")],
        now - 2000,
    )
    commit(
        [cons.tx("szcredit", Revoke(commitments["revoked"], RevokeReason.DATA_CHANGED))], now - 1000
    )
    prover = Prover(lg)
    bundles = {
        name: json.loads(json.dumps(prover.bundle(c).to_json())) for name, c in commitments.items()
    }
    # a node that lies: a certified head, but the ATTEST altered by one hex digit
    bundles["forged"] = mutate(bundles["forged"], ("attest", "tx"))
    by_commitment = {commitments[n].hex(): bundles[n] for n in DOCS}
    yield {"root": root, "codes": codes, "bundles": by_commitment}
    lg.close()


@pytest.fixture
def dvp_verify(consortium: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``dvp verify <name>.pdf --code <its code> [extra...]`` against the chain above."""

    def call(self: RpcClient, method: str, **params: Any) -> Any:
        assert method == "getAttestationProof"
        return consortium["bundles"][params["commitment"]]

    monkeypatch.setattr(RpcClient, "call", call)
    root = consortium["root"]

    def run(name: str, *extra: str, code: str | None = None) -> int:
        return main(
            [
                "verify",
                str(root / f"{name}.pdf"),
                "--code",
                code or consortium["codes"][name],
                "--genesis",
                str(root / "genesis.json"),
                "--rpc",
                "http://127.0.0.1:9/",
                *extra,
            ]
        )

    yield run


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("valid", "VALID", 0),
        ("forged", "INVALID", 4),
        ("revoked", "REVOKED", 5),
        ("expired", "EXPIRED", 6),
        ("absent", "NOT_FOUND", 7),
    ],
)
def test_each_verdict_has_its_exit_status(
    dvp_verify: Any, capsys: pytest.CaptureFixture[str], name: str, status: str, code: int
) -> None:
    assert VERIFY_EXIT_CODES[status] == code
    assert dvp_verify(name, "--json") == code
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == status
    # every answer carries the head it was judged at, and its age by this clock
    assert out["height"] == 2 and out["max_age_ms"] == 30_000
    assert 0 <= out["head_age_ms"] < 30_000
    assert out["checked_at_ms"] - out["block_time_ms"] == out["head_age_ms"]
    assert dvp_verify(name) == code
    assert capsys.readouterr().out.startswith(f"{status}:")


def test_state_older_than_max_age_is_unverifiable_never_valid(
    dvp_verify: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("valid", "revoked", "absent"):
        assert dvp_verify(name, "--json", "--max-age", "0.5") == 8, name
        out = json.loads(capsys.readouterr().out)
        assert out["status"] == "UNVERIFIABLE" and out["reason"] == "state_too_old"
        assert out["head_age_ms"] > 500 and out["max_age_ms"] == 500 and out["height"] == 2
    assert dvp_verify("valid", "--max-age", "0.5") == 8
    assert capsys.readouterr().out.startswith("UNVERIFIABLE (state too old): ")


@pytest.mark.parametrize("bad", ["nan", "NaN", "-1", "0", "inf", "-inf", "1e300", "abc", ""])
def test_max_age_must_be_a_positive_finite_number(
    dvp_verify: Any, capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    assert dvp_verify("valid", f"--max-age={bad}") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--max-age" in err, err


def test_usage_errors_and_an_unreachable_node(
    consortium: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    root = consortium["root"]
    args = ["--genesis", str(root / "genesis.json"), "--code", consortium["codes"]["valid"]]
    valid = str(root / "valid.pdf")
    port = free_ports(1)[0]  # nothing listens there
    assert main(["verify", valid, *args, "--rpc", f"http://127.0.0.1:{port}/"]) == 3
    assert capsys.readouterr().err.count("\n") == 1
    missing = str(root / "missing.pdf")
    assert main(["verify", missing, *args, "--rpc", f"http://127.0.0.1:{port}/"]) == 2
    assert "is not a file" in capsys.readouterr().err
    bad_code = ["--genesis", str(root / "genesis.json"), "--code", "not-a-code"]
    assert main(["verify", valid, *bad_code, "--rpc", f"http://127.0.0.1:{port}/"]) == 2
    assert capsys.readouterr().err.startswith("dvp verify: verification code")


def test_the_exit_statuses_are_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["verify", "--help"])
    out = capsys.readouterr().out
    for status, code in VERIFY_EXIT_CODES.items():
        assert f"  {code}  {status}" in out, status
    for code, what in ((1, "refused"), (2, "usage error"), (3, "node unreachable")):
        assert f"  {code}  " in out and what in out


def test_the_readme_lists_the_same_exit_statuses() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for status, code in VERIFY_EXIT_CODES.items():
        assert f"\n| {code} | {status}" in readme, status
    for code in (1, 2, 3):
        assert f"\n| {code} | " in readme
