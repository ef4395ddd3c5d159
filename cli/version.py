"""``dvp --version``: the package version, the protocol versions and whether the state
tree's C fast path (``ledger/_smt_fast``) is in use.

The protocol version is what two nodes must share to talk: the version of the p2p
protocols (``/dvp/consensus/1`` ...); the proof bundle's format version is what a
verifier must understand. Both are read from the code that speaks them, never
restated here.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import metadata
from typing import Any


def version_info() -> dict[str, Any]:
    from ledger.bundle import BUNDLE_VERSION
    from ledger.smt_update_one import fast_path_in_use
    from p2p.config import PROTOCOLS

    try:
        version = metadata.version("dvp")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        version = "unknown (not installed)"
    p2p_versions = sorted({pid.rsplit("/", 1)[1] for pid in PROTOCOLS.values()})
    if fast_path_in_use():
        fast = "in use"
    elif os.environ.get("DVP_PURE_PYTHON"):
        fast = "off (DVP_PURE_PYTHON is set)"
    else:
        fast = "not built (pure Python; see README: needs gcc and libssl-dev)"
    return {
        "version": version,
        "protocol": ",".join(p2p_versions),
        "p2p_protocols": sorted(PROTOCOLS.values()),
        "proof_bundle_version": BUNDLE_VERSION,
        "c_fast_path": fast,
    }


def version_text() -> str:
    v = version_info()
    return (
        f"dvp {v['version']}\n"
        f"protocol {v['protocol']} ({', '.join(v['p2p_protocols'])}); "
        f"proof bundle version {v['proof_bundle_version']}\n"
        f"C fast path (ledger/_smt_fast): {v['c_fast_path']}"
    )


class VersionAction(argparse.Action):
    """``--version``: print ``version_text()`` and exit 0."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help=kwargs.get("help"))

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(version_text(), file=sys.stdout)
        parser.exit(0)
