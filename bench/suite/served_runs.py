"""The served measurements of a user's run, against one real server:

- a closed-loop concurrency sweep per tensor model and protocol (tritonclient gRPC and HTTP, what
  Python users of the server see, and the lean HTTP sender, what the server can do when the load
  generator costs little), then one open-loop (Poisson) run at half the single-client capacity;
- a text model as its users call it: sentences through `<model>_text`, tokenized on the server;
- optionally the dynamic-batching sweep (Model Analyzer style) of one model, its p99 budget the
  user's p99 SLO where one was given, its winner recorded for `tritonize repo --tune`;
- perf_analyzer on the same models, levels and request tensors, where a binary is found.
Each step reports to the progress, each part that cannot run says why in the results.
"""
from __future__ import annotations

import datetime
import os
from pathlib import Path

from ...artifacts import TUNING_FILE
from ...model_repository.config import TEXT_SUFFIX
from ...model_repository.tuning import Tuning, record_tuning
from ...models import get_spec
from ...serving.server import TritonServer
from ..load import perf_analyzer
from ..load.served import ServedRow, endpoint, run_load
from ..report.results import SuiteResults
from .options import SuiteOptions
from .progress import Progress
from .sweep import DEFAULT_GRID, DEFAULT_P99_BUDGET_MS, SweepGrid, batching_sweep, grid_size, write_back


def run_count(served: list[str], opts: SuiteOptions) -> int:
    """How many load runs `served_rows` makes."""
    return sum(len(opts.grpc_levels) if get_spec(m).text is not None
               else sum(len(opts.levels(p)) for p in opts.protocols) + ("grpc" in opts.protocols) for m in served)


def _done(row: ServedRow) -> str:
    level = f"concurrency {row.level:g}" if row.mode == "closed" else f"open loop at {row.level:g} req/s"
    return f"{row.model} {row.protocol} {level}: {row.infer_per_s:.0f} infer/s, p99 {row.p99_ms:.2f} ms"


def served_rows(server: TritonServer, served: list[str], opts: SuiteOptions, progress: Progress,
                results: SuiteResults) -> None:
    """The concurrency sweeps and the open-loop runs, appended to `results.served`."""
    progress.stage("served: concurrency sweeps", run_count(served, opts))
    for model in served:
        spec = get_spec(model)
        if spec.text is not None:
            for level in opts.grpc_levels:
                results.served.append(run_load(server.grpc_url, server.grpc_url, "grpc", model + TEXT_SUFFIX, spec,
                                               level=level, duration_s=opts.duration_s, text=True,
                                               admin_key=server.admin_key))
                progress.advance(_done(results.served[-1]))
            continue
        for protocol in opts.protocols:
            url = endpoint(server, protocol)
            for level in opts.levels(protocol):
                results.served.append(run_load(server.grpc_url, url, protocol, model, spec, level=level,
                                               duration_s=opts.duration_s, admin_key=server.admin_key))
                progress.advance(_done(results.served[-1]))
        if "grpc" not in opts.protocols:
            continue
        c1 = next(r for r in results.served if r.model == model and r.protocol == "grpc" and r.mode == "closed"
                  and r.level == min(opts.grpc_levels))
        rate = round(0.5 * c1.throughput_rps, 1)  # half the fewest clients' capacity: a loaded but stable server
        results.served.append(run_load(server.grpc_url, server.grpc_url, "grpc", model, spec, mode="open", level=rate,
                                       duration_s=opts.duration_s, admin_key=server.admin_key))
        progress.advance(_done(results.served[-1]))


def sweep(server: TritonServer, repo: Path, opts: SuiteOptions, progress: Progress, results: SuiteResults,
          grid: SweepGrid = DEFAULT_GRID) -> None:
    """The dynamic-batching sweep of `opts.sweep_model`: its winner recorded in the artifacts' tuning
    file (for `tritonize repo --tune`) and written into a repository's config where asked."""
    if opts.sweep_model is None:
        results.skip("dynamic-batching sweep", "not requested (`tritonize bench --sweep MODEL`)")
        return
    progress.stage(f"dynamic-batching sweep of {opts.sweep_model}", grid_size(grid))
    p99 = opts.slo("p99_ms")
    results.sweep = s = batching_sweep(
        server, repo, get_spec(opts.sweep_model), duration_s=opts.duration_s, grid=grid,
        p99_budget_ms=p99.value if p99 else DEFAULT_P99_BUDGET_MS,
        measured=lambda c, r: progress.advance(
            f"c{r.level}: delay {c.max_queue_delay_us} us, {c.instance_count} instances, preferred "
            f"{c.preferred_batch_sizes or 'none'}, max batch {c.max_batch_size}: {r.throughput_rps:.0f} req/s"))
    if s.best is None:
        return
    measured = f"{s.describe()}; {os.cpu_count()} cores; {datetime.date.today().isoformat()}"
    s.tuning_file = str(record_tuning(opts.artifacts / TUNING_FILE, Tuning(
        model=s.model, settings=s.best.settings(), measured=measured, throughput_rps=s.best.throughput_at(max(s.levels)))))
    if opts.sweep_write_back:
        s.written_to = str(write_back(opts.sweep_write_back, opts.sweep_model, s.best.settings()))


def perf_analyzer_rows(server: TritonServer, served: list[str], opts: SuiteOptions, work: Path, progress: Progress,
                       results: SuiteResults) -> None:
    """perf_analyzer on the tensor models at our gRPC levels, into `results.perf_analyzer`; where there
    is no binary, or a run fails, `results.skipped` says so (the rest of the run is kept)."""
    binary = perf_analyzer.find_binary(opts.perf_analyzer)
    if binary is None:
        results.skip("perf_analyzer beside our load generator",
                     f"no {perf_analyzer.BINARY} on PATH; {perf_analyzer.INSTALL_HINT}")
        return
    results.perf_analyzer = []
    tensor_models = [m for m in served if get_spec(m).text is None]  # text models are served to our clients as text
    progress.stage("perf_analyzer beside ours", len(tensor_models))
    for spec in (get_spec(m) for m in tensor_models):
        try:
            results.perf_analyzer += perf_analyzer.run_levels(binary, server.grpc_url, "grpc", spec, opts.grpc_levels,
                                                              opts.duration_s, work / "perf_analyzer",
                                                              admin_key=getattr(server, "admin_key", None))
            progress.advance(f"{spec.name} at concurrency {', '.join(map(str, opts.grpc_levels))}")
        except perf_analyzer.PerfAnalyzerFailed as e:
            results.skip(f"perf_analyzer on {spec.name}", f"failed: {e}")
            progress.advance(f"{spec.name} failed")
