"""No traceback from user input: every `dvp` command, driven in-process through
``cli.main.main(argv)`` with hostile or mistaken values (NaN, infinities, 1e300,
negatives, empty, non-UTF-8, directories, missing and garbage files, RPC endpoints
that answer HTML, plain text, a 500, non-JSON-RPC JSON, undecodable bytes or nothing),
ends in an exit status of the table (never 70, the internal-error one) and, when it
fails, in exactly one line on stderr. docs/RELIABILITY.md lists the classes tried.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli.devnet
from cli.devnet_files import create_devnet
from cli.errors import EXIT_INTERNAL
from cli.main import main
from cli.verify_cmd import VERIFY_EXIT_CODES
from tests.support.bad_http import BEHAVIOURS, BadServer

Draw = Callable[[st.SearchStrategy[str]], str]

_NUMBERS = ["nan", "NaN", "inf", "-inf", "1e300", "-1e300", "-1", "0", "1", "2.5", "", "abc"]
_NUMBERS += ["0x10", "1_000", "\udcff", "9" * 400, "1e-300", "-0"]
_TEXT = ["", " ", "x\ny", "\udcff\udcfe", "--json", "-", "a" * 64, "ZZ" * 32, "\x7f", "中文"]
# What argv can hold: any text but NUL (C strings); undecodable bytes arrive as
# surrogates U+DC80-U+DCFF (PEP 383), which the samples above include.
_ARG = st.text(st.characters(blacklist_characters="\x00"), max_size=8)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, list[str]]]:
    """Hostile files, a real devnet's files (keys, genesis; no processes) and bad URLs."""
    root = tmp_path_factory.mktemp("hostile")
    (root / "dir").mkdir()
    (root / "empty").write_bytes(b"")
    (root / "latin1").write_bytes(b"caf\xe9 \xff\xfe")
    (root / "binary").write_bytes(bytes(range(256)))
    (root / "wrong.json").write_text('{"a": [1, 2]}')
    (root / "list.json").write_text("[]")
    (root / "partial.toml").write_text("[node]\nname = 'x'\n")
    net = root / "net"
    create_devnet(net, nodes=4)
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    with BadServer() as server:
        yield {
            "path": [
                *(str(root / n) for n in ("dir", "empty", "latin1", "binary", "wrong.json")),
                *(str(root / n) for n in ("list.json", "partial.toml", "missing")),
                *(str(net / n) for n in ("genesis.json", "keys", "nodes/cnix.toml")),
                "",
                "/dev/null",
                "x\ny",
                "\udcff",
            ],
            "url": [
                *(server.url(b) for b in BEHAVIOURS),
                f"http://127.0.0.1:{closed}/",
                "http://127.0.0.1:99999/",
                "ftp://127.0.0.1/",
                "http://[::1",
                "",
                "nan",
            ],
            "key": [str(net / "keys" / "szcredit.member.json")],
            "genesis": [str(net / "genesis.json")],
            "work": [str(root / "work")],
        }


def _command(w: dict[str, list[str]], draw: Draw) -> list[str]:
    """An argv of one command family, its slots filled with drawn hostile values."""

    def pick(kind: str) -> str:
        extra = _TEXT + _NUMBERS if kind in ("text", "number") else []
        return draw(st.sampled_from(w.get(kind, []) + extra) | _ARG)

    def path() -> str:
        return pick("path")

    def url() -> str:
        return pick("url")

    def num() -> str:
        return pick("number")

    def txt() -> str:
        return pick("text")

    key = draw(st.sampled_from(w["key"] + w["path"]))
    genesis = draw(st.sampled_from(w["genesis"] + w["path"]))
    file = draw(st.sampled_from([w["genesis"][0], *w["path"]]))
    out = f"{w['work'][0]}/{draw(st.sampled_from(['out', 'a/b', '']))}"
    yes = draw(st.sampled_from(["--yes", "--no"]))
    bad_config = draw(st.sampled_from([p for p in w["path"] if "/nodes/" not in p]) | _ARG)
    # fmt: off
    families: list[Callable[[], list[str]]] = [
        lambda: ["keys", "show", path()],
        lambda: ["keys", "new", out + txt(), "--force"],
        lambda: ["keys", "api", "--member", txt(), "--roles", txt()],
        lambda: ["genesis", "show", path()],
        lambda: ["genesis", "new", "--keys", path(), "--template", path(), "--out", out, "--force"],
        lambda: ["genesis", "new", "--member-descriptions", path(), path(), "--template", path(),
                 "--chain-id", txt(), "--time-ms", num(), "--out", out, "--force"],
        lambda: ["org", "init", "--member", txt(), "--name", txt(), "--roles", txt(),
                 "--doc-types", txt(), "--validator", "--p2p-address", txt(), "--out", out],
        lambda: ["org", "init", "--member", "x", "--name", "X", "--out", out,
                 "--passphrase-file", path()],
        lambda: ["org", "peers", path(), "--member", txt()],
        lambda: ["testnet", "--orgs", num(), "--observers", num(), "--out", out + txt()],
        lambda: ["config", "check", path()],
        lambda: ["node", "run", "--config", bad_config],  # a good one would run a node
        lambda: ["node", "compact", "--config", path()],
        lambda: ["status", "--rpc", url()],
        lambda: ["devnet", "up", "--dir", out, "--nodes", num(), "--observers", num(),
                 "--wait", num()],
        lambda: ["devnet", "status", "--dir", path()],
        lambda: ["devnet", "down", "--dir", path()],
        lambda: ["attest", file, "--doc-type", txt(), "--key", key, "--rpc", url(),
                 "--valid-days", num()],
        lambda: ["revoke", txt(), "--reason", txt(), "--key", key, "--rpc", url()],
        lambda: ["verify", file, "--code", txt(), "--genesis", genesis, "--rpc", url(),
                 "--max-age", num()],
        lambda: ["audit", "replay", "--datadir", path(), "--workdir", out],
        lambda: ["audit", "replay", "--rpc", url(), "--genesis", genesis, "--workdir", out],
        lambda: ["gov", "list", txt(), "--rpc", url()],
        lambda: ["gov", "vote", txt(), yes, "--key", key, "--rpc", url()],
        lambda: ["gov", "propose", "grant-doc-type", txt(), txt(), "--key", key, "--rpc", url(),
                 "--deadline-blocks", num()],
        lambda: ["store", "check", "--datadir", path(), "--genesis", genesis],
        lambda: ["store", "resync", "--config", bad_config, "--timeout", num()],
        lambda: ["--json", txt()],
    ]
    # fmt: on
    return draw(st.sampled_from(families), label="command")()


def _assert_one_line(argv: list[str], code: int, out: str, err: str) -> None:
    # 4-8: the verdicts of `dvp verify` (cli/verify_cmd.py), on stdout.
    verdict = argv[0] == "verify" and code in VERIFY_EXIT_CODES.values()
    assert code != EXIT_INTERNAL and (code in (0, 1, 2, 3) or verdict), (argv, code, err)
    lines = err.strip("\n").splitlines()
    if code in (2, 3):
        assert len(lines) == 1 and lines[0].startswith("dvp"), (argv, err)
    elif code != 0:  # a verdict on stdout (verify, audit) or a refusal on stderr
        assert len(lines) <= 1, (argv, err)


@settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_every_command_ends_in_one_line_on_hostile_input(
    world: dict[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    data: st.DataObject,
) -> None:
    # `devnet up` with acceptable arguments would start processes: this test is about
    # the arguments, so the start itself is a stub.
    monkeypatch.setattr(cli.devnet, "up", lambda *a, **k: [])
    monkeypatch.setattr(cli.devnet, "status", lambda root: [])
    monkeypatch.chdir(tmp_path)
    argv = _command(world, data.draw)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    _assert_one_line(argv, code, out, err)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    argv=st.lists(
        st.sampled_from(
            ["keys", "genesis", "node", "status", "devnet", "verify", "gov", "config", "audit"]
            + ["org", "init", "testnet", "--orgs", "--out"]
            + ["show", "new", "check", "run", "list", "vote", "up", "down", "replay", "--rpc"]
            + ["--json", "--config", "--dir", "--nodes", "--key", "-h", "--bogus", "-"]
            + _NUMBERS
        ),
        max_size=6,
    )
)
def test_usage_errors_are_one_line(
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli.devnet, "up", lambda *a, **k: [])
    monkeypatch.setattr(cli.devnet, "status", lambda root: [])
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    if ("-h" in argv and code == 0) or not argv:
        assert out.startswith("usage: dvp")  # help asked for, or bare `dvp`: help
        return
    _assert_one_line(argv, code, out, err)


@pytest.mark.parametrize("behaviour", [*BEHAVIOURS, "closed"])
def test_a_bad_rpc_endpoint_is_one_line_and_exit_3(
    world: dict[str, list[str]], behaviour: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = world["url"][BEHAVIOURS.index(behaviour) if behaviour != "closed" else len(BEHAVIOURS)]
    assert main(["status", "--rpc", url]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    expected = {
        "html": "did not answer JSON (<!doctype html>",
        "text": "did not answer JSON (hello, this is not JSON)",
        "500": "answered HTTP 500",
        "nothing": "cannot reach",
        "notrpc": "answered JSON that is not JSON-RPC",
        "binary": "did not answer JSON",
        "closed": "cannot reach",
    }[behaviour]
    assert expected in err, err


def test_numbers_are_refused_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["devnet", "up", "--nodes", "nan"],
        ["devnet", "up", "--wait", "inf"],
        ["devnet", "up", "--wait", "1e300"],
        ["devnet", "up", "--observers", "-1"],
        ["testnet", "--orgs", "0", "--out", "x"],
        ["testnet", "--orgs", "1e3", "--out", "x"],
        ["genesis", "new", "--member-descriptions", "d", "--time-ms", "-1"],
        ["attest", "f", "--doc-type", "d", "--key", "k", "--rpc", "u", "--valid-days=-inf"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "expected a" in err and "(see dvp" in err, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from ledger.smt_update_one import fast_path_in_use

    assert main(["--version"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("dvp ") and out[1].startswith("protocol 1 (/dvp/consensus/1")
    state = "in use" if fast_path_in_use() else "not"
    assert out[2].startswith("C fast path (ledger/_smt_fast): " + state)


def test_exit_statuses_are_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "exit status:" in text and "70  an internal error" in text


def test_an_internal_error_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(*a: object, **k: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli.devnet, "up", boom)
    assert main(["devnet", "up", "--dir", "/nonexistent/x"]) == EXIT_INTERNAL
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error" in err and "ZeroDivisionError: a bug" in err
    assert json.dumps(err)  # printable
