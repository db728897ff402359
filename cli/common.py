"""What every subcommand shares: the consoles, the user-error type, model lookup and the per-model
progress bar. Only the standard library and rich load here, so that `--help` stays fast: each
subcommand imports its stage (torch, ONNX Runtime, tritonclient) inside the function that runs it."""
from __future__ import annotations

from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(stderr=True)  # progress, notes and errors
out = Console()  # the results: tables and reports


class CliError(Exception):
    """An error the user can fix; printed without a traceback, exit code 2."""


def specs(names: list[str], runtime: str | None = "onnx") -> list:
    """The ModelSpecs named (every model of `runtime` when none is)."""
    from ..models import get_spec, model_names

    return [get_spec(n) for n in (names or model_names(runtime))]


def for_each_model(specs, title: str, work: Callable) -> list:
    """Run `work(spec, step)` per model under a progress bar; `step(msg)` updates the bar's text."""
    results = []
    progress = Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[model]:<12}"), BarColumn(),
                        TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=False)
    with progress:
        for spec in specs:
            task = progress.add_task(title, total=None, model=spec.name)
            results.append(work(spec, lambda msg, t=task: progress.update(t, description=msg)))
            progress.update(task, description="[green]done", total=1, completed=1)
    return results


def add_models_argument(parser, help_text: str = "models (default: all exportable)") -> None:
    parser.add_argument("models", nargs="*", metavar="MODEL", help=help_text)
