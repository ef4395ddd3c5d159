"""`dvp org init|peers`, `dvp genesis new --member-descriptions` and `dvp testnet`:
the key ceremony's commands without node processes (tests/system/test_ceremony.py
starts the nodes). The member description's decoder is strict."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cli.devnet_files import create_devnet
from cli.main import main
from cli.member_description import DescriptionError, description_from_json, read_description
from ledger.genesis import read_genesis
from ledger.keyfile import is_protected, read_public_key


def _dvp(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _init(capsys: pytest.CaptureFixture[str], root: Path, mid: str, *extra: str) -> dict:  # type: ignore[type-arg]
    code, out, err = _dvp(
        capsys, "org", "init", "--member", mid, "--name", mid.upper(), "--out", str(root / mid),
        "--json", *extra,
    )  # fmt: skip
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def test_org_init_writes_private_keys_and_a_public_description(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    made = _init(capsys, tmp_path, "cnix", "--roles", "auditor", "--validator",
                 "--p2p-address", "203.0.113.7:26656")  # fmt: skip
    home = tmp_path / "cnix"
    d = read_description(home / "cnix.member-description.json")
    assert d.roles == ["auditor", "validator"] and d.p2p_address == "203.0.113.7:26656"
    assert bytes.fromhex(d.member_key) == read_public_key(home / "keys" / "cnix.member.json")
    assert bytes.fromhex(str(d.node_key)) == read_public_key(home / "keys" / "cnix.node.json")
    assert made["node_key"] == d.node_key
    for key in (home / "keys").iterdir():
        assert key.stat().st_mode & 0o777 == 0o600
    # The description holds public keys only: no seed, nothing secret.
    text = (home / "cnix.member-description.json").read_text()
    assert "seed" not in text
    for key in (home / "keys").iterdir():
        assert json.loads(key.read_text())["seed"] not in text
    config = (home / "nodes" / "cnix.toml").read_text()
    assert 'key_file = "../keys/cnix.node.json"' in config and 'listen = "0.0.0.0:26656"' in config
    # Run again: refused, nothing overwritten.
    code, _, err = _dvp(capsys, "org", "init", "--member", "cnix", "--name", "x",
                        "--out", str(home))  # fmt: skip
    assert code == 2 and "initialised" in err


def test_org_init_refuses_what_the_description_cannot_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for extra, message in [
        (["--roles", "king"], "unknown role 'king'"),
        (["--member", "no spaces"], "id"),
        (["--p2p-address", "10.0.0.1:1"], "p2p_address is only for"),
        (["--validator", "--p2p-address", "example.com:1"], "not an IP address"),
        (["--validator", "--observer"], "not an observer"),
    ]:
        argv = ["org", "init", "--member", "x", "--name", "X", "--out", str(tmp_path / "x")]
        code, _, err = _dvp(capsys, *argv, *extra)
        assert code == 2 and message in err and len(err.splitlines()) == 1, (extra, err)
        assert not (tmp_path / "x" / "keys").exists()  # nothing written


def test_org_init_with_a_passphrase_protects_both_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pfile = tmp_path / "pass"
    pfile.write_text("correct horse\n")
    pfile.chmod(0o600)
    made = _init(capsys, tmp_path, "webank", "--validator", "--passphrase-file", str(pfile))
    assert made["protected"]
    assert is_protected(Path(made["member_key_file"])) and is_protected(Path(made["node_key_file"]))


def test_the_description_decoder_is_strict() -> None:
    good = {
        "type": "dvp-member-description", "version": 1, "id": "cnix", "name": "CNIX",
        "member_key": "aa" * 32, "roles": ["validator"], "doc_types": [],
        "node_key": "bb" * 32, "p2p_address": "10.0.0.1:26656",
    }  # fmt: skip
    assert description_from_json(good, "f").id == "cnix"
    for change, message in [
        ({"extra": 1}, "extra: unknown field"),
        ({"version": 2}, "format version 2"),
        ({"type": "dvp-ed25519-key"}, "not a member description"),
        ({"member_key": "AA" * 32}, "member_key: expected 64 lowercase hex"),
        ({"node_key": None}, "needs its node_key"),
        ({"roles": ["validator", "validator"]}, "listed twice"),
        ({"roles": [], "node_key": None}, "p2p_address is only for"),
        ({"id": 7}, "id: Input should be a valid string"),
        ({"p2p_address": "10.0.0.1:0"}, "outside 1-65535"),
    ]:
        with pytest.raises(DescriptionError, match=message):
            description_from_json({**good, **change}, "f")
    bad = dict(good)
    del bad["member_key"]
    with pytest.raises(DescriptionError, match="member_key: Field required"):
        description_from_json(bad, "f")


def test_genesis_from_descriptions_and_its_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _init(capsys, tmp_path, "cnix", "--validator", "--p2p-address", "10.0.0.1:26656")
    _init(capsys, tmp_path, "szcredit", "--roles", "issuer", "--doc-types", "credit-report",
          "--validator", "--p2p-address", "10.0.0.2:26656")  # fmt: skip
    _init(capsys, tmp_path, "hkbank", "--roles", "verifier", "--observer")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for mid in ("cnix", "szcredit", "hkbank"):
        shutil.copy(tmp_path / mid / f"{mid}.member-description.json", inbox)
    out = tmp_path / "genesis.json"
    argv = ["genesis", "new", "--member-descriptions", str(inbox), "--out", str(out)]
    code, text, err = _dvp(capsys, *argv, "--chain-id", "ceremony-1", "--time-ms", "1000", "--json")
    assert code == 0, err
    g = read_genesis(out)
    assert json.loads(text)["genesis_hash"] == g.hash.hex()
    assert (g.chain_id, g.genesis_time_ms) == ("ceremony-1", 1000)
    assert [m.member_id for m in g.members] == ["cnix", "hkbank", "szcredit"]
    assert [v.member_id for v in g.validators.validators] == ["cnix", "szcredit"]
    # The same inputs give the same hash: what each organisation can recompute.
    again = tmp_path / "again.json"
    code, _, _ = _dvp(capsys, "genesis", "new", "--member-descriptions",
                      *sorted(str(p) for p in inbox.iterdir()), "--out", str(again),
                      "--chain-id", "ceremony-1", "--time-ms", "1000")  # fmt: skip
    assert code == 0 and read_genesis(again).hash == g.hash
    # `genesis show` gives the hash, members, roles and validators.
    code, text, _ = _dvp(capsys, "genesis", "show", str(out), "--json")
    shown = json.loads(text)
    assert shown["genesis_hash"] == g.hash.hex() and len(shown["validators"]) == 2
    code, text, _ = _dvp(capsys, "genesis", "show", str(out))
    assert f"genesis hash: {g.hash.hex()}" in text and "szcredit" in text
    # `org peers`: every other validator's address.
    code, text, _ = _dvp(capsys, "org", "peers", str(inbox), "--member", "hkbank", "--json")
    assert json.loads(text) == {"cnix": "10.0.0.1:26656", "szcredit": "10.0.0.2:26656"}

    def refused(*paths: Path, message: str) -> None:
        x = str(tmp_path / "x.json")
        code, _, err = _dvp(capsys, "genesis", "new", "--member-descriptions",
                            *map(str, paths), "--out", x)  # fmt: skip
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "x.json").exists()

    cnix = inbox / "cnix.member-description.json"
    refused(inbox, cnix, message="member 'cnix' is described twice")
    twin = json.loads(cnix.read_text()) | {"id": "cnix2", "node_key": None, "roles": [],
                                          "p2p_address": None}  # fmt: skip
    (tmp_path / "twin.json").write_text(json.dumps(twin))
    refused(inbox, tmp_path / "twin.json", message="member key")
    doc = json.loads(cnix.read_text()) | {"id": "cnix3", "doc_types": ["passport"]}
    (tmp_path / "doc.json").write_text(json.dumps(doc | {"member_key": "cc" * 32,
                                                         "node_key": "dd" * 32}))  # fmt: skip
    refused(tmp_path / "doc.json", message="document types ['passport']")
    refused(inbox / "hkbank.member-description.json", message="no description has the validator")
    refused(tmp_path / "missing.json", message="does not exist")
    x = str(tmp_path / "x.json")
    code, _, err = _dvp(capsys, "genesis", "new", "--keys", str(tmp_path),
                        "--member-descriptions", str(inbox), "--out", x)  # fmt: skip
    assert code == 2 and "either --member-descriptions" in err


def test_testnet_lays_out_one_folder_per_organisation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    net = tmp_path / "net"
    code, text, err = _dvp(capsys, "testnet", "--orgs", "4", "--observers", "1",
                           "--out", str(net), "--json")  # fmt: skip
    assert code == 0, err
    made = json.loads(text)
    orgs = ["cnix", "gzfintech", "hkbank", "szcredit", "webank"]
    assert made["organisations"] == orgs
    assert not (net / "keys").exists()  # no shared key folder
    for org in orgs:
        keys = {p.name for p in (net / org / "keys").iterdir()}
        assert keys <= {f"{org}.member.json", f"{org}.node.json"}, keys  # only its own
        assert read_genesis(net / org / "genesis.json").hash.hex() == made["genesis_hash"]
    # The genesis was made from the descriptions the coordinator received, nothing else.
    assert {p.name for p in (net / "coordinator").iterdir()} == {
        "genesis.json",
        *(f"{o}.member-description.json" for o in orgs),
    }
    configs = [Path(n["config"]) for n in made["nodes"]]
    assert [c.parent.parent.name for c in configs] == ["cnix", "szcredit", "webank", "hkbank",
                                                       "hkbank"]  # fmt: skip
    for c in configs:
        code, _, err = _dvp(capsys, "config", "check", str(c))
        assert code == 0, err
    code, _, err = _dvp(capsys, "testnet", "--out", str(net))
    assert code == 2 and "not empty" in err


def test_the_devnet_is_made_by_the_same_steps_in_one_folder(tmp_path: Path) -> None:
    entries = create_devnet(tmp_path / "net", nodes=2, observers=1)
    root = tmp_path / "net"
    assert [e.name for e in entries] == ["cnix", "szcredit", "observer-1"]
    descriptions = sorted(root.glob("*.member-description.json"))
    assert len(descriptions) == 5  # every member exported one; genesis made from them
    g = read_genesis(root / "genesis.json")
    for f in descriptions:
        d = read_description(f)
        assert bytes.fromhex(d.member_key) == read_public_key(root / "keys" / f"{d.id}.member.json")
    assert [v.member_id for v in g.validators.validators] == ["cnix", "szcredit"]
    assert (root / "nodes" / "cnix.toml").exists() and not (root / "nodes" / "webank.toml").exists()
