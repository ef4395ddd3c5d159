"""The `dvp` command's parsing and the shipped configs (no servers started)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.devnet_files import create_devnet
from cli.main import build_parser, main
from ledger.genesis import read_genesis, read_template
from node.config import ConfigError, load_config

CONFIGS = Path(__file__).parent.parent / "configs"


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
    bad.write_text('[node]\nname="x"\nkey_file="k"\ngenesis="g"\ndata_dir="d"\n'
                   '[rpc]\nadmin_listen = "10.0.0.1:1"\n')
    with pytest.raises(ConfigError, match="loopback"):
        load_config(bad)
    bad.write_text('[nodes]\n')
    with pytest.raises(ConfigError, match="unknown sections"):
        load_config(bad)


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["keys", "new"], ["keys", "show"], ["genesis", "new"], ["genesis", "show"],
                 ["node", "run"], ["status"], ["devnet", "up"], ["devnet", "status"],
                 ["devnet", "down"]):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args([*argv, "--help"])
        assert e.value.code == 0
        assert "example:" in capsys.readouterr().out


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
