"""Key files (ledger/keyfile.py): owner-only on disk, refused when others may read them,
a strict versioned format, and passphrase protection with Argon2id + SecretBox.

Protected files here use libsodium's minimum Argon2id limits (``LOW``) so the suite
stays fast; ``DEFAULT_LIMITS`` (MODERATE) is what every file written without ``limits``
gets, and a test checks that.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nacl.pwhash
import pytest

from ledger import keyfile
from ledger.crypto import KeyPair, read_key_file, write_key_file
from ledger.errors import KeyFileError
from ledger.keyfile import KdfLimits, Passphrase, is_protected, read_public_key

LOW = KdfLimits(nacl.pwhash.argon2id.OPSLIMIT_MIN, nacl.pwhash.argon2id.MEMLIMIT_MIN)
KEY = KeyPair.from_seed(bytes(range(32)))


def _env(passphrase: str) -> Passphrase:
    return Passphrase(env={"DVP_KEY_PASSPHRASE": passphrase})


def _refused(path: Path, passphrase: Passphrase | None = None) -> str:
    """The one-line message ``read_key_file`` refuses ``path`` with."""
    with pytest.raises(KeyFileError) as err:
        read_key_file(path, passphrase)
    message = str(err.value)
    assert "\n" not in message
    return message


def _mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_written_owner_only_from_the_start_even_with_umask_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No chmod afterwards: the file is created 0600 (a replaced one via a 0600 temp).
    monkeypatch.setattr(os, "chmod", lambda *a, **k: pytest.fail("chmod after the fact"))
    old = os.umask(0)
    try:
        path = tmp_path / "k.json"
        write_key_file(path, KEY)
        assert _mode(path) == 0o600
        path.write_text(path.read_text())  # still 0600: write_text keeps the mode
        other = tmp_path / "shared.json"
        other.write_text("{}")
        assert _mode(other) == 0o666
        write_key_file(other, KEY, overwrite=True)  # replacing a world-writable file
        assert _mode(other) == 0o600 and read_key_file(other) == KEY
        assert sorted(p.name for p in tmp_path.iterdir()) == ["k.json", "shared.json"]
    finally:
        os.umask(old)
    with pytest.raises(KeyFileError, match="already exists"):
        write_key_file(path, KeyPair.generate())
    assert read_key_file(path) == KEY


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o700 | 0o004])
def test_a_key_others_can_access_is_refused_with_the_fix(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "k.json"
    write_key_file(path, KEY)
    os.chmod(path, mode)
    message = _refused(path)
    assert f"mode {mode:04o}" in message and f"chmod 600 {path}" in message
    with pytest.raises(KeyFileError, match="chmod 600"):
        read_public_key(path)  # even its public half: as ssh-keygen -y refuses
    os.chmod(path, 0o600)
    assert read_key_file(path) == KEY
    os.chmod(path, 0o400)
    assert read_key_file(path) == KEY


def test_protect_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    write_key_file(path, KEY, passphrase=b"correct horse", limits=LOW)
    text = path.read_text()
    assert KEY.seed.hex() not in text and _mode(path) == 0o600
    doc = json.loads(text)
    assert doc["version"] == 1 and "seed" not in doc
    enc = doc["encrypted_seed"]
    assert (enc["kdf"], enc["cipher"]) == ("argon2id", "xsalsa20-poly1305")
    assert (enc["opslimit"], enc["memlimit"]) == (LOW.opslimit, LOW.memlimit)
    assert is_protected(path) and read_public_key(path) == KEY.public_key  # no passphrase
    assert read_key_file(path, _env("correct horse")) == KEY
    # Unprotect: written back in clear, same key.
    write_key_file(path, read_key_file(path, _env("correct horse")), overwrite=True)
    assert not is_protected(path) and read_key_file(path) == KEY


def test_wrong_or_missing_passphrase_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    write_key_file(path, KEY, passphrase=b"right", limits=LOW)
    assert _refused(path, _env("wrong")) == (
        f"wrong passphrase for {path} (the key could not be decrypted)"
    )
    missing = _refused(path, Passphrase(env={}))
    for source in ("--passphrase-file", "$DVP_KEY_PASSPHRASE_FILE", "$DVP_KEY_PASSPHRASE"):
        assert source in missing
    with pytest.raises(KeyFileError, match="empty"):
        write_key_file(tmp_path / "e.json", KEY, passphrase=b"", limits=LOW)


def test_passphrase_from_a_file_the_environment_or_a_prompt(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    write_key_file(path, KEY, passphrase=b"s3cret \xc3\xa9", limits=LOW)
    pfile = tmp_path / "pass"
    pfile.write_bytes("s3cret é\n".encode())  # as `echo` writes it
    pfile.chmod(0o600)
    assert read_key_file(path, Passphrase(file=pfile, env={})) == KEY
    # The file wins over $DVP_KEY_PASSPHRASE; $DVP_KEY_PASSPHRASE_FILE names one.
    assert read_key_file(path, Passphrase(file=pfile, env={"DVP_KEY_PASSPHRASE": "x"})) == KEY
    assert read_key_file(path, Passphrase(env={"DVP_KEY_PASSPHRASE_FILE": str(pfile)})) == KEY
    assert read_key_file(path, _env("s3cret é")) == KEY
    pfile.chmod(0o644)
    assert f"chmod 600 {pfile}" in _refused(path, Passphrase(file=pfile, env={}))
    assert "does not exist" in _refused(path, Passphrase(file=tmp_path / "none", env={}))
    # A terminal: asked once to unlock, twice (and the same) to set a new one.
    asked: list[str] = []

    def answer(*answers: str) -> Passphrase:
        it = iter(answers)
        return Passphrase(env={}, interactive=True, prompt=lambda q: asked.append(q) or next(it))

    assert read_key_file(path, answer("s3cret é")) == KEY and len(asked) == 1
    assert answer("a", "a").get(path, new=True) == b"a"
    with pytest.raises(KeyFileError, match="differ"):
        answer("a", "b").get(path, new=True)

    def eof(_: str) -> str:
        raise EOFError

    with pytest.raises(KeyFileError, match="no passphrase was given"):
        Passphrase(env={}, interactive=True, prompt=eof).get(path)


def test_new_files_get_the_moderate_argon2id_limits(tmp_path: Path) -> None:
    assert keyfile.DEFAULT_LIMITS == KdfLimits(
        nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE
    )
    enc = keyfile.encrypt_seed(KEY.seed, b"pw", LOW)
    assert enc.opslimit == LOW.opslimit  # what the caller asked; the default is MODERATE


def _variant(tmp_path: Path, edit: dict[str, object], protected: bool = False) -> Path:
    src = tmp_path / "src.json"
    if not src.exists():
        write_key_file(src, KEY)
        write_key_file(tmp_path / "enc.json", KEY, passphrase=b"pw", limits=LOW)
    doc = json.loads((tmp_path / ("enc.json" if protected else "src.json")).read_text())
    for k, v in edit.items():
        if v is None:
            doc.pop(k, None)
        elif k.startswith("encrypted_seed."):
            doc["encrypted_seed"][k.split(".", 1)[1]] = v
        else:
            doc[k] = v
    out = tmp_path / "variant.json"
    out.unlink(missing_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
    return out


@pytest.mark.parametrize(
    ("edit", "protected", "expected"),
    [
        ({"type": "rsa"}, False, "is not a dvp key file"),
        ({"version": 2}, False, "format version 2; this dvp reads version 1"),
        ({"version": "1"}, False, "format version '1'"),
        ({"comment": "mine"}, False, "comment: unknown field"),
        ({"seed": "AB" * 32}, False, "seed: expected 64 lowercase hex characters"),
        ({"seed": "zz" * 32}, False, "seed: expected 64 lowercase hex characters"),
        ({"seed": "00" * 32}, False, "the seed does not match the recorded public key"),
        ({"public_key": 7}, False, "public_key: expected 64 lowercase hex characters"),
        ({"seed": None}, False, "exactly one of 'seed' and 'encrypted_seed'"),
        ({"seed": "00" * 32}, True, "exactly one of 'seed' and 'encrypted_seed'"),
        ({"encrypted_seed.kdf": "scrypt"}, True, "encrypted_seed.kdf"),
        ({"encrypted_seed.memlimit": 1 << 40}, True, "encrypted_seed.memlimit"),
        ({"encrypted_seed.opslimit": 0}, True, "encrypted_seed.opslimit"),
        ({"encrypted_seed.nonce": "00"}, True, "encrypted_seed.nonce: expected 48"),
        ({"encrypted_seed.pepper": "x"}, True, "encrypted_seed.pepper: unknown field"),
    ],
)
def test_the_format_is_strict(
    tmp_path: Path, edit: dict[str, object], protected: bool, expected: str
) -> None:
    message = _refused(_variant(tmp_path, edit, protected), _env("pw"))
    assert expected in message, message


def test_files_from_before_the_version_field_are_version_1(tmp_path: Path) -> None:
    assert read_key_file(_variant(tmp_path, {"version": None})) == KEY


@pytest.mark.parametrize("content", [b"", b"\xff\xfe", b"[1, 2]", b"{" * 70_000])
def test_garbage_and_other_things_are_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "k.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    _refused(path)
    assert "does not exist" in _refused(tmp_path / "missing.json")
    assert "not a regular file" in _refused(tmp_path)
