"""What every subcommand shares: the consoles, the user-error type, model lookup and the per-model
progress bar. Only the standard library and rich load here, so that `--help` stays fast: each
subcommand imports its stage (torch, ONNX Runtime, tritonclient) inside the function that runs it."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ..artifacts import DEFAULT_ROOT

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


def add_models_argument(parser, help_text: str = "models: built-in names or references FILE.py:ATTR / "
                                                  "package.module:ATTR (default: all built-in exportable ones)") -> None:
    parser.add_argument("models", nargs="*", metavar="MODEL", help=help_text)


def add_artifacts_argument(parser, old_out: bool = False) -> None:
    """--artifacts, the artifact root (artifacts/<model>/). export and optimize called it --out before:
    with `old_out`, --out still works for one release, with a warning (see `artifact_root`)."""
    parser.add_argument("--artifacts", type=Path, default=None if old_out else DEFAULT_ROOT,
                        help=f"artifact root (default: {DEFAULT_ROOT})")
    if old_out:
        parser.add_argument("--out", type=Path, dest="old_out", metavar="ARTIFACTS",
                            help="deprecated: the old name of --artifacts, going in the next release")


def artifact_root(args, command: str) -> Path:
    """The artifact root a command was given: --artifacts, or its deprecated name --out (with a
    warning on stderr), not both."""
    old = getattr(args, "old_out", None)
    if old is None:
        return args.artifacts if args.artifacts is not None else DEFAULT_ROOT
    if args.artifacts is not None:
        raise CliError(f"--out {old} and --artifacts {args.artifacts} both name the artifact folder (--out is "
                       f"the deprecated name of --artifacts); give --artifacts only")
    console.print(f"tritonize {command}: --out is deprecated for the artifact folder; use --artifacts",
                  style="yellow", markup=False, highlight=False, soft_wrap=True)
    return old


def add_data_argument(parser, judged: str) -> None:
    parser.add_argument("--data", type=Path, metavar="PATH",
                        help=f"your own rows, which {judged}: an .npz of the model's inputs (np.savez, arrays named "
                             f"like the inputs); for a text model, also sentences (a UTF-8 .txt, one per line); or "
                             f"a folder of <model>.npz / <model>.txt (default: random example inputs)")


def input_rows_by_model(chosen, path: Path | None, flag: str, purpose: str) -> dict:
    """Each model's rows from `flag` PATH (one model's .npz or .txt, or a folder of them), all read and
    checked against the models before any work; a model without a file gets none."""
    if path is None:
        return {}
    from ..export.input_rows import InputRows

    if not path.is_dir():
        if len(chosen) != 1:
            raise CliError(f"{flag} {path}: one file holds one model's rows; name that model "
                           f"(... MODEL {flag} {path}) or pass a folder of <model>.npz / <model>.txt files")
        return {chosen[0].name: InputRows.from_file(chosen[0], path, purpose)}
    names = {s.name for s in chosen}
    files = {}
    for f in sorted(path.glob("*.npz")) + sorted(path.glob("*.txt")):
        if f.stem in files:
            raise CliError(f"{flag} {path}: expected one file per model, got both {files[f.stem].name} and {f.name}")
        files[f.stem] = f
    if not names & files.keys():
        raise CliError(f"{flag} {path}: expected files named {', '.join(f'{n}.npz' for n in sorted(names))}, "
                       f"found {', '.join(f.name for f in files.values()) or 'no .npz or .txt file'}")
    for stem, f in files.items():
        if stem not in names:
            console.print(f"[yellow]note:[/] {escape(str(f))} left unused: no model {stem!r} among those named",
                          highlight=False, soft_wrap=True)
    return {s.name: InputRows.from_file(s, files[s.name], purpose) for s in chosen if s.name in files}
