"""``dvp subject`` and the consent side of ``dvp verify`` (docs/CONSENT.md §1, §4, §6),
without a node: key derivation, the key file, argument refusals, and how ``dvp verify``
answers -32007 (a fake RPC client stands in for the node; tests/node/test_consent_rpc.py
and the demo test run the real thing)."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest

import cli.verify_cmd
from cli.documents import ConsentNeeded, fetch_bundle
from cli.main import main as dvp
from cli.rpc_client import RpcCallError
from cli.subject import SubjectFile, derive_key
from ledger.commitment import encode_code
from ledger.crypto import KeyPair
from ledger.genesis import write_genesis
from ledger.testchain import Consortium
from ledger.transaction import Access, Transaction

SEED = bytes(range(32))


def test_derived_keys_are_deterministic_distinct_and_follow_the_spec() -> None:
    keys = [derive_key(SEED, i) for i in range(4)]
    assert [k.public_key for k in keys] == [derive_key(SEED, i).public_key for i in range(4)]
    assert len({k.public_key for k in keys}) == 4
    assert derive_key(bytes(32), 0).public_key != keys[0].public_key
    # An independent implementation of docs/CONSENT.md §1: keyed BLAKE2b (hashlib's).
    for i in (0, 1, 2**40):
        seed = hashlib.blake2b(
            b"", digest_size=32, key=SEED, salt=i.to_bytes(16, "big"), person=b"dvp-subject-v1"
        ).digest()
        assert derive_key(SEED, i).public_key == KeyPair.from_seed(seed).public_key
    with pytest.raises(ValueError):
        derive_key(b"short", 0)


def test_subject_new_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "applicant.json"
    assert dvp(["subject", "new", "--out", str(f)]) == 0
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    seed = json.loads(f.read_text())["seed"]
    # Never overwritten: one line, usage status.
    capsys.readouterr()
    assert dvp(["subject", "new", "--out", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "never overwritten" in err
    assert json.loads(f.read_text())["seed"] == seed

    assert dvp(["subject", "key", "--key", str(f), "--label", "credit-report", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert dvp(["subject", "key", "--key", str(f), "--label", "bank-statement", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert dvp(["subject", "key", "--key", str(f), "--label", "credit-report", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (first["index"], second["index"]) == (0, 1)
    assert again == first and first["public_key"] != second["public_key"]
    loaded = SubjectFile.read(f)
    assert loaded.labels == {"credit-report": 0, "bank-statement": 1}
    assert loaded.by_label("bank-statement").public_key.hex() == second["public_key"]
    assert stat.S_IMODE(f.stat().st_mode) == 0o600

    f.chmod(0o644)  # others may read it: refused
    assert dvp(["subject", "key", "--key", str(f), "--label", "x"]) == 2
    assert "chmod 600" in capsys.readouterr().err
    (tmp_path / "junk.json").write_text("{}")
    assert (
        dvp(["subject", "grants", "--key", str(tmp_path / "junk.json"), "--rpc", "http://x/"]) == 2
    )
    assert "not a subject key file" in capsys.readouterr().err


def test_subject_argument_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.json"
    SubjectFile.create(f).new_key("credit-report")
    base = ["subject", "grant", "--key", str(f), "--label", "credit-report", "--to", "hkbank"]
    base += ["--purpose", "loan-application", "--rpc", "http://127.0.0.1:9/"]
    assert dvp([*base, "--uses", "0"]) == 2
    assert dvp([*base, "--uses", "101"]) == 2
    assert dvp([*base, "--until", "2001-01-01"]) == 2
    assert "in the past" in capsys.readouterr().err
    assert dvp([*base, "--until", "next week"]) == 2
    assert dvp([*base[:5], "other", *base[6:]]) == 2  # an unknown label
    assert "no key labelled 'other'" in capsys.readouterr().err
    # No node there: exit 3, one line.
    genesis = tmp_path / "genesis.json"
    write_genesis(genesis, Consortium.make().genesis)
    log = ["subject", "log", "--key", str(f), "--rpc", "http://127.0.0.1:9/"]
    assert dvp([*log, "--genesis", str(tmp_path / "missing.json")]) == 2
    capsys.readouterr()
    assert dvp([*log, "--genesis", str(genesis)]) == 3
    assert capsys.readouterr().err.count("\n") == 1
    assert dvp(["subject", "revoke", "--key", str(f), "abc", "--rpc", "http://127.0.0.1:9/"]) == 2


class FakeNode:
    """Answers like a node for a document bound to its subject with one live grant."""

    def __init__(self, grants: list[dict[str, Any]], ledger_code: str | None = None) -> None:
        self.grants = grants
        self.ledger_code = ledger_code
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, method: str, **params: Any) -> Any:
        self.calls.append((method, params))
        if method == "getAttestationProof" and "access" not in params:
            reason = "no_access" if self.grants else "no_grant"
            raise RpcCallError(
                "consent required", -32007, {"reason": reason, "grants": self.grants}
            )
        if method == "getAttestationProof":
            return {"bundle_for": params["access"]}
        if method == "getMembers":
            return {"members": [{"member_id": "hkbank", "key": BANK.public_key.hex()}]}
        if method == "status":
            return {"chain_id": "dvp-demo", "height": 5}
        if method == "submitTransaction":
            if self.ledger_code:
                raise RpcCallError("refused", -32004, {"code": self.ledger_code})
            return {"tx_id": Transaction.decode(bytes.fromhex(params["tx"])).tx_id.hex()}
        raise AssertionError(method)

    def __enter__(self) -> FakeNode:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


BANK = KeyPair.from_seed(hashlib.sha256(b"bank").digest())
GRANT: dict[str, Any] = {"grant_id": "ab" * 32, "grantee": "hkbank", "purpose": "loan-application",
         "uses_left": 1, "not_after_ms": 1}  # fmt: skip
COMMITMENT = bytes(32)


def test_fetch_bundle_records_an_access_then_asks_with_it() -> None:
    node = FakeNode([dict(GRANT, grantee="webank"), GRANT])
    bundle, access = fetch_bundle(node, COMMITMENT, member_key=BANK)  # type: ignore[arg-type]
    sent = Transaction.decode(bytes.fromhex(node.calls[3][1]["tx"]))
    assert sent.sender == BANK.public_key
    assert sent.payload == Access(bytes.fromhex(GRANT["grant_id"]), COMMITMENT, "loan-application")
    assert access == sent.tx_id.hex() and bundle == {"bundle_for": access}
    with pytest.raises(ConsentNeeded) as no_key:
        fetch_bundle(FakeNode([GRANT]), COMMITMENT)  # type: ignore[arg-type]
    assert no_key.value.reason == "no_access"
    with pytest.raises(ConsentNeeded) as none:
        fetch_bundle(FakeNode([]), COMMITMENT, member_key=BANK)  # type: ignore[arg-type]
    assert none.value.reason == "no_grant"
    with pytest.raises(ConsentNeeded) as refused:
        node = FakeNode([GRANT], ledger_code="grant_revoked")
        fetch_bundle(node, COMMITMENT, member_key=BANK)  # type: ignore[arg-type]
    assert refused.value.reason == "grant_revoked"
    with pytest.raises(ConsentNeeded):  # a --grant that is not among the live ones
        fetch_bundle(FakeNode([GRANT]), COMMITMENT, member_key=BANK, grant_id=bytes(32))  # type: ignore[arg-type]


def test_verify_without_key_says_to_pass_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = tmp_path / "report.pdf"
    doc.write_bytes(b"report")
    monkeypatch.setattr(cli.verify_cmd, "client", lambda args: FakeNode([GRANT]))
    write_genesis(tmp_path / "genesis.json", Consortium.make().genesis)
    status = dvp(
        ["verify", str(doc), "--code", encode_code(bytes(32)), "--rpc", "http://127.0.0.1:9/",
         "--genesis", str(tmp_path / "genesis.json")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1, err
    assert "consent required (no_access)" in err and "--key" in err


def test_genesis_purposes_and_the_purpose_proposals(capsys: pytest.CaptureFixture[str]) -> None:
    from cli.genesis_cmd import _with_purposes
    from cli.gov import ACTIONS, parse_args_of
    from ledger.types import GovAction

    g = Consortium.make().genesis
    assert _with_purposes(g, None, None) is g
    given = _with_purposes(g, "mortgage-application, loan-application", ["x"])
    assert given.purposes == ("loan-application", "mortgage-application")
    assert given.hash != g.hash
    assert _with_purposes(g, None, ["account-opening"]).purposes == ("account-opening",)
    with pytest.raises(ValueError, match="--purposes"):
        _with_purposes(g, "Not An Identifier", None)
    for name, action in (
        ("add-purpose", GovAction.ADD_PURPOSE),
        ("remove-purpose", GovAction.REMOVE_PURPOSE),
    ):
        spec = ACTIONS[name]
        assert spec.action == action
        assert parse_args_of(spec, ["mortgage-application"]) == ("mortgage-application",)
    assert dvp(["gov", "propose", "add-purpose", "--help"]) == 0
    assert "PURPOSE" in capsys.readouterr().out
