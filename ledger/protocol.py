"""Protocol versions: which block protocol this build speaks, and the one stop when it cannot.

A block's header carries the protocol ``version`` in force at its height
(``ChainRecord.version_at``); governance moves the consortium to a higher version with
``ACTIVATE_VERSION`` at an activation height, so every node switches at the same block.
A build implements the versions in ``PROTOCOL_VERSIONS``; a node whose build does not
implement the version active at the next height stops (``ProtocolVersionError``) rather
than fork or guess. The p2p hello carries ``supported_versions()`` so peers that cannot
speak the active version are refused (``node.versioning``).

Rehearsal knob: ``DVP_PROTOCOL_MAX=<n>`` makes this build *claim* versions up to ``n``.
Versions above ``max(PROTOCOL_VERSIONS)`` have exactly the semantics of the highest real
version; only the number in headers and the hello differs. It exists so a rolling
upgrade can be rehearsed with one codebase (scripts/drills.py rolling_upgrade); it is
not a way to run a real protocol change.
"""

from __future__ import annotations

import os

from ledger.errors import ProtocolVersionError

PROTOCOL_VERSIONS: tuple[int, ...] = (1,)
GENESIS_VERSION = 1  # every chain starts at version 1
MAX_VERSION = 0xFFFF  # what a header or a hello may carry at all
REHEARSAL_ENV = "DVP_PROTOCOL_MAX"


def supported_versions() -> tuple[int, int]:
    """(lowest, highest) protocol version this build (or its rehearsal override) speaks."""
    low, high = min(PROTOCOL_VERSIONS), max(PROTOCOL_VERSIONS)
    claimed = os.environ.get(REHEARSAL_ENV, "").strip()
    if claimed:
        try:
            value = int(claimed)
        except ValueError:
            raise ProtocolVersionError(
                f"${REHEARSAL_ENV}={claimed!r}: give a whole number (a rehearsal's maximum "
                "protocol version)"
            ) from None
        if not high <= value <= MAX_VERSION:
            raise ProtocolVersionError(
                f"${REHEARSAL_ENV}={value}: must be between {high} and {MAX_VERSION}"
            )
        high = value
    return low, high


def check_supported(version: int, height: int) -> None:
    """``ProtocolVersionError`` unless this build speaks ``version``, active at ``height``."""
    low, high = supported_versions()
    if not low <= version <= high:
        raise ProtocolVersionError(
            f"the consortium runs protocol version {version} from height {height}, but this "
            f"build supports versions {low}-{high}: upgrade this node to a build that "
            "supports it (docs/OPERATIONS.md, rolling upgrade)"
        )


def peer_refusal(low: int, high: int, active: int) -> str | None:
    """Why a peer speaking versions ``low``-``high`` is refused while ``active`` is in
    force (None: it can speak it). What the p2p hello is checked with."""
    if low <= active <= high:
        return None
    return (
        f"it speaks protocol versions {low}-{high}, but the consortium runs version "
        f"{active}: that node must be upgraded (or this one is behind)"
    )
