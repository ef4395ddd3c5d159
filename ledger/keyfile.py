"""Secret key files on disk: the versioned JSON format, owner-only permissions and
optional passphrase protection (Argon2id + XSalsa20-Poly1305, both from PyNaCl).

A key file holds one 32-byte Ed25519 seed and its public key (docs/KEYS.md is the
operator's description of the format). ``ledger.crypto`` turns the seed into a
``KeyPair``; this module owns the bytes on disk.

Rules:
- Written only by ``write_seed``: a new file is created by ``os.open`` with mode 0600 and
  O_EXCL; a replaced one is written to a 0600 temporary file beside it and renamed over
  it. At no moment can anyone but the owner read the secret (no chmod afterwards).
- Read only through ``_load``: a file that its group or others may access is refused, as
  ssh refuses such a private key, with the fix (``chmod 600 PATH``) in the message.
- Strict: ``type`` and ``version`` are checked first (a newer format names itself), then
  the schema (pydantic) refuses unknown fields, wrong types and malformed hex; the seed
  must derive the recorded public key. Files without ``version`` were written before the
  field existed and are version 1.
- Protected seeds: key = Argon2id(passphrase, salt, opslimit, memlimit), ciphertext =
  SecretBox(key).encrypt(seed, nonce). The public key stays in clear, so a protected
  file still names its key without the passphrase (``read_public_key``). The limits are
  stored in the file; new files get libsodium's MODERATE (see ``DEFAULT_LIMITS``).
- The passphrase comes from a ``Passphrase``: a passphrase file, else
  ``$DVP_KEY_PASSPHRASE``, else a prompt on the terminal; never from a command line
  argument (it would show in ``ps``).
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import nacl.bindings
import nacl.exceptions
import nacl.pwhash
import nacl.secret
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator
from pydantic import ValidationError as SchemaError

from ledger.errors import KeyFileError

KEY_FILE_TYPE: Final = "dvp-ed25519-key"
FORMAT_VERSION: Final = 1
ENV_PASSPHRASE = "DVP_KEY_PASSPHRASE"
ENV_PASSPHRASE_FILE = "DVP_KEY_PASSPHRASE_FILE"

_argon2id = nacl.pwhash.argon2id
_MAX_FILE_BYTES = 64 * 1024  # a key file is ~600 bytes; more is not one


@dataclass(frozen=True)
class KdfLimits:
    """Argon2id's cost: passes over memory (``opslimit``) and memory in bytes."""

    opslimit: int
    memlimit: int


#: New protected files: libsodium's MODERATE (3 passes over 256 MiB, ~1 s on one core).
#: A key is unlocked once per node start or CLI command, so a second is affordable, and
#: it costs an attacker who copied the file ten times what INTERACTIVE (64 MiB, ~0.1 s)
#: would; SENSITIVE (1 GiB, ~4 s) would make every signing command slow.
DEFAULT_LIMITS = KdfLimits(_argon2id.OPSLIMIT_MODERATE, _argon2id.MEMLIMIT_MODERATE)
#: What a file may ask of the reader: libsodium's minimum up to SENSITIVE's memory (a
#: crafted file cannot make a node allocate more than 1 GiB or spin for minutes).
_MAX_OPSLIMIT = 4 * _argon2id.OPSLIMIT_SENSITIVE
_MAX_MEMLIMIT = _argon2id.MEMLIMIT_SENSITIVE


def _hex(size: int) -> Callable[[Any], bytes]:
    """Field parser: ``2 * size`` lowercase hex characters (bytes as they are, for code)."""

    def parse(value: Any) -> bytes:
        if isinstance(value, bytes) and len(value) == size:
            return value
        if isinstance(value, str) and len(value) == 2 * size:
            if all(c in "0123456789abcdef" for c in value):
                return bytes.fromhex(value)
        raise ValueError(f"expected {2 * size} lowercase hex characters")

    return parse


_SALT, _NONCE = _argon2id.SALTBYTES, nacl.secret.SecretBox.NONCE_SIZE
_SEALED = 32 + nacl.secret.SecretBox.MACBYTES  # a seed and its Poly1305 tag
Hex32 = Annotated[bytes, BeforeValidator(_hex(32)), PlainSerializer(bytes.hex)]
SaltHex = Annotated[bytes, BeforeValidator(_hex(_SALT)), PlainSerializer(bytes.hex)]
NonceHex = Annotated[bytes, BeforeValidator(_hex(_NONCE)), PlainSerializer(bytes.hex)]
SealedHex = Annotated[bytes, BeforeValidator(_hex(_SEALED)), PlainSerializer(bytes.hex)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class EncryptedSeed(_Strict):
    """``encrypted_seed``: the seed under a key derived from the passphrase."""

    kdf: Literal["argon2id"] = "argon2id"
    opslimit: int = Field(ge=_argon2id.OPSLIMIT_MIN, le=_MAX_OPSLIMIT)
    memlimit: int = Field(ge=_argon2id.MEMLIMIT_MIN, le=_MAX_MEMLIMIT)
    salt: SaltHex
    cipher: Literal["xsalsa20-poly1305"] = "xsalsa20-poly1305"
    nonce: NonceHex
    ciphertext: SealedHex


class KeyFileV1(_Strict):
    """Version 1: exactly one of ``seed`` (in clear) and ``encrypted_seed``."""

    type: Literal["dvp-ed25519-key"] = KEY_FILE_TYPE
    version: Literal[1] = FORMAT_VERSION
    public_key: Hex32
    seed: Hex32 | None = None
    encrypted_seed: EncryptedSeed | None = None

    @model_validator(mode="after")
    def _one_seed(self) -> KeyFileV1:
        if (self.seed is None) == (self.encrypted_seed is None):
            raise ValueError("exactly one of 'seed' and 'encrypted_seed' must be present")
        return self

    @property
    def protected(self) -> bool:
        return self.encrypted_seed is not None


# ---------------------------------------------------------------------------
# Passphrases
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Passphrase:
    """Where a passphrase comes from, tried in order: ``file`` (or the file named by
    ``$DVP_KEY_PASSPHRASE_FILE``), ``$DVP_KEY_PASSPHRASE``, then a prompt if
    ``interactive``. ``prompt`` is ``getpass.getpass`` outside tests."""

    file: Path | None = None
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)
    interactive: bool = False
    prompt: Callable[[str], str] = getpass.getpass

    @classmethod
    def default(cls, file: str | Path | None = None) -> Passphrase:
        """The environment's sources; prompting only when stdin is a terminal."""
        return cls(Path(file) if file else None, interactive=sys.stdin.isatty())

    def _file(self) -> Path | None:
        if self.file is not None:
            return self.file
        named = self.env.get(ENV_PASSPHRASE_FILE)
        return Path(named) if named else None

    def get(self, key_path: Path, *, new: bool = False) -> bytes:
        """The passphrase for ``key_path``; ``new``: one to protect it with (asked twice)."""
        pfile = self._file()
        if pfile is not None:
            return _nonempty(_read_passphrase_file(pfile), f"passphrase file {pfile}")
        if self.env.get(ENV_PASSPHRASE):
            return self.env[ENV_PASSPHRASE].encode("utf-8", "surrogateescape")
        if not self.interactive:
            why = "to protect" if new else f"{key_path} is passphrase-protected; to unlock"
            raise KeyFileError(
                f"{why} it give the passphrase with --passphrase-file FILE, "
                f"${ENV_PASSPHRASE_FILE} or ${ENV_PASSPHRASE} (or run in a terminal)"
            )
        try:
            first = self.prompt(f"{'new ' if new else ''}passphrase for {key_path}: ")
            if new and self.prompt("the same passphrase again: ") != first:
                raise KeyFileError("the two passphrases differ; nothing was changed")
        except EOFError:
            raise KeyFileError(f"no passphrase was given for {key_path}") from None
        return _nonempty(first.encode("utf-8", "surrogateescape"), "the passphrase")


def _nonempty(passphrase: bytes, what: str) -> bytes:
    if not passphrase:
        raise KeyFileError(f"{what} is empty; an empty passphrase protects nothing")
    return passphrase


def _read_passphrase_file(path: Path) -> bytes:
    """The file's bytes without one trailing newline (as ``echo`` leaves it)."""
    raw = _read_private(path, "passphrase file")
    for end in (b"\r\n", b"\n"):
        if raw.endswith(end):
            return raw[: -len(end)]
    return raw


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------


def _read_private(path: Path, what: str) -> bytes:
    """A regular file's bytes, refused if its group or others may access it."""
    try:
        # O_NONBLOCK: a FIFO in the key's place must not hang the node (no effect on files).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise KeyFileError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise KeyFileError(f"{what} {path} cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"{what} {path} is not a regular file")
        if st.st_mode & 0o077:
            raise KeyFileError(
                f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}: its group or "
                f"others can access it; a secret must be the owner's alone: chmod 600 {path}"
            )
        data = os.read(fd, _MAX_FILE_BYTES + 1)
        if len(data) > _MAX_FILE_BYTES:
            raise KeyFileError(f"{what} {path} is too large (over {_MAX_FILE_BYTES} bytes)")
        return data
    except OSError as exc:
        raise KeyFileError(f"{what} {path} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)


def _load(path: Path) -> KeyFileV1:
    raw = _read_private(path, "key file")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise KeyFileError(f"key file {path} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("type") != KEY_FILE_TYPE:
        raise KeyFileError(f"{path} is not a dvp key file (its type must be {KEY_FILE_TYPE!r})")
    version = doc.setdefault("version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise KeyFileError(
            f"key file {path} has format version {version!r}; this dvp reads version "
            f"{FORMAT_VERSION} (a newer dvp wrote it?)"
        )
    try:
        return KeyFileV1.model_validate(doc)
    except SchemaError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        what = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            what = "unknown field (docs/KEYS.md lists the fields of version 1)"
        raise KeyFileError(f"key file {path}: {where + ': ' if where else ''}{what}") from None


def public_key_of(seed: bytes) -> bytes:
    pk, _sk = nacl.bindings.crypto_sign_seed_keypair(seed)
    return bytes(pk)


def read_public_key(path: Path) -> bytes:
    """The public key a key file records (no passphrase needed; permissions checked)."""
    return bytes(_load(Path(path)).public_key)


def is_protected(path: Path) -> bool:
    return _load(Path(path)).protected


def read_seed(path: Path, passphrase: Passphrase | None = None) -> bytes:
    """The file's seed, decrypted if protected (``passphrase`` default: the environment's
    sources, without a prompt); checked against the recorded public key."""
    path = Path(path)
    doc = _load(path)
    if doc.encrypted_seed is None:
        assert doc.seed is not None  # the schema holds exactly one of the two
        seed = doc.seed
    else:
        source = passphrase if passphrase is not None else Passphrase()
        seed = _decrypt(doc.encrypted_seed, source.get(path), path)
    if public_key_of(seed) != doc.public_key:
        raise KeyFileError(f"key file {path}: the seed does not match the recorded public key")
    return seed


def _box(passphrase: bytes, salt: bytes, limits: KdfLimits) -> nacl.secret.SecretBox:
    key = _argon2id.kdf(
        nacl.secret.SecretBox.KEY_SIZE, passphrase, salt, limits.opslimit, limits.memlimit
    )
    return nacl.secret.SecretBox(key)


def _decrypt(enc: EncryptedSeed, passphrase: bytes, path: Path) -> bytes:
    box = _box(passphrase, enc.salt, KdfLimits(enc.opslimit, enc.memlimit))
    try:
        return bytes(box.decrypt(enc.ciphertext, enc.nonce))
    except nacl.exceptions.CryptoError:
        raise KeyFileError(
            f"wrong passphrase for {path} (the key could not be decrypted)"
        ) from None


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def encrypt_seed(
    seed: bytes, passphrase: bytes, limits: KdfLimits = DEFAULT_LIMITS
) -> EncryptedSeed:
    salt = secrets.token_bytes(_argon2id.SALTBYTES)
    nonce = secrets.token_bytes(nacl.secret.SecretBox.NONCE_SIZE)
    ciphertext = _box(passphrase, salt, limits).encrypt(seed, nonce).ciphertext
    return EncryptedSeed(
        opslimit=limits.opslimit,
        memlimit=limits.memlimit,
        salt=salt,
        nonce=nonce,
        ciphertext=ciphertext,
    )


def write_seed(
    path: Path,
    seed: bytes,
    *,
    overwrite: bool = False,
    passphrase: bytes | None = None,
    limits: KdfLimits = DEFAULT_LIMITS,
) -> None:
    """Write ``seed`` as a version-1 key file with mode 0600 (see the module's rules);
    encrypted under ``passphrase`` if one is given."""
    path = Path(path)
    enc = None
    if passphrase is not None:
        enc = encrypt_seed(seed, _nonempty(passphrase, "the passphrase"), limits)
    doc = KeyFileV1(public_key=public_key_of(seed), seed=None if enc else seed, encrypted_seed=enc)
    data = (doc.model_dump_json(indent=2, exclude_none=True) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    target = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp") if overwrite else path
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(target, path)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
