"""``dvp verify``: the verdict on a file and its code, and the exit status that says it.

The file is hashed here, the node serves a proof bundle, and ``ledger.verify`` checks it
against the genesis as of this computer's clock (``cli.documents.verify_file``). The
exit status is the verdict, so a script can branch on it without parsing output
(``VERIFY_EXIT_CODES``, shown in ``dvp verify --help`` and the README):

| code | meaning |
| --- | --- |
| 0 | VALID |
| 1 | the node refused the request (an unknown API key), or consent required (``--key``) |
| 2 | usage error (bad argument, unreadable file, genesis or receipt, malformed code) |
| 3 | node unreachable |
| 4 | INVALID: the node's proof (or a receipt's bundle) does not verify to its verdict |
| 5 | REVOKED |
| 6 | EXPIRED (by this computer's clock) |
| 7 | NOT_FOUND: nothing attested for this file and code (a changed copy, a wrong code) |
| 8 | UNVERIFIABLE: state too old (newest certified block older than ``--max-age``) |

``--receipt FILE`` saves what was checked (``ledger.receipt``); ``--offline --receipt
FILE`` re-verifies such a receipt with no node, as of the time it was made.

``--max-age`` is validated here (a positive, finite number of seconds, at most a day):
anything else is one error line and exit 2, never a verdict.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from cli.common import (
    EXIT_FAIL,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    add_rpc_options,
    client,
    emit,
    hex32,
    rpc_errors,
)
from ledger.verify import DEFAULT_MAX_AGE_MS

__all__ = ["VERIFY_EXIT_CODES", "add_verify_command", "cmd_verify", "parse_max_age"]

EXIT_INVALID, EXIT_REVOKED, EXIT_EXPIRED, EXIT_NOT_FOUND, EXIT_UNVERIFIABLE = 4, 5, 6, 7, 8

#: The status each verdict exits with; the others are the CLI's common ones.
VERIFY_EXIT_CODES: Final[dict[str, int]] = {
    "VALID": EXIT_OK,
    "INVALID": EXIT_INVALID,
    "REVOKED": EXIT_REVOKED,
    "EXPIRED": EXIT_EXPIRED,
    "NOT_FOUND": EXIT_NOT_FOUND,
    "UNVERIFIABLE": EXIT_UNVERIFIABLE,
}

_DEFAULT_MAX_AGE: Final = f"{DEFAULT_MAX_AGE_MS / 1000:g}"

#: A freshness limit above this is no limit at all: refused as a likely mistake.
MAX_AGE_LIMIT_S: Final = 86_400.0

EXIT_HELP: Final = f"""exit status:
  {EXIT_OK}  VALID
  {EXIT_FAIL}  the node refused the request (e.g. an unknown API key), or consent required:
     the document is bound to its data subject and you hold no live grant (or gave no --key)
  {EXIT_USAGE}  usage error (bad argument, unreadable file or genesis, malformed code;
     a receipt that does not decode or is for another genesis or document)
  {EXIT_UNREACHABLE}  node unreachable
  {EXIT_INVALID}  INVALID: the node's proof does not verify (forged, corrupted, wrong chain),
     or a receipt's recorded verdict does not hold (it was altered)
  {EXIT_REVOKED}  REVOKED
  {EXIT_EXPIRED}  EXPIRED (by this computer's clock)
  {EXIT_NOT_FOUND}  NOT_FOUND: nothing attested for this file and code
  {EXIT_UNVERIFIABLE}  UNVERIFIABLE: state too old (the node's newest certified block is
     older than --max-age): ask again, or ask another node"""


def parse_max_age(text: str) -> int:
    """``--max-age`` seconds as milliseconds; ``CliError`` (exit 2) unless it is a
    positive, finite number of seconds of at most a day."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_AGE_LIMIT_S):
        raise CliError(
            f"--max-age {text!r}: expected seconds, a number above 0 and at most "
            f"{MAX_AGE_LIMIT_S:g} (default {DEFAULT_MAX_AGE_MS / 1000:g})"
        )
    return max(1, round(seconds * 1000))


def _show(args: argparse.Namespace, result: Any, prefix: str, extra: dict[str, Any]) -> int:
    """Print one answer (a Verdict or a VerificationError) and return its exit status."""
    from cli.documents import describe, describe_failure
    from ledger.verify import VerificationError

    if isinstance(result, VerificationError):
        text, status = describe_failure(result), result.status
    else:
        text, status = describe(result), str(result.status)
    emit(args, {**result.to_json(), **extra}, lambda: print(prefix + text))
    return VERIFY_EXIT_CODES[status]


def _offline(args: argparse.Namespace, max_age_given: bool) -> int:
    """``--offline --receipt R``: re-verify the receipt R with no node (ledger.receipt)."""
    from cli.documents import commitment_of
    from ledger.genesis import read_genesis
    from ledger.receipt import ReceiptError, ReceiptMismatch, decode, reverify

    if max_age_given:
        raise CliError("--max-age: an offline check uses the receipt's own max age")
    where = f"receipt {args.receipt}"
    try:
        receipt = decode(Path(args.receipt).read_bytes())
    except OSError as exc:
        raise CliError(f"{where}: {exc.strerror or exc}") from None
    except ReceiptError as exc:
        raise CliError(f"{where}: {exc}") from None
    commitment = commitment_of(Path(args.file), args.code)
    try:
        result = reverify(receipt, read_genesis(Path(args.genesis)), commitment)
    except ReceiptMismatch as exc:
        raise CliError(f"INVALID {where}: {exc}", EXIT_INVALID) from None
    except ReceiptError as exc:
        raise CliError(f"{where}: {exc}") from None
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(receipt.checked_at_ms / 1000))
    prefix = (
        f"Receipt re-verified offline: the verdict as of {when} (the receipt's "
        "checked_at_ms), not as of now.\n"
    )
    return _show(args, result, prefix, {"offline": True, "as_of_ms": receipt.checked_at_ms})


def cmd_verify(args: argparse.Namespace) -> int:
    from cli.common import read_key
    from cli.documents import ConsentNeeded, check_file
    from ledger.commitment import CodeError
    from ledger.genesis import GenesisError
    from ledger.receipt import ReceiptError, encode

    max_age_given = args.max_age is not None
    max_age_ms = parse_max_age(args.max_age if max_age_given else _DEFAULT_MAX_AGE)
    if not Path(args.file).is_file():
        raise CliError(f"{args.file} is not a file")
    if args.offline and not args.receipt:
        raise CliError("--offline re-verifies a saved receipt: give --receipt FILE")
    if not args.offline and not args.rpc:
        raise CliError("--rpc URL is required (or --offline --receipt FILE: no node)")
    grant_id = None if args.grant is None else hex32(args.grant, "--grant")

    def run() -> int:
        try:
            if args.offline:
                return _offline(args, max_age_given)
            member_key = read_key(args.key, args.passphrase_file) if args.key else None
            with client(args) as c:
                checked = check_file(
                    c,
                    Path(args.genesis),
                    Path(args.file),
                    args.code,
                    max_age_ms=max_age_ms,
                    member_key=member_key,
                    grant_id=grant_id,
                )
        except ConsentNeeded as exc:
            if not args.key:
                raise CliError(
                    f"consent required ({exc.reason}): this document is bound to its data "
                    "subject; pass --key MEMBER.json (your organisation's member key) to "
                    "record an access under the subject's grant to you",
                    EXIT_FAIL,
                ) from None
            raise CliError(f"consent required ({exc.reason}): {exc}", EXIT_FAIL) from None
        except CodeError as exc:
            raise CliError(f"verification code: {exc}") from None
        except GenesisError as exc:
            raise CliError(str(exc)) from None
        extra: dict[str, Any] = {}
        if checked.access is not None:
            extra["access"] = checked.access
        if args.receipt:
            try:
                Path(args.receipt).write_bytes(encode(checked.receipt()))
            except OSError as exc:
                raise CliError(f"receipt {args.receipt}: {exc.strerror or exc}") from None
            except ReceiptError as exc:
                raise CliError(f"receipt {args.receipt} not saved: {exc}") from None
            extra["receipt"] = args.receipt
        prefix = (
            f"Access {checked.access[:16]}... recorded on chain under the subject's grant.\n"
            if checked.access
            else ""
        )
        code = _show(args, checked.result, prefix, extra)
        if args.receipt and not getattr(args, "json", False):
            print(f"receipt saved to {args.receipt}")
        return code

    return rpc_errors(run)


def add_verify_command(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Register ``dvp verify`` with ``cli.main``'s ``add`` helper."""
    p = add(
        sub,
        "verify",
        "verify a document and its code against the consortium's genesis; the exit "
        "status is the verdict (0 only for VALID; the table below)",
        "dvp verify report.pdf --code 7K3M-... --genesis devnet/genesis.json "
        "--rpc http://127.0.0.1:26704/",
        cmd_verify,
    )
    p.epilog = EXIT_HELP
    p.add_argument("file")
    p.add_argument("--code", required=True, help="the verification code printed on it")
    p.add_argument(
        "--genesis",
        default="devnet/genesis.json",
        help="the consortium's genesis file: the only thing trusted",
    )
    add_rpc_options(p, "the node's RPC URL (not with --offline)", required=False)
    p.add_argument(
        "--receipt",
        metavar="FILE",
        help="save what was checked (the bundle, the verdict, this computer's time, the "
        "genesis hash) to FILE; with --offline, re-verify FILE instead (docs/PROOFS.md §12)",
    )
    p.add_argument(
        "--key",
        metavar="MEMBER.json",
        help="your organisation's member key: for a document bound to its data subject, "
        "sign and record the access under the subject's grant to you (docs/CONSENT.md)",
    )
    p.add_argument("--passphrase-file", help="for a protected --key file")
    p.add_argument(
        "--grant",
        metavar="ID",
        help="with --key: the grant to record the access under (default: your first live one)",
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="no node: re-verify the --receipt FILE for this file and code against the "
        "genesis, as of the time it was made",
    )
    p.add_argument(
        "--max-age",
        default=None,
        metavar="SECONDS",
        help="answer UNVERIFIABLE (state too old) when the node's newest certified "
        "block is older than this by this computer's clock "
        f"(default {DEFAULT_MAX_AGE_MS / 1000:g})",
    )
