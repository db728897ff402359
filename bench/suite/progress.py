"""How a benchmark run tells a person how far it is: stages (in-process, served, perf_analyzer, the
sweep, the project's studies), each a known number of steps.

The suite reports to a `Progress`: `stage(name, total)` when a stage begins (the previous one is then
done) and `advance(message)` when one of its steps is done, the message saying what was just measured.
`NoProgress` ignores both; `RichStageProgress(console)` shows one rich progress bar per stage:

    with RichStageProgress(console) as progress:
        folder = run_suite(opts, progress)
"""
from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.table import Column


@runtime_checkable
class Progress(Protocol):
    def stage(self, name: str, total: int) -> None:
        """A stage of `total` steps begins; the one before it, if any, is over."""

    def advance(self, message: str) -> None:
        """One step of the current stage is done; `message` says what it measured."""


class NoProgress:
    """Reports nowhere."""

    def stage(self, name: str, total: int) -> None:
        pass

    def advance(self, message: str) -> None:
        pass


class CallbackProgress:
    """Each stage and step as one line to `callback` (e.g. a status line: "served: mlp grpc c8 ...")."""

    def __init__(self, callback: Callable[[str], None]):
        self.callback, self.name = callback, ""

    def stage(self, name: str, total: int) -> None:
        self.name = name
        self.callback(name)

    def advance(self, message: str) -> None:
        self.callback(f"{self.name}: {message}")


def as_progress(progress: Progress | Callable[[str], None] | None) -> Progress:
    """A Progress for what the caller gave: one, a callable taking a line, or None (nowhere)."""
    if progress is None:
        return NoProgress()
    if isinstance(progress, Progress):
        return progress
    if callable(progress):
        return CallbackProgress(progress)
    raise TypeError(f"progress expects a Progress (stage/advance), a callable taking a line, or None; "
                    f"got {type(progress).__name__}")


class RichStageProgress:
    """One rich progress bar per stage, each kept on screen once done, the latest step beside it."""

    def __init__(self, console: Console | None = None):
        fixed = Column(no_wrap=True)  # the stage, its bar and counts keep their width; the step's line gives way
        self.bars = RichProgress(SpinnerColumn(finished_text="[green]✓"),
                                 TextColumn("[bold]{task.fields[stage]}", table_column=fixed),
                                 BarColumn(bar_width=24, table_column=fixed), MofNCompleteColumn(table_column=fixed),
                                 TimeElapsedColumn(table_column=fixed),
                                 TextColumn("{task.description}", markup=False,
                                            table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
                                 console=console, expand=True)
        self.task: TaskID | None = None

    def __enter__(self) -> "RichStageProgress":
        self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self._finish()
        self.bars.stop()

    def _finish(self) -> None:
        if self.task is not None:
            total = self.bars.tasks[-1].total or 0
            self.bars.update(self.task, completed=total)  # a stage may end early: a step skipped with its reason
            self.bars.stop_task(self.task)

    def stage(self, name: str, total: int) -> None:
        self._finish()
        self.task = self.bars.add_task("", total=max(total, 1), stage=name)

    def advance(self, message: str) -> None:
        if self.task is not None:
            self.bars.update(self.task, advance=1, description=message)
