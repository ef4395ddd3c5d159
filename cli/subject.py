"""``dvp subject``: what the data subject (the applicant) runs on its own computer
(docs/CONSENT.md §1, §6).

- ``new --out FILE``: a subject key file: one random 32-byte seed (mode 0600; never
  overwritten). The seed never leaves the file.
- ``key --key FILE --label L``: the key for one document, derived from the seed and a
  counter (``derive_key``), recorded under the label; prints the public key to hand to
  the issuer (``dvp attest --subject``). A fresh key per document: two documents of one
  subject cannot be linked on chain.
- ``grant``, ``revoke``: sign and submit the subject's ``CONSENT_GRANT`` /
  ``CONSENT_REVOKE`` (``submitConsent``: no API key).
- ``grants``, ``log``: the subject's grants and every access, from ``getSubjectLog`` (a
  request signed by each key), each proven against the genesis
  (``ledger.subject_log.verify_subject_log``) before anything is printed.

The functions (``derive_key``, ``SubjectFile``, ``grant``, ``revoke``, ``subject_log``)
return data; the demo and the tests call them. ``add_subject_commands`` wires them into
``cli.main``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nacl.encoding
import nacl.hash

from cli.common import (
    EXIT_OK,
    CliError,
    add_rpc_options,
    client,
    command_group,
    emit,
    hex32,
    rpc_errors,
)
from cli.documents import sign_and_submit
from cli.errors import number
from cli.rpc_client import RpcClient
from ledger.crypto import KeyPair
from ledger.genesis import GenesisError, read_genesis
from ledger.subject_log import LogEntry, SubjectLog, sign_query, verify_subject_log
from ledger.transaction import MAX_GRANT_USES, ConsentGrant, ConsentRevoke
from ledger.verify import TrustAnchor, VerificationError

__all__ = [
    "SubjectFile",
    "add_subject_commands",
    "derive_key",
    "grant",
    "revoke",
    "subject_log",
]

FILE_KIND = "dvp-subject-key"
FILE_VERSION = 1
_PERSON = b"dvp-subject-v1\0\0"  # BLAKE2b personalisation: 16 bytes
DAY_MS = 86_400_000


def derive_key(seed: bytes, index: int) -> KeyPair:
    """The subject key number ``index`` of ``seed``: its Ed25519 seed is libsodium's
    keyed BLAKE2b of nothing, keyed by the seed, salted with the index (16 bytes, big
    endian) and personalised "dvp-subject-v1" (docs/CONSENT.md §1)."""
    if len(seed) != 32 or not 0 <= index < 2**64:
        raise ValueError("a 32-byte seed and an index in 0..2**64-1")
    derived = nacl.hash.blake2b(
        b"",
        digest_size=32,
        key=seed,
        salt=index.to_bytes(16, "big"),
        person=_PERSON,
        encoder=nacl.encoding.RawEncoder,
    )
    return KeyPair.from_seed(derived)


@dataclass
class SubjectFile:
    """A subject key file: the seed and the labelled keys derived from it so far."""

    path: Path
    seed: bytes
    labels: dict[str, int] = field(default_factory=dict)  # label -> index

    @classmethod
    def create(cls, path: Path) -> SubjectFile:
        """A new file with a random seed, readable by its owner only; refuses to
        overwrite (a lost seed is every document's consent lost)."""
        f = cls(path, secrets.token_bytes(32))
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(f._text())
        return f

    @classmethod
    def read(cls, path: Path) -> SubjectFile:
        try:
            doc = json.loads(path.read_text())
            if doc.get("kind") != FILE_KIND or doc.get("version") != FILE_VERSION:
                raise ValueError("not a dvp subject key file")
            seed = bytes.fromhex(doc["seed"])
            labels = {str(k["label"]): int(k["index"]) for k in doc["keys"]}
            if len(seed) != 32:
                raise ValueError("its seed is not 32 bytes")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CliError(f"{path}: not a subject key file ({exc})") from None
        if os.name == "posix" and path.stat().st_mode & 0o077:
            raise CliError(f"{path}: others may read this subject key file; chmod 600 it")
        return cls(path, seed, labels)

    def _text(self) -> str:
        keys = [
            {"label": label, "index": i, "public_key": self.key(i).public_key.hex()}
            for label, i in sorted(self.labels.items(), key=lambda x: x[1])
        ]
        doc = {"kind": FILE_KIND, "version": FILE_VERSION, "seed": self.seed.hex(), "keys": keys}
        return json.dumps(doc, indent=2) + "\n"

    def save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self._text())
        os.replace(tmp, self.path)

    def key(self, index: int) -> KeyPair:
        return derive_key(self.seed, index)

    def new_key(self, label: str) -> KeyPair:
        """The key for ``label``: the one already recorded, else the next index's."""
        if label not in self.labels:
            self.labels[label] = max(self.labels.values(), default=-1) + 1
            self.save()
        return self.key(self.labels[label])

    def by_label(self, label: str) -> KeyPair:
        if label not in self.labels:
            known = ", ".join(sorted(self.labels)) or "none yet"
            raise CliError(f"no key labelled {label!r} in {self.path} (labels: {known})")
        return self.key(self.labels[label])

    def keys(self) -> list[tuple[str, KeyPair]]:
        return [
            (label, self.key(i)) for label, i in sorted(self.labels.items(), key=lambda x: x[1])
        ]


# -- talking to a node -----------------------------------------------------------
def subject_log(c: RpcClient, genesis_path: Path, keys: list[KeyPair]) -> SubjectLog:
    """Ask for the log of ``keys`` (a request signed by each) and verify it against the
    genesis; ``VerificationError`` if the node's answer does not prove out."""
    genesis = read_genesis(genesis_path)
    now = int(time.time() * 1000)
    doc = c.call(
        "getSubjectLog",
        keys=[
            {"key": k.public_key.hex(), "signature": sign_query(k, genesis.chain_id, now).hex()}
            for k in keys
        ],
        issued_at_ms=now,
    )
    return verify_subject_log(
        doc,
        TrustAnchor.from_genesis(genesis),
        now_ms=now,
        keys=[k.public_key for k in keys],
    )


def _bound(c: RpcClient, genesis_path: Path, key: KeyPair) -> list[bytes]:
    """The commitments bound to ``key``, proven (its subject record, via the log)."""
    return list(subject_log(c, genesis_path, [key]).documents[key.public_key])


def _submit(c: RpcClient, key: KeyPair, payload: ConsentGrant | ConsentRevoke) -> dict[str, Any]:
    return sign_and_submit(c, key, payload, method="submitConsent")


def grant(
    c: RpcClient,
    key: KeyPair,
    grantee: str,
    purpose: str,
    commitments: list[bytes],
    *,
    not_after_ms: int,
    max_uses: int = 1,
    not_before_ms: int | None = None,
) -> dict[str, Any]:
    """Grant ``grantee`` consent to verify ``commitments`` (bound to ``key``) for
    ``purpose``; from the chain's current time (its head's) unless ``not_before_ms``."""
    if not_before_ms is None:
        not_before_ms = int(c.call("status")["block_time_ms"])
    payload = ConsentGrant(
        grantee, tuple(sorted(set(commitments))), purpose, not_before_ms, not_after_ms, max_uses
    )
    out = _submit(c, key, payload)
    return {"grant_id": out["tx_id"], **out}


def revoke(c: RpcClient, key: KeyPair, grant_id: bytes) -> dict[str, Any]:
    return _submit(c, key, ConsentRevoke(grant_id))


# -- the commands ------------------------------------------------------------------
def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _until_ms(args: argparse.Namespace) -> int:
    if args.until is not None:
        try:
            d = datetime.fromisoformat(args.until)
        except ValueError:
            raise CliError(
                f"--until {args.until!r}: expected a date, e.g. 2027-01-31 or 2027-01-31T18:00"
            ) from None
        if d.tzinfo is None:
            d = d.replace(tzinfo=UTC)
        return int(d.timestamp() * 1000)
    return int(time.time() * 1000) + int(args.days * DAY_MS)


def _checked(fn: Callable[[], int]) -> int:
    """``rpc_errors``, plus a log that does not verify or an unreadable genesis."""

    def run() -> int:
        try:
            return fn()
        except VerificationError as exc:
            raise CliError(
                f"the node's answer does not verify against the genesis ({exc}); do not "
                "rely on this node: ask another",
                1,
            ) from None
        except GenesisError as exc:
            raise CliError(str(exc)) from None

    return rpc_errors(run)


def cmd_new(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists():
        raise CliError(
            f"{out} exists: a subject key file is never overwritten (its seed signs the "
            "consent to every document bound to it)"
        )
    SubjectFile.create(out)
    emit(
        args,
        {"file": str(out)},
        lambda: print(
            f"wrote {out} (readable by you only; keep a copy safe). Next, one key per "
            f"document: dvp subject key --key {out} --label credit-report"
        ),
    )
    return EXIT_OK


def cmd_key(args: argparse.Namespace) -> int:
    f = SubjectFile.read(Path(args.key))
    k = f.new_key(args.label)
    data = {"label": args.label, "index": f.labels[args.label], "public_key": k.public_key.hex()}
    emit(
        args,
        data,
        lambda: print(
            f"{k.public_key.hex()}\nhand this key to the issuer with your request for the "
            f"'{args.label}' document (dvp attest ... --subject {k.public_key.hex()[:16]}...)"
        ),
    )
    return EXIT_OK


def cmd_grant(args: argparse.Namespace) -> int:
    f = SubjectFile.read(Path(args.key))
    key = f.by_label(args.label)
    not_after = _until_ms(args)
    if not_after <= int(time.time() * 1000):
        raise CliError("the grant would end in the past: give --days N or a later --until")

    def run() -> int:
        with client(args) as c:
            if args.commitment:
                commitments = [hex32(x, "--commitment") for x in args.commitment]
            else:
                commitments = _bound(c, Path(args.genesis), key)
                if not commitments:
                    raise CliError(
                        f"no document is bound to the key labelled {args.label!r} yet: the "
                        "issuer attests it with --subject first"
                    )
            r = grant(
                c, key, args.to, args.purpose, commitments,
                not_after_ms=not_after, max_uses=args.uses,
            )  # fmt: skip
        r.update(to=args.to, purpose=args.purpose, not_after_ms=not_after, uses=args.uses)
        emit(
            args,
            r,
            lambda: print(
                f"grant {r['grant_id']}: {args.to} may verify {len(commitments)} document(s) "
                f"for {args.purpose}, {args.uses} time(s), until {_utc(not_after)} "
                f"({r['status']} at block {r.get('height')}); withdraw it with: dvp subject "
                f"revoke --key {args.key} {r['grant_id']}"
            ),
        )
        return EXIT_OK

    return _checked(run)


def cmd_revoke(args: argparse.Namespace) -> int:
    f = SubjectFile.read(Path(args.key))
    gid = hex32(args.grant_id, "GRANT_ID")

    def run() -> int:
        with client(args) as c:
            keys = [k for _, k in f.keys()]
            if not keys:
                raise CliError(f"{args.key} has no keys yet, so no grants")
            log = subject_log(c, Path(args.genesis), keys)
            mine = [e for e in log.entries if e.event == "grant" and e.grant_id == gid]
            if not mine:
                raise CliError(
                    f"no grant {args.grant_id[:16]}... was signed by a key of {args.key}"
                )
            signer = next(k for k in keys if k.public_key == mine[0].subject)
            r = revoke(c, signer, gid)
        emit(
            args,
            r,
            lambda: print(
                f"grant {args.grant_id[:16]}... revoked at block {r.get('height')}: no access "
                "under it from now on"
            ),
        )
        return EXIT_OK

    return _checked(run)


def _grant_state(e: LogEntry, head_time_ms: int) -> str:
    g = e.grant
    if g.revoked_height:
        return f"revoked (block {g.revoked_height})"
    if head_time_ms > g.not_after_ms:
        return "expired"
    if g.uses_left <= 0:
        return "used up"
    return "live"


def _log_for(args: argparse.Namespace, f: SubjectFile) -> tuple[SubjectLog, dict[bytes, str]]:
    keys = f.keys()
    if not keys:
        raise CliError(f"{args.key} has no keys yet: dvp subject key --key {args.key} --label L")
    with client(args) as c:
        log = subject_log(c, Path(args.genesis), [k for _, k in keys])
    return log, {k.public_key: label for label, k in keys}


def cmd_grants(args: argparse.Namespace) -> int:
    f = SubjectFile.read(Path(args.key))

    def run() -> int:
        log, labels = _log_for(args, f)
        rows: list[dict[str, Any]] = [
            {
                "grant_id": e.grant_id.hex(),
                "label": labels[e.subject],
                "to": e.member,
                "purpose": e.purpose,
                "granted_height": e.height,
                "granted_at": _utc(e.time_ms),
                "until": _utc(e.grant.not_after_ms),
                "uses_left": e.grant.uses_left,
                "max_uses": e.grant.max_uses,
                "state": _grant_state(e, log.head.block_time_ms),
            }
            for e in log.entries
            if e.event == "grant"
        ]

        def human() -> None:
            from rich.console import Console
            from rich.table import Table

            t = Table(
                "grant", "document", "to", "purpose", "until", "uses left", "state",
                title=f"your grants, proven at block {log.head.height}",
            )  # fmt: skip
            for r in rows:
                t.add_row(
                    r["grant_id"][:16], r["label"], r["to"], r["purpose"], r["until"],
                    f"{r['uses_left']} of {r['max_uses']}", r["state"],
                )  # fmt: skip
            Console().print(t if rows else "no grants yet")

        emit(args, {"height": log.head.height, "grants": rows}, human)
        return EXIT_OK

    return _checked(run)


def cmd_log(args: argparse.Namespace) -> int:
    f = SubjectFile.read(Path(args.key))

    def run() -> int:
        log, labels = _log_for(args, f)
        rows = [
            {**e.to_json(), "label": labels[e.subject], "when": _utc(e.time_ms)}
            for e in log.entries
        ]

        def human() -> None:
            from rich.console import Console
            from rich.table import Table

            t = Table(
                "when (UTC)", "who", "what", "document", "purpose", "grant", "block",
                title=f"who used your documents, proven at block {log.head.height} "
                "against the genesis",
            )  # fmt: skip
            what = {"grant": "you granted", "revoke": "you revoked", "access": "verified"}
            for r in rows:
                t.add_row(
                    r["when"][:-4], r["member"], what[r["event"]], r["label"], r["purpose"],
                    r["grant_id"][:16], str(r["height"]),
                )  # fmt: skip
            Console().print(t if rows else "nothing recorded yet")

        emit(args, {"height": log.head.height, "entries": rows}, human)
        return EXIT_OK

    return _checked(run)


def add_subject_commands(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``dvp subject new|key|grant|revoke|grants|log`` (``cli.main``)."""
    group = command_group(
        sub, "subject", "the data subject's keys, consents and access log (docs/CONSENT.md)"
    )

    def node_options(p: argparse.ArgumentParser) -> None:
        add_rpc_options(p, "any node's RPC URL (no API key needed)")
        p.add_argument(
            "--genesis",
            default="devnet/genesis.json",
            help="the consortium's genesis file: every answer is checked against it",
        )

    p = add(
        group,
        "new",
        "create your subject key file: one random seed, readable by you only, never "
        "overwritten; every per-document key is derived from it",
        "dvp subject new --out applicant.json",
        cmd_new,
    )
    p.add_argument("--out", required=True, help="the file to create")
    p = add(
        group,
        "key",
        "the key for one document: prints the public key to give the issuer, who binds "
        "the document to it (dvp attest --subject). Same label, same key",
        "dvp subject key --key applicant.json --label credit-report",
        cmd_key,
    )
    p.add_argument("--key", required=True, help="your subject key file")
    p.add_argument("--label", required=True, help="your name for the document")
    p = add(
        group,
        "grant",
        "allow one member to verify your document(s) for one purpose, a number of times, "
        "until a date; recorded on chain, signed by your key",
        "dvp subject grant --key applicant.json --label credit-report --to hkbank "
        "--purpose loan-application --days 30 --uses 2 --rpc http://127.0.0.1:26704/",
        cmd_grant,
    )
    p.add_argument("--key", required=True, help="your subject key file")
    p.add_argument("--label", required=True, help="which document key signs")
    p.add_argument("--to", required=True, metavar="MEMBER", help="the member id, e.g. hkbank")
    p.add_argument("--purpose", required=True, help="e.g. loan-application")
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--days", type=number(0.001, 366), default=30.0, help="valid for N days (default 30)"
    )
    when.add_argument("--until", metavar="DATE", help="valid until DATE (UTC unless given)")
    p.add_argument(
        "--uses",
        type=number(1, MAX_GRANT_USES, integer=True),
        default=1,
        metavar="N",
        help=f"at most N verifications (1-{MAX_GRANT_USES}, default 1)",
    )
    p.add_argument(
        "--commitment",
        action="append",
        metavar="HEX",
        help="only this document (repeatable); default: every document bound to the key",
    )
    node_options(p)
    p = add(
        group,
        "revoke",
        "withdraw a grant: no access under it from the next transaction on",
        "dvp subject revoke --key applicant.json 9c1e... --rpc http://127.0.0.1:26704/",
        cmd_revoke,
    )
    p.add_argument("grant_id", metavar="GRANT_ID", help="as dvp subject grants shows it")
    p.add_argument("--key", required=True, help="your subject key file")
    node_options(p)
    p = add(
        group,
        "grants",
        "your grants and where each stands (live, used up, expired, revoked), proven",
        "dvp subject grants --key applicant.json --rpc http://127.0.0.1:26704/",
        cmd_grants,
    )
    p.add_argument("--key", required=True, help="your subject key file")
    node_options(p)
    p = add(
        group,
        "log",
        "who verified your documents, when and for what, under which grant: each line "
        "proven against the genesis before it is shown",
        "dvp subject log --key applicant.json --rpc http://127.0.0.1:26704/",
        cmd_log,
    )
    p.add_argument("--key", required=True, help="your subject key file")
    node_options(p)
