"""Suite-wide set-up: a SIGTERM ends the run the way Ctrl-C does.

Python dies on SIGTERM without unwinding, so the fixtures' teardown never ran and the
node processes a test had started lived on, holding ports and CPU (a CI job killed at
its time limit, or ``kill`` of a stuck run, left them behind). As KeyboardInterrupt,
pytest stops and tears the fixtures down, and the harnesses stop their processes.
"""

from __future__ import annotations

import signal
from types import FrameType

import pytest


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    signal.signal(signal.SIGTERM, _interrupt)
