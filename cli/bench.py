"""`tritonize bench`: in-process and served latency and throughput in one report, judged against the
user's own constraints (--slo); `--project` adds the project's own studies and targets, which live in
the checkout's studies/ folder (tritonize.studies) and are not installed with the wheel."""
from __future__ import annotations

from pathlib import Path

from ..artifacts import DEFAULT_RESULTS, DEFAULT_ROOT
from .common import CliError, add_models_argument, console, out

NO_STUDIES = ("--project runs the project's own studies, which are not installed: they run from a checkout of "
              "tritonize (clone it, `make setup`, then `.venv/bin/tritonize bench --project`)")


def register(sub) -> None:
    p = sub.add_parser("bench", help="in-process and served latency/throughput, one report, judged by your --slo")
    add_models_argument(p, "models (default: every built-in ONNX model)")
    p.add_argument("--quick", action="store_true", help="a short run (a couple of minutes on 2 CPU cores)")
    p.add_argument("--artifacts", type=Path, default=DEFAULT_ROOT, help="artifact root (default: %(default)s)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                   help="report root; the report goes to RESULTS/<host>-<date>[-quick]/ (default: %(default)s)")
    p.add_argument("--slo", dest="slos", action="append", default=[], metavar="NAME=VALUE",
                   help="a constraint the report judges each served model against, repeatable: p50_ms, p90_ms, "
                        "p99_ms (upper bounds) or min_throughput (inferences/s), e.g. --slo p99_ms=5 "
                        "--slo min_throughput=2000")
    p.add_argument("--sweep", metavar="MODEL", help="also run a dynamic-batching sweep for MODEL")
    p.add_argument("--write-back", type=Path, metavar="REPO", help="write the sweep's best config into REPO")
    p.add_argument("--duration", type=float, help="seconds per load run")
    p.add_argument("--perf-analyzer", type=Path, metavar="PATH",
                   help="the perf_analyzer binary to run beside our load generator (default: the one on PATH; "
                        "without one the report says it was not run)")
    p.add_argument("--no-inprocess", action="store_true", help="skip the in-process rows")
    p.add_argument("--no-served", action="store_true", help="skip the served rows")
    p.add_argument("--no-placement", action="store_true",
                   help="leave the server, its model instances and the load generator to the OS scheduler "
                        "(default: split the cores between them, see `tritonize serve --instance-cpus`)")
    p.add_argument("--project", action="store_true",
                   help="also run the project's own benchmark: the MLP against its do-nothing twin over placements "
                        "and idle policies, the CNN's scaling with dynamic batching, and the project's targets "
                        "(docs/measurements.md)")
    p.add_argument("--no-poll-idle", action="store_true",
                   help="with --project: do not measure the MLP floor and the CNN scaling again with idle cores "
                        "polling (default: measured where the host allows it, see `tritonize serve --poll-idle`)")
    p.set_defaults(func=run)


def project_studies():
    """The project's studies for the suite (studies/project.py), or a CliError saying where they run."""
    try:
        from ..studies.project import ProjectBenchmark
    except ModuleNotFoundError as e:
        if e.name not in ("tritonize.studies", "tritonize.studies.project"):
            raise  # a dependency of the studies is missing: its own error says which
        raise CliError(NO_STUDIES) from None
    return ProjectBenchmark


def run(args) -> int:
    from ..bench.suite.options import SuiteOptions, parse_slo
    from ..bench.suite.run import run_suite
    from ..bench.suite.progress import RichStageProgress
    from ..models import model_names
    from .tables import FitMarkdown

    studies = project_studies() if args.project else None  # before anything is measured

    make = SuiteOptions.quick_defaults if args.quick else SuiteOptions
    opts = make(models=args.models or model_names("onnx"), artifacts=args.artifacts, results_root=args.results,
                slos=tuple(parse_slo(text) for text in args.slos), project=args.project,
                sweep_model=args.sweep, sweep_write_back=args.write_back, inprocess=not args.no_inprocess,
                served=not args.no_served, placement=not args.no_placement, compare_poll_idle=not args.no_poll_idle,
                perf_analyzer=args.perf_analyzer)
    if args.duration is not None:
        opts.duration_s = args.duration
    with RichStageProgress(console) as progress:
        folder = run_suite(opts, progress, studies)
    out.print(FitMarkdown((folder / "summary.md").read_text()))
    out.print(f"[bold green]report[/]: {folder}")
    return 0
