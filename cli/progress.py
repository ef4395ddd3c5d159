"""The rich progress bar of long ``dvp`` commands (``audit replay``, ``store check``).

``ProgressBar(labels, rates)`` is a context manager and a callback for the
``ledger.audit.AuditProgress`` reports those commands' logic emits: one bar per phase,
labelled ``labels[phase]``; ``rates(progress)`` gives the text after the bar (counts,
speeds). It draws on stderr, and only on a terminal and without ``--json``, so scripts
and logs see nothing of it. A phase reported with ``total == 0`` has an unknown end
(a pulsing bar).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class ProgressBar:
    """One rich bar per phase (see the module docstring)."""

    def __init__(
        self,
        enabled: bool,
        labels: dict[str, str],
        rates: Callable[[Any], str],
    ) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rates]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled or not console.is_terminal,
        )
        self.labels = labels
        self.rates = rates
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressBar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)

    def __call__(self, p: Any) -> None:
        task = self.tasks.get(p.phase)
        total = p.total or None
        if task is None:
            label = self.labels.get(p.phase, p.phase)
            task = self.tasks[p.phase] = self.progress.add_task(label, total=total, rates="")
        self.progress.update(task, completed=p.done, total=total, rates=self.rates(p))
