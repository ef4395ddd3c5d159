"""How ``dvp`` fails: one line on stderr and an exit status that means something.

Owns ``Parser`` (argparse with a one-line usage error), ``run_command`` (runs a parsed
subcommand, turning every failure into one line), ``EXIT_STATUSES`` (the table shown
in ``dvp --help``) and the argument types that refuse nonsense numbers (``number``).

Rules:
- A traceback shown to a user is a bug. Failures the commands expect raise
  ``CliError``; a file the user named that cannot be read or written (``OSError``),
  or whose name the OS cannot take (``UnicodeEncodeError``), is a usage error;
  anything else is reported as an internal error (exit 70, the BSD ``EX_SOFTWARE``)
  in one line, with the traceback only when ``DVP_TRACEBACK=1``.
- Every printed message goes through ``one_line``: values users give may hold
  newlines or undecodable bytes.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

from cli.common import EXIT_FAIL, EXIT_USAGE, CliError
from ledger.errors import ProtocolVersionError
from node.oneline import one_line

EXIT_INTERNAL = 70
ENV_TRACEBACK = "DVP_TRACEBACK"

EXIT_STATUSES = """exit status:
  0   success
  1   a failure the command reports (a verification not VALID, a transaction refused)
  2   bad usage or configuration (an argument, a file, a config key)
  3   a node or network that could not be reached, or that did not answer JSON-RPC
  4-8 dvp verify's verdicts: INVALID, REVOKED, EXPIRED, NOT_FOUND, UNVERIFIABLE
  70  an internal error: a bug in dvp (please report it; DVP_TRACEBACK=1 shows where)"""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that points at ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def number(
    low: float, high: float, *, integer: bool = False, unit: str = ""
) -> Callable[[str], float]:
    """An argparse ``type`` accepting a finite number in [low, high] (an integer if
    ``integer``); refuses NaN, the infinities, 1e300 and the like with one line."""
    kind = "an integer" if integer else "a number"
    span = f"{low:g}..{high:g}{unit}"

    def parse(text: str) -> float:
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind} in {span}, got {text!r}") from None
        # An int is compared as is: math.isfinite would overflow on 400 digits.
        if not ((integer or math.isfinite(value)) and low <= value <= high):
            raise argparse.ArgumentTypeError(f"expected {kind} in {span}, got {text!r}")
        return value

    parse.__name__ = "integer" if integer else "number"  # argparse names the type in errors
    return parse


def run_command(command: str, fn: Callable[[], int]) -> int:
    """Run a parsed subcommand; every way it can fail ends in one line on stderr."""
    # A file name from argv may hold undecodable bytes (surrogates, PEP 383): printing
    # it must not fail after the command did its work.
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")
    try:
        return int(fn())
    except CliError as exc:
        return _fail(command, str(exc), exc.code)
    except ProtocolVersionError as exc:  # the chain runs a version this build lacks
        return _fail(command, str(exc), EXIT_FAIL)
    except KeyboardInterrupt:
        return 130
    except UnicodeEncodeError as exc:  # a name (argv) the OS cannot take: a lone surrogate
        return _fail(command, f"a name cannot be encoded for the system: {exc.reason}", EXIT_USAGE)
    except OSError as exc:  # a path the user gave: missing, a directory, no permission
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(command, f"{where}{exc.strerror or exc}", EXIT_USAGE)
    except Exception as exc:
        if os.environ.get(ENV_TRACEBACK):
            traceback.print_exc()
        msg = f"internal error (a bug; {ENV_TRACEBACK}=1 shows the traceback): "
        return _fail(command, f"{msg}{type(exc).__name__}: {exc}", EXIT_INTERNAL)


def _fail(command: str, message: str, code: int) -> int:
    print(f"dvp {command}: {one_line(message)}", file=sys.stderr)
    return code
