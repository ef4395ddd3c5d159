"""The ``dvp`` command: parse arguments, load config, run (thin, like uvicorn's main)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvp",
        description="dvp: a consortium ledger for cross-border document verification.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("demo", help="run the loan-verification demo on a local 4-node consortium")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        print("dvp demo: not yet — the node processes (issue #4) and the proof RPC (issue #5) "
              "have not landed. The ledger and consensus cores are tested by "
              "`python -m pytest`.", file=sys.stderr)
        return 2
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
