"""Suite-wide set-up: a SIGTERM ends the run the way Ctrl-C does; the verification
page's in-browser check time (``page_verify_ms``, recorded by the Chromium tests) is
reported at the end of the run.

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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line with the page's bundle-check times, when the Chromium tests ran."""
    times = [
        float(value)
        for report in terminalreporter.stats.get("passed", [])
        for name, value in getattr(report, "user_properties", [])
        if name == "page_verify_ms"
    ]
    if times:
        shown = ", ".join(f"{t:.1f}" for t in times)
        terminalreporter.write_line(
            f"page_verify_ms (the page's check of a bundle in Chromium): {shown}"
        )
