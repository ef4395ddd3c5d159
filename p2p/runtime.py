"""Small facts about where p2p code runs, shared by the transport and the node.

This module owns ``in_trio``: one definition of "are we inside a trio run?", for code
that can be called both from trio tasks and from plain (test, CLI) code, such as a
clock read that must not fail outside a run; and ``TaskStatus``, the type of the
``task_status`` argument of ``nursery.start``-able services (p2p/ and node/ use it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    # The trio-typing 0.10 stubs (installed as a dependency of libp2p) shadow trio's own
    # inline types for mypy and have no ``trio.TaskStatus``; they define it in
    # ``trio_typing``. At run time trio's own class is the one that exists.
    from trio_typing import TaskStatus
else:
    from trio import TaskStatus

__all__ = ["TaskStatus", "in_trio"]


def in_trio() -> bool:
    """True when called from a trio task (so trio's clock and scheduler can be used)."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True
