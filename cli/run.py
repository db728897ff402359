"""`tritonize run`: the main job, every stage in order on the CPU (pipeline/main_job.py), then its tables."""
from __future__ import annotations

from pathlib import Path

from ..artifacts import DEFAULT_REPOSITORY, DEFAULT_RESULTS, DEFAULT_ROOT
from ..pipeline import DEFAULT_MODELS
from .common import add_models_argument, console, out


def register(sub) -> None:
    p = sub.add_parser("run", help="the main job: export, optimize, repository, real server, client check, quick benchmark")
    add_models_argument(p, f"models (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--artifacts", type=Path, default=DEFAULT_ROOT, help="artifact root (default: %(default)s)")
    p.add_argument("--repo", type=Path, default=DEFAULT_REPOSITORY, help="repository folder (default: %(default)s)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="report root (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="export and optimize again even when artifacts are current")
    p.add_argument("--no-bench", action="store_true", help="stop after the served check")
    p.set_defaults(func=run)


def served_table(report, repository: Path):
    """The run's table: per served model, what was done to its artifacts and whether the server's
    answer matched in-process; on a narrow console the artifacts' note and the first call's time give
    way first (wrapped, then left out), never the model, the verdict or the error."""
    from ..models import get_spec
    from .tables import Col, FitTable

    table = FitTable(Col("model", key=True), Col("serves", priority=3), Col("artifacts", priority=1),
                     Col("served == in-process", key=True),
                     Col("max |err|", key=True), Col("first call (ms)", priority=2),
                     title=f"served by tritonserver from {repository}")
    for check in report.served:  # pipeline.main_job.MainJobReport
        spec = get_spec(check.model)
        done = report.done.get(spec.base_model or spec.name, "")
        table.add_row(check.model, check.served, done, "[green]yes" if check.ok else "[red]no", f"{check.max_abs_err:.2e}",
                      f"{check.latency_ms:.2f}")
    return table


def run(args) -> int:
    from ..bench.suite.progress import RichStageProgress
    from ..pipeline.main_job import RunOptions, run_bench, run_main_job
    from .tables import FitMarkdown

    opts = RunOptions(models=tuple(args.models) if args.models else RunOptions.models, artifacts=args.artifacts,
                      repository=args.repo, results=args.results, bench=not args.no_bench, force=args.force)
    with console.status("tritonize run") as status:
        report = run_main_job(opts, step=lambda msg: status.update(f"tritonize run: {msg}"))
    out.print(served_table(report, opts.repository))
    if opts.bench:
        with RichStageProgress(console) as progress:
            folder = run_bench(opts, progress)
        out.print(FitMarkdown((folder / "summary.md").read_text()))
        out.print(f"[bold green]benchmark report[/]: {folder}")
    return 0
