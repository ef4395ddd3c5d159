"""``dvp keys`` and every place a key is loaded (CLI ``--key``, ``dvp devnet up``'s
generator, node start): owner-only files, refused when too open, passphrase-protected
keys unlocked from a file, the environment or a prompt, with one-line errors.

Argon2id runs at libsodium's minimum limits here (``keyfile.DEFAULT_LIMITS`` patched
for the in-process commands; the default itself is checked in tests/ledger/test_keyfile.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nacl.pwhash
import pytest

from cli.devnet_files import create_devnet
from cli.main import main
from ledger import keyfile
from ledger.crypto import read_key_file, write_key_file
from ledger.errors import KeyFileError
from ledger.keyfile import KdfLimits, Passphrase, is_protected, read_public_key
from node.config import load_config
from node.node import Node
from node.transport import MemoryHub
from tests.support.cluster import transport_factory

LOW = KdfLimits(nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN)
UNREACHABLE = "http://127.0.0.1:1/"


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keyfile, "DEFAULT_LIMITS", LOW)
    for name in ("DVP_KEY_PASSPHRASE", "DVP_KEY_PASSPHRASE_FILE"):
        monkeypatch.delenv(name, raising=False)


def _dvp(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    """``dvp argv``: exit status, JSON stdout (if any), stderr (one line when it fails)."""
    status = main(list(argv))
    out, err = capsys.readouterr()
    if status != 0:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return status, json.loads(out) if out.strip().startswith("{") else out, err


def _private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


def test_keys_new_protect_show_unprotect_and_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "keys" / "szcredit.member.json"
    doc_file = tmp_path / "report.pdf"
    doc_file.write_bytes(b"%PDF credit report")
    status, new, _ = _dvp(capsys, "keys", "new", str(key), "--json")
    assert status == 0 and new["protected"] is False and os.stat(key).st_mode & 0o777 == 0o600
    public = new["public_key"]

    pfile = _private(tmp_path / "passphrase", "tiger tiger\n")
    status, out, err = _dvp(
        capsys, "keys", "protect", str(key), "--passphrase-file", str(pfile), "--json"
    )
    assert status == 0, err
    assert out == {"file": str(key), "public_key": public, "protected": True}
    assert is_protected(key) and read_public_key(key).hex() == public
    assert os.stat(key).st_mode & 0o777 == 0o600
    status, shown, _ = _dvp(capsys, "keys", "show", str(key), "--json")  # no passphrase
    assert status == 0 and shown["public_key"] == public and shown["protected"] is True
    status, _, err = _dvp(capsys, "keys", "protect", str(key), "--passphrase-file", str(pfile))
    assert status == 2 and "already passphrase-protected" in err

    # Using it: the passphrase is checked before any node is asked (exit 2, not 3).
    attest = ("attest", str(doc_file), "--doc-type", "credit-report", "--key", str(key))
    status, _, err = _dvp(capsys, *attest, "--rpc", UNREACHABLE)
    assert status == 2 and "is passphrase-protected" in err and "--passphrase-file" in err
    monkeypatch.setenv("DVP_KEY_PASSPHRASE", "lion")
    status, _, err = _dvp(capsys, *attest, "--rpc", UNREACHABLE)
    assert status == 2 and err.strip() == (
        f"dvp attest: wrong passphrase for {key} (the key could not be decrypted)"
    )
    monkeypatch.setenv("DVP_KEY_PASSPHRASE", "tiger tiger")
    status, _, err = _dvp(capsys, *attest, "--rpc", UNREACHABLE)
    assert status == 3 and "cannot reach" in err  # unlocked; only the node is missing
    monkeypatch.delenv("DVP_KEY_PASSPHRASE")
    status, _, err = _dvp(capsys, *attest, "--passphrase-file", str(pfile), "--rpc", UNREACHABLE)
    assert status == 3, err
    monkeypatch.setenv("DVP_KEY_PASSPHRASE_FILE", str(pfile))
    status, _, err = _dvp(capsys, *attest, "--rpc", UNREACHABLE)
    assert status == 3, err

    os.chmod(key, 0o644)
    status, _, err = _dvp(capsys, *attest, "--rpc", UNREACHABLE)
    assert status == 2 and err.strip().endswith(f"chmod 600 {key}")
    os.chmod(key, 0o600)

    status, out, err = _dvp(capsys, "keys", "unprotect", str(key), "--json")
    assert status == 0 and out["protected"] is False, err
    assert not is_protected(key) and read_public_key(key).hex() == public
    status, _, err = _dvp(capsys, "keys", "unprotect", str(key))
    assert status == 2 and "not passphrase-protected" in err

    status, new, err = _dvp(
        capsys, "keys", "new", str(tmp_path / "p.json"), "--protect", "--json"
    )  # from $DVP_KEY_PASSPHRASE_FILE
    assert status == 0 and new["protected"] is True, err
    assert (
        read_key_file(tmp_path / "p.json", Passphrase(file=pfile)).public_key.hex()
        == (new["public_key"])
    )


def test_devnet_keys_are_owner_only(tmp_path: Path) -> None:
    create_devnet(tmp_path / "net", nodes=4, observers=1)
    keys = sorted((tmp_path / "net" / "keys").iterdir())
    assert len(keys) == 9  # 5 members, 4 validator nodes
    assert {os.stat(k).st_mode & 0o777 for k in keys} == {0o600}


def test_a_node_starts_with_a_protected_key(tmp_path: Path) -> None:
    entries = create_devnet(tmp_path / "net", nodes=4)
    cfg = load_config(entries[0].config)
    plain = read_key_file(cfg.key_file)
    write_key_file(cfg.key_file, plain, overwrite=True, passphrase=b"node pass", limits=LOW)
    pfile = _private(tmp_path / "pass", "node pass\n")

    for source in (
        Passphrase(file=pfile, env={}),
        Passphrase(env={"DVP_KEY_PASSPHRASE": "node pass"}),
    ):
        node = Node(cfg, transport_factory(MemoryHub()), passphrase=source)
        try:
            assert node.key == plain
        finally:
            node.close()
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        Node(
            cfg,
            transport_factory(MemoryHub()),
            passphrase=Passphrase(env={"DVP_KEY_PASSPHRASE": "no"}),
        )
    with pytest.raises(KeyFileError, match="is passphrase-protected"):
        Node(cfg, transport_factory(MemoryHub()), passphrase=Passphrase(env={}))


@pytest.mark.timeout(60)
def test_dvp_node_run_refuses_a_locked_or_open_key_in_one_line(tmp_path: Path) -> None:
    """The real start path, in a process: exit 2 and one line before anything listens."""
    entries = create_devnet(tmp_path / "net", nodes=4)
    cfg = load_config(entries[0].config)
    write_key_file(
        cfg.key_file, read_key_file(cfg.key_file), overwrite=True, passphrase=b"pw", limits=LOW
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVP_KEY_PASSPHRASE")}

    def run(*extra: str, **more_env: str) -> tuple[int, str]:
        p = subprocess.run(
            [sys.executable, "-m", "cli.main", "node", "run", "--config", str(cfg.path), *extra],
            env={**env, **more_env},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=50,
        )
        # stderr is the node's JSON log, plus the error: exactly one line that is not JSON.
        lines = [line for line in p.stderr.splitlines() if not line.startswith("{")]
        assert len(lines) == 1, p.stderr
        return p.returncode, lines[0]

    status, err = run(DVP_KEY_PASSPHRASE="wrong")
    assert status == 2 and err == (
        f"dvp node run: wrong passphrase for {cfg.key_file} (the key could not be decrypted)"
    )
    status, err = run("--passphrase-file", str(tmp_path / "missing"))
    assert status == 2 and "does not exist" in err
    os.chmod(cfg.key_file, 0o640)
    status, err = run(DVP_KEY_PASSPHRASE="pw")
    assert status == 2 and err.endswith(f"chmod 600 {cfg.key_file}")
