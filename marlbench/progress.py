"""Progress reporting for long work: rich bars on a terminal, silence for libraries and --quiet."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Task:
    """Handle of one progress bar."""

    def advance(self, n: int = 1) -> None:
        """Mark `n` more units done."""

    def note(self, text: str) -> None:
        """Show a short status (e.g. the current loss) next to the bar."""


class Reporter:
    """Silent by default: library calls print nothing unless given a `RichReporter`."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        yield Task()

    def info(self, message: str) -> None:
        """A one-line message for the user."""

    def warn(self, message: str) -> None:
        """A warning the user should see even in quiet mode."""


class _RichTask(Task):
    def __init__(self, progress: Progress, task_id):
        self._p, self._id = progress, task_id

    def advance(self, n: int = 1) -> None:
        self._p.advance(self._id, n)

    def note(self, text: str) -> None:
        self._p.update(self._id, note=text)


class RichReporter(Reporter):
    """Rich progress bars and messages on stderr (stdout stays clean for tables and data)."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console(stderr=True)
        self.quiet = quiet

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Task]:
        if self.quiet:
            yield Task()
            return
        columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("<"), TimeRemainingColumn(),
                   TextColumn("{task.fields[note]}")]
        with Progress(*columns, console=self.console, transient=False) as progress:
            yield _RichTask(progress, progress.add_task(description, total=total, note=""))

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {message}", highlight=False,
                           soft_wrap=True)
