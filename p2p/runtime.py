"""Small facts about where p2p code runs, shared by the transport and the node.

This module owns ``in_trio``: one definition of "are we inside a trio run?", for code
that can be called both from trio tasks and from plain (test, CLI) code, such as a
clock read that must not fail outside a run.
"""

from __future__ import annotations

import trio


def in_trio() -> bool:
    """True when called from a trio task (so trio's clock and scheduler can be used)."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
