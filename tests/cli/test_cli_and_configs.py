"""The `dvp` command's parsing and the shipped configs (no servers started)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.devnet_files import create_devnet
from cli.main import build_parser, main
from ledger.genesis import read_genesis, read_template
from node.config import ConfigError, load_config
from node.rpc.auth import CredentialStore, hash_api_key

CONFIGS = Path(__file__).parents[2] / "configs"


def test_shipped_node_configs_match_the_template() -> None:
    tpl = read_template(CONFIGS / "genesis.template.toml")
    validators = {m["id"] for m in tpl["members"] if "validator" in m.get("roles", [])}
    assert validators == {"cnix", "szcredit", "webank", "hkbank"}
    ports = set()
    for m in sorted(validators):
        cfg = load_config(CONFIGS / f"{m}.toml")
        assert cfg.name == m and cfg.is_validator and not cfg.rpc_open
        assert set(cfg.peers) == validators - {m}
        ports |= {cfg.p2p_listen.port, cfg.rpc_listen.port}
    assert len(ports) == 8


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "n.toml"
    bad.write_text('[node]\nname = "x"\n')
    with pytest.raises(ConfigError, match="key_file is required"):
        load_config(bad)
    bad.write_text(
        '[node]\nname="x"\nkey_file="k"\ngenesis="g"\ndata_dir="d"\n'
        '[rpc]\nadmin_listen = "10.0.0.1:1"\n'
    )
    with pytest.raises(ConfigError, match="loopback"):
        load_config(bad)
    bad.write_text("[nodes]\n")
    with pytest.raises(ConfigError, match=r"unknown table \[nodes\] \(did you mean \[node\]"):
        load_config(bad)


def _commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every leaf command of the parser tree, found by walking its subparsers."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, child in action.choices.items():
            yield from _commands(child, (*path, name))


def test_every_command_has_help_with_an_example_and_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    commands = dict(_commands(build_parser()))
    assert {
        ("gov", "vote"),
        ("gov", "list"),
        ("gov", "propose", "grant-doc-type"),
        ("keys", "api"),
        ("audit", "replay"),
        ("verify",),
        ("demo",),
    } <= set(commands)
    for argv, parser in commands.items():
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([*argv, "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert "example:" in out and f"dvp {argv[0]}" in out.split("example:")[1], argv
        flags = {o for a in parser._actions for o in a.option_strings}
        # `node run` only logs, and its log lines are JSON already.
        assert "--json" in flags or argv == ("node", "run"), argv
        if "--rpc" in flags:
            assert "--api-key" in flags and "--cacert" in flags, argv


def test_keys_api_mints_a_key_the_node_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "api", "--member", "hkbank", "--roles", "verifier,auditor", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert hash_api_key(doc["api_key"]) == doc["key_sha256"] and doc["roles"] == [
        "verifier",
        "auditor",
    ]
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        '[node]\nname="x"\nkey_file="k"\ngenesis="g"\ndata_dir="d"\n[rpc]\n' + doc["config"] + "\n"
    )
    store = CredentialStore.from_config(load_config(cfg).credentials)
    principal = store.authenticate(f"Bearer {doc['api_key']}")
    assert principal is not None and principal.roles == {"verifier", "auditor"}
    assert main(["keys", "api", "--member", "hkbank"]) == 0
    human = capsys.readouterr().out
    assert "shown only once" in human and "[rpc.credentials.hkbank]" in human
    assert main(["keys", "api", "--member", "no spaces", "--roles", "verifier"]) == 2
    assert main(["keys", "api", "--member", "hkbank", "--roles", "Bad Role"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 2  # one line each


def test_config_checks_credentials_and_tls_at_load(tmp_path: Path) -> None:
    base = '[node]\nname="x"\nkey_file="k"\ngenesis="g"\ndata_dir="d"\n[rpc]\n'
    bad = tmp_path / "n.toml"
    bad.write_text(base + '[rpc.credentials.hkbank]\nroles=["verifier"]\nkey_sha256="abc"\n')
    with pytest.raises(ConfigError, match="key_sha256.*dvp keys api"):
        load_config(bad)
    bad.write_text(base + 'tls_cert = "cert.pem"\n')
    with pytest.raises(ConfigError, match="both tls_cert and tls_key"):
        load_config(bad)
    bad.write_text(base + 'tls_cert = "cert.pem"\ntls_key = "key.pem"\n')
    with pytest.raises(ConfigError, match="tls_cert.*not a readable file"):
        load_config(bad)


def test_keys_and_genesis_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    for m in ("cnix", "szcredit", "webank", "hkbank", "gzfintech"):
        assert main(["keys", "new", str(keys / f"{m}.member.json")]) == 0
    for m in ("cnix", "szcredit", "webank", "hkbank"):
        assert main(["keys", "new", str(keys / f"{m}.node.json")]) == 0
    assert main(["keys", "new", str(keys / "cnix.node.json")]) == 2  # never overwrites
    assert "refusing to overwrite" in capsys.readouterr().err
    out = tmp_path / "genesis.json"
    assert main(["genesis", "new", "--keys", str(keys), "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["genesis_hash"] == read_genesis(out).hash.hex()
    assert main(["genesis", "show", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["chain_id"] == "dvp-demo"
    assert main(["genesis", "show", str(tmp_path / "missing.json")]) == 2


def test_devnet_files(tmp_path: Path) -> None:
    entries = create_devnet(tmp_path / "net", nodes=4, observers=1)
    assert [e.role for e in entries] == ["validator"] * 4 + ["observer"]
    for e in entries:
        cfg = load_config(e.config)
        assert cfg.rpc_open and cfg.key_file.exists() and cfg.genesis.exists()
    with pytest.raises(FileExistsError):
        create_devnet(tmp_path / "net")
    assert main(["devnet", "status", "--dir", str(tmp_path / "nowhere")]) == 2


def test_node_compact_on_a_stopped_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ledger.chain import Ledger

    entry = create_devnet(tmp_path / "net", nodes=4)[1]
    cfg = load_config(entry.config)
    args = ["node", "compact", "--config", str(entry.config), "--json"]
    assert main(args) == 1  # no store yet: one line, no traceback
    assert "ledger store" in capsys.readouterr().err
    Ledger.open(cfg.data_dir / "ledger", read_genesis(cfg.genesis), create=True).close()
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["height"] == 0 and out["bytes_after"] > 0
