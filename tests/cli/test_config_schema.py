"""The node config's strict schema (node/config_schema.py) and `dvp config check`.

Each refusal is one line naming the file, the table and key, and what was expected;
hypothesis drives the loader with hostile values at every key and with raw bytes.
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.devnet_files import create_devnet
from cli.main import main
from node.config import ConfigError, load_config
from node.config_schema import ConfigFile

BASE = '[node]\nname = "cnix"\nkey_file = "k.json"\ngenesis = "g.json"\ndata_dir = "d"\n'


def _refusal(tmp_path: Path, text: str) -> str:
    path = tmp_path / "node.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    return message.removeprefix(f"{path}: ")


def test_a_string_is_never_a_boolean(tmp_path: Path) -> None:
    # Once, `open = "false"` (truthy as a string) switched a node into open mode.
    for text in ('"false"', '"true"', "0", "1", '""', "[]"):
        message = _refusal(tmp_path, BASE + f"[rpc]\nopen = {text}\n")
        assert message.startswith("[rpc] open: expected true or false, got "), message
    path = tmp_path / "node.toml"
    path.write_text(BASE + "[rpc]\nopen = false\n")
    assert load_config(path).rpc_open is False
    path.write_text(BASE + "[rpc]\nopen = true\n")
    assert load_config(path).rpc_open is True


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[rpc]\ntls_crt = 'a'\n", '[rpc] unknown key "tls_crt" (did you mean "tls_cert"?)'),
        ("[rpc]\nopne = true\n", '[rpc] unknown key "opne" (did you mean "open"?)'),
        ("[lgo]\nlevel = 'info'\n", "unknown table [lgo] (did you mean [log]?)"),
        ("[tls]\ncert_fiel = 'c'\n", "unknown table [tls] (did you mean tls_cert in [rpc] or"),
        (
            "[p2p]\npenalty_strike = 3\n",
            '[p2p] unknown key "penalty_strike" (did you mean "penalty_strikes"?)',
        ),
        (
            "[rpc.credentials.hkbank]\nrols = ['verifier']\nkey_sha256 = 'x'\n",
            '[rpc.credentials.hkbank] unknown key "rols" (did you mean "roles"?)',
        ),
    ],
)
def test_unknown_keys_suggest_the_nearest_known_one(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert _refusal(tmp_path, BASE + text).startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[log]\nlevel = "verbose"\n', "[log] level: expected one of 'debug', 'info'"),
        ('[rpc]\nlisten = "127.0.0.1:99999"\n', "[rpc] listen: port 99999 is outside 0-65535"),
        ('[rpc]\nlisten = "127.0.0.1"\n', '[rpc] listen: expected "host:port"'),
        ("[rpc]\nlisten = 8080\n", "[rpc] listen: expected a string, got 8080"),
        ('[p2p]\nlisten = "localhost:1"\n', "[p2p] listen: 'localhost' is not an IP address"),
        ('[p2p.peers]\nwebank = "127.0.0.1:0"\n', "[p2p.peers] webank: port 0 is outside 1-"),
        ("[p2p]\nban_s = nan\n", "[p2p] ban_s: expected a finite number, got nan"),
        ("[p2p]\nban_s = -inf\n", "[p2p] ban_s: expected a finite number, got -inf"),
        ("[p2p]\nban_s = 1e300\n", "[p2p] ban_s: expected a value less than or equal to 604800"),
        ("[p2p]\npenalty_strikes = -1\n", "[p2p] penalty_strikes: expected a value greater"),
        ("[block]\nlinger_ms = 2.5\n", "[block] linger_ms: expected an integer, got 2.5"),
        ("[mempool]\nmax_txs = true\n", "[mempool] max_txs: expected an integer, got true"),
        (
            '[rpc]\nadmin_listen = "10.0.0.1:1"\n',
            "[rpc] admin_listen: '10.0.0.1' is not a loopback",
        ),
        ('[rpc]\nlisten = "127.0.0.1:7000"\n[p2p]\nlisten = "127.0.0.1:7000"\n', "port 7000 is al"),
        ("[rpc]\ncredentials = 5\n", "[rpc] credentials: expected a table, got 5"),
        ("[node]\n", "not valid TOML: Cannot declare"),  # a second [node] table
    ],
)
def test_types_bounds_ports_and_levels_are_checked(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert expected in _refusal(tmp_path, BASE + text)


def test_missing_directory_and_undecodable_files_are_one_line(tmp_path: Path) -> None:
    for path, expected in (
        (tmp_path / "missing.toml", "does not exist"),
        (tmp_path, "is a directory"),
    ):
        with pytest.raises(ConfigError, match=expected):
            load_config(path)
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(BASE.encode() + b'[log]\nlevel = "d\xe9bug"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(bad)


# ---------------------------------------------------------------------------- hypothesis


def _toml(value: Any) -> str:
    """``value`` as a TOML value (hypothesis draws Python values)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return ("-inf" if value < 0 else "inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A TOML basic string; a lone surrogate is written as is: not UTF-8.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml(k)} = {_toml(v)}" for k, v in value.items()) + "}"


_scalars = st.one_of(
    st.sampled_from(["", "false", "true", "127.0.0.1:0", "[::1]:1", "info", "0", "k.json"]),
    st.text(max_size=12),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e300, -1e300, -1.0, 0.5]),
    st.dates(),
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
_KNOWN = [
    (table, key)
    for table, field in ConfigFile.model_fields.items()
    for key in field.annotation.model_fields  # type: ignore[union-attr]
]
_places = st.sampled_from(_KNOWN) | st.tuples(
    st.sampled_from([*ConfigFile.model_fields, "tls", "metrics"]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12),
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(place=_places, value=_values)
def test_hostile_values_at_any_key_end_in_one_line(
    tmp_path: Path, place: tuple[str, str], value: Any
) -> None:
    table, key = place
    node = {"name": "cnix", "key_file": "k.json", "genesis": "g.json", "data_dir": "d"}
    tables: dict[str, dict[str, Any]] = {"node": node}
    tables.setdefault(table, {})[key] = value
    text = "".join(
        f"[{t}]\n" + "".join(f"{_toml(k)} = {_toml(v)}\n" for k, v in kv.items())
        for t, kv in tables.items()
    )
    path = tmp_path / "node.toml"
    path.write_text(text, errors="surrogatepass")
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith(f"{path}: "), message
        parsed = "not valid TOML" not in message and "not UTF-8" not in message
        if parsed and (table, key) not in _KNOWN and table in ConfigFile.model_fields:
            assert "unknown key" in message, message
        return
    # Accepted: then the value had the key's type, and nothing truthy became a switch.
    assert (table, key) in _KNOWN
    assert type(cfg.rpc_open) is bool and cfg.rpc_open == (
        place == ("rpc", "open") and value is True
    )
    assert 0 <= cfg.rpc_listen.port <= 65535 and 0 <= cfg.p2p_listen.port <= 65535
    assert math.isfinite(cfg.p2p_ban_s) and cfg.log_level in (
        "debug",
        "info",
        "warning",
        "error",
        "critical",
    )


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=200))
def test_any_bytes_end_in_one_line(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "node.toml"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------- dvp config check


def test_config_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    entry = create_devnet(tmp_path / "net", nodes=4)[0]
    assert main(["config", "check", str(entry.config)]) == 0
    assert "ok (validator cnix on chain dvp-demo" in capsys.readouterr().out
    assert main(["config", "check", str(entry.config), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["rpc_open"] is True and doc["role"] == "validator"

    text = entry.config.read_text()
    entry.config.write_text(text.replace("open = true", 'open = "false"'))
    assert main(["config", "check", str(entry.config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{entry.config}: [rpc] open: expected true or false" in err

    entry.config.write_text(
        text.replace('key_file = "../keys/cnix.node.json"', 'key_file = "nope.json"')
    )
    assert main(["config", "check", str(entry.config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "[node] key_file:" in err and "nope.json" in err

    assert main(["config", "check", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_the_readiness_head_age_limit_is_a_node_setting(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text(BASE)
    assert load_config(path).max_head_age_ms == 30_000  # the verifiers' default
    path.write_text(BASE + "max_head_age_s = 7.5\n")
    assert load_config(path).max_head_age_ms == 7_500
    for bad, why in (("0", "greater than 0"), ("nan", "finite"), ('"30"', "a number")):
        assert why in _refusal(tmp_path, BASE + f"max_head_age_s = {bad}\n")
