"""`tritonize bench`: the whole suite, one report. This module only orders the parts:

1. In-process latency (bench/suite/inprocess.py): pytest-benchmark over bench/suite/inprocess_cases.py,
   silently; every backend row runs or is skipped with its reason.
2. Served (bench/suite/served_runs.py): a repository of the models, one real server; the concurrency
   sweeps over the protocols, the open-loop runs, text models as sentences, the optional
   dynamic-batching sweep and perf_analyzer beside ours. With two or more cores the server and the
   load generator share the lower half and the model instances get the upper half
   (serving/placement.py).
3. The user's SLOs judged on the served rows (bench/suite/slo.py).
4. With `project`, the project's own benchmark around those measurements, which the caller passes as
   `studies` (studies/project.py, in a checkout only: `tritonize bench --project` passes it): its
   do-nothing twins are served too, its floors come first and everything with idle cores polling
   last, since polling's effect outlasts it.
5. The report (bench/report/report.py), written atomically to `<results_root>/<host>-<date>[-quick]/`.
"""
from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Callable, Protocol

from ...artifacts import RESULTS_FILE, atomic_dir, check_replaceable, tool_versions
from ...model_repository.writer import build_repository
from ...models import get_spec
from ...serving.placement import Placement, available_cpus, pinned
from ...serving.server import TritonServer
from ..report.project import ProjectResults
from ..report.provenance import git_commit, machine_info
from ..report.report import write_report
from ..report.results import SuiteResults
from . import served_runs
from .inprocess import run_inprocess
from .options import Slo, SuiteOptions, check_options, check_results_root, parse_slo, parse_slos, served_models
from .progress import Progress, as_progress
from .slo import judge
from .variants import variant_rows

__all__ = ["SuiteOptions", "Slo", "parse_slo", "parse_slos", "check_options", "check_results_root", "run_suite",
           "report_folder"]


class Studies(Protocol):
    """Measurements around the suite's own on its main server: `before()` them, `after()` them (which
    gives the results the report keeps). The project's own (studies/project.py) are the one kind; they
    live outside the installed package, so the caller passes them (cli/bench.py for `--project`)."""

    def before(self) -> None: ...

    def after(self) -> ProjectResults: ...


# Called with the repository, the main server, the cores its load generator runs on, the served
# models, the options, the progress and results.skip: ProjectBenchmark's signature.
StudiesFactory = Callable[[Path, TritonServer, frozenset[int], list[str], SuiteOptions, Progress,
                           Callable[[str, str], None]], Studies]
NO_STUDIES = ("project=True runs the project's own studies, which the caller passes as `studies` "
              "(tritonize.studies.project.ProjectBenchmark, in a checkout of tritonize)")


def report_folder(opts: SuiteOptions, host: str, date: str) -> Path:
    """Where the run's report goes: a quick run never replaces a full report of the same day."""
    return opts.results_root / f"{host}-{date}{'-quick' if opts.quick else ''}"


def run_served(opts: SuiteOptions, work: Path, progress: Progress, results: SuiteResults,
               studies: StudiesFactory | None = None) -> None:
    served = served_models(opts.models)
    for m in (get_spec(m).name for m in opts.models):
        if m not in served:
            results.skip(f"served {m}", "runs Triton kernels; without a GPU they run in Triton's interpreter, "
                                        "which is checked for correctness in the tests, not timed")
    repo = work / "model_repository"
    build_repository([get_spec(m) for m in served], opts.artifacts, repo, "cpu", noop_baselines=opts.project)
    placement = Placement.split() if opts.placement else None
    if opts.placement and placement is None:
        results.skip("CPU placement", f"needs two or more cores in one contiguous upper half, this process has "
                                      f"{sorted(available_cpus())}")
    results.placement = placement.describe() if placement else "none (the OS schedules everything)"
    with TritonServer(repo, placement=placement) as server:
        client_cpus = placement.server_cpus if placement else available_cpus()
        project = studies(repo, server, client_cpus, served, opts, progress, results.skip) if opts.project else None
        if project:
            project.before()
        with pinned(client_cpus):
            served_runs.served_rows(server, served, opts, progress, results)
            served_runs.sweep(server, repo, opts, progress, results)
            served_runs.perf_analyzer_rows(server, served, opts, work, progress, results)
        if project:
            results.project = project.after()
    results.slos = judge(results.served, opts.slos)


def run_suite(opts: SuiteOptions, progress: Progress | Callable[[str], None] | None = None,
              studies: StudiesFactory | None = None) -> Path:
    """Run everything asked for and write `<results_root>/<host>-<date>[-quick]/`; returns that folder.
    `progress` is a Progress (bench/suite/progress.py), a callable taking one line per step, or None;
    `studies` the project's studies, which `opts.project` needs."""
    check_options(opts)
    if opts.project and opts.served and studies is None:
        raise ValueError(NO_STUDIES)
    check_results_root(opts.results_root)
    progress = as_progress(progress)
    now = dt.datetime.now(dt.timezone.utc)
    machine = machine_info()
    results = SuiteResults(started=now.isoformat(timespec="seconds"), date=now.date().isoformat(), machine=machine,
                           versions=tool_versions(), git_commit=git_commit(), options=opts)
    folder = report_folder(opts, machine.host, results.date)
    check_replaceable(folder, RESULTS_FILE)
    results.variants, skipped = variant_rows(opts.models, opts.artifacts)
    results.skipped.update(skipped)
    with tempfile.TemporaryDirectory(prefix="tritonize-bench-") as tmp:
        work = Path(tmp)
        if opts.inprocess:
            results.inprocess, skipped = run_inprocess(opts, work / "inprocess", progress)
            results.skipped.update(skipped)
        if opts.served:
            run_served(opts, work, progress, results, studies)
    progress.stage("report", 1)
    with atomic_dir(folder, marker=RESULTS_FILE) as tmp_folder:
        written = write_report(results, tmp_folder)
    progress.advance(f"{folder}: {', '.join(written)}")
    return folder
