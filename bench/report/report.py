"""The benchmark report from a run's results: results.json, a Markdown summary, our served rows in
perf_analyzer's CSV layout, and the plots (bench/report/plots.py)."""
from __future__ import annotations

import csv
from pathlib import Path

from ...artifacts import RESULTS_FILE
from ..load.perf_analyzer import COLUMNS as PERF_ANALYZER_COLUMNS
from ..load.perf_analyzer import LATENCY_COLUMNS, SERVER_COLUMNS, PerfAnalyzerRow
from ..load.served import ServedRow
from ..suite.options import SLO_NAMES
from ..suite.sweep import LOWER_LEVEL_TOLERANCE
from . import project
from .plots import plots
from .provenance import IdlePolicy
from .results import SuiteResults
from .tables import cores, number, table

CSV_FILE = "served_perf_analyzer.csv"
SUMMARY_FILE = "summary.md"


def _us(ms: float) -> str:
    return "" if number(ms, "") == "-" else f"{ms * 1e3:.0f}"


def perf_analyzer_rows(served: list[ServedRow]) -> list[dict[str, str]]:
    """Our closed-loop rows in perf_analyzer's CSV layout (its column names as keys). The client's
    send/receive split is not visible through tritonclient, so those two columns stay empty rather
    than guessed."""
    rows = []
    for r in served:
        if r.mode != "closed":
            continue
        server_us = sum(getattr(r.server, attr) for attr in SERVER_COLUMNS.values())
        rows.append({
            "Model": r.model, "Protocol": r.protocol, "Batch": str(r.batch), "Concurrency": f"{r.level:g}",
            "Inferences/Second": f"{r.infer_per_s:.1f}", "Client Send": "",
            "Network+Server Send/Recv": _us(r.mean_ms - server_us / 1e3),
            **{column: f"{getattr(r.server, attr):.0f}" for column, attr in SERVER_COLUMNS.items()}, "Client Recv": "",
            **{column: _us(getattr(r, attr)) for column, attr in LATENCY_COLUMNS.items()}, "Avg latency": _us(r.mean_ms),
        })
    return rows


def write_csv(path: Path, served: list[ServedRow]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["Model", "Protocol", "Batch", *PERF_ANALYZER_COLUMNS])
        writer.writeheader()
        writer.writerows(perf_analyzer_rows(served))


def idle_line(idle: IdlePolicy | None) -> str:
    if not idle:
        return "CPU idle policy: not recorded."
    extra = f", guest_halt_poll_ns {idle.guest_halt_poll_ns}" if idle.guest_halt_poll_ns is not None else ""
    if idle.latency_bound_us is not None:  # another process bounds wake-up latency for the whole run
        extra += f", a PM QoS CPU latency bound of {idle.latency_bound_us} us held when the run started"
    return (f"CPU idle policy: driver {idle.driver}, governor {idle.governor}, states "
            f"{', '.join(idle.states) or 'none'}{extra}.")


def slo_section(results: SuiteResults) -> list[str]:
    slos = results.options.slos
    if not slos:
        return ["## SLOs", "No SLOs were given, so no row was judged. Give your constraints with `--slo NAME=VALUE` "
                f"(NAME one of {', '.join(SLO_NAMES)}; latencies are upper bounds in ms, min_throughput a lower "
                "bound in inferences/s), e.g. `tritonize bench --slo p99_ms=5 --slo min_throughput=2000`: each "
                "served model and protocol is then judged at its best concurrency level within them."]
    parts = ["## SLOs", f"Given: {', '.join(s.describe() for s in slos)}. Per served model and protocol (closed "
             "loop), the level with the highest infer/s among those that meet every latency SLO and failed no "
             "request; where none does, the closest level and what it missed."]
    if not results.slos:
        return parts + ["No served rows to judge (the served part did not run)."]
    return parts + [table(
        ["model", "protocol", "verdict", "level", "infer/s", "p50 ms", "p90 ms", "p99 ms", "levels within latency",
         "missed"],
        [[v.model, v.protocol, "meets" if v.met else "**misses**",
          v.level if v.within_latency else f"{v.level} (closest)", f"{v.infer_per_s:.0f}", f"{v.p50_ms:.3f}",
          f"{v.p90_ms:.3f}", f"{v.p99_ms:.3f}", ", ".join(map(str, v.levels_within_latency)) or "none",
          "; ".join(v.missed) or "-"] for v in results.slos])]


def markdown(results: SuiteResults) -> str:
    m = results.machine
    parts = [f"# tritonize benchmark: {m.host}, {results.date}{' (quick)' if results.quick else ''}",
             f"{m.cpu} ({m.cores} cores), {m.memory_gb} GB, GPU: {m.gpu}; git {results.git_commit}; "
             f"{', '.join(f'{k} {v}' for k, v in results.versions.items())}",
             idle_line(m.cpuidle),
             "Absolute CPU times drift between runs on a shared machine; compare rows measured in the same run."]
    if results.options.served:
        parts += slo_section(results)
    if results.project is not None:
        parts += project.markdown(results.project)
    parts += variants_section(results.variants)
    rows = results.inprocess
    if rows:
        eager = {(r.model, r.batch): r.median_us for r in rows if r.backend == "torch_eager"}
        parts += ["## In-process latency (median of pytest-benchmark rounds)", table(
            ["model", "batch", "backend", "median (us)", "IQR (us)", "rounds", "vs eager"],
            [[r.model, r.batch, r.backend, f"{r.median_us:.1f}", f"{r.iqr_us:.1f}", r.rounds,
              f"{eager[r.model, r.batch] / r.median_us:.2f}x" if (r.model, r.batch) in eager else ""] for r in rows])]
    served = results.served
    if served:
        parts += ["## Served (real tritonserver, loopback)", f"Placement: {results.placement}. "
                  "Protocols: grpc and http are tritonclient's Python clients, what Python users of the server see; "
                  "http-lean is bench/load/lean_http.py, a kept-alive socket with the request encoded once, which costs "
                  "the machine a fraction of what tritonclient does per request, so its rows show what the server "
                  "can do.", table(
            ["model", "protocol", "mode", "level", "sent", "errors", "p50 ms", "p90 ms", "p99 ms", "req/s", "infer/s",
             "server queue us", "server infer us", "mean batch", "cores busy"],
            [[r.model, r.protocol, r.mode, f"{r.level:g}", r.sent, r.errors, f"{r.p50_ms:.3f}", f"{r.p90_ms:.3f}",
              f"{r.p99_ms:.3f}", f"{r.throughput_rps:.0f}", f"{r.infer_per_s:.0f}", number(r.server.queue_us, ".0f"),
              number(r.server.compute_infer_us, ".0f"), number(r.server.mean_batch, ".2f"), cores(r.cores_busy)]
             for r in served])]
    if results.perf_analyzer:
        parts += perf_analyzer_section(results.perf_analyzer, served)
    if results.sweep:
        parts += sweep_section(results.sweep)
    if results.skipped:
        by_reason: dict[str, list[str]] = {}
        for what, why in sorted(results.skipped.items()):
            by_reason.setdefault(why, []).append(what)
        parts += ["## Not run, and why", "\n".join(f"- {why} ({len(whats)}: {', '.join(whats)})"
                                                    for why, whats in by_reason.items())]
    return "\n\n".join(parts) + "\n"


def perf_analyzer_section(theirs: list[PerfAnalyzerRow], served: list[ServedRow]) -> list[str]:
    """perf_analyzer's rows beside ours for the same model, protocol and concurrency (closed loop)."""
    ours = {(r.model, r.protocol, r.level): r for r in served if r.mode == "closed"}

    def both(row: PerfAnalyzerRow, value, fmt: str) -> str:
        mine = ours.get((row.model, row.protocol, row.level))
        return " / ".join(number(value(r) if r is not None else None, fmt) for r in (mine, row))

    def server(attr: str):
        return lambda r: getattr(r.server, attr) if r.server is not None else None

    return ["## perf_analyzer beside ours (closed loop, same server, same request tensors)", table(
        ["model", "protocol", "concurrency", "p50 ms (ours / perf_analyzer)", "p99 ms (ours / perf_analyzer)",
         "infer/s (ours / perf_analyzer)", "server queue us (ours / perf_analyzer)",
         "server infer us (ours / perf_analyzer)"],
        [[r.model, r.protocol, f"{r.level:g}", both(r, lambda x: x.p50_ms, ".3f"), both(r, lambda x: x.p99_ms, ".3f"),
          both(r, lambda x: x.infer_per_s, ".0f"), both(r, server("queue_us"), ".0f"),
          both(r, server("compute_infer_us"), ".0f")] for r in theirs if r.mode == "closed"])]


def variants_section(variants) -> list[str]:
    """optimize's variants per model: speed and accuracy against FP32 side by side, the pick starred."""
    if not variants:
        return []
    batches = sorted({b for v in variants for b, _ in v.p50_ms})
    return ["## Optimize's variants: speed and accuracy against FP32",
            "As `tritonize optimize` measured them (in-process ONNX Runtime, its objective and its rows); * the pick; "
            "top1/cos: top-1 agreement (classifiers) or the lowest cosine (embeddings). Only a variant within FP32 "
            "tolerance is picked unless an accuracy budget was given.", table(
                ["model", "variant", "within FP32 tolerance", "max abs err", "top1/cos",
                 *(f"p50 ms b={b}" for b in batches), "vs fp32", "objective", "judged on"],
                [[v.model, v.variant + (" *" if v.picked else ""), "yes" if v.exact else "no", f"{v.max_abs_err:.2g}",
                  "" if v.agreement is None else f"{v.agreement:.4f}",
                  *(f"{dict(v.p50_ms)[b]:.3f}" if b in dict(v.p50_ms) else "" for b in batches),
                  "" if v.vs_fp32 is None else f"{v.vs_fp32:.2f}x", v.objective or "(before objectives)", v.judged_on]
                 for v in variants])]


def write_report(results: SuiteResults, folder: Path) -> list[str]:
    """Write every report file into `folder` (which the caller swaps in atomically)."""
    results.write(folder)
    (folder / SUMMARY_FILE).write_text(markdown(results))
    write_csv(folder / CSV_FILE, results.served)
    return [RESULTS_FILE, SUMMARY_FILE, CSV_FILE, *plots(results, folder)]


def sweep_section(s) -> list[str]:
    """The sweep's table: each config's top-level run, and for the finalists every level side by side."""
    top = max(s.levels)
    finalists = [c for c in s.configs if c.finalist]
    best = s.best
    return [
        f"## Dynamic-batching sweep: {s.model} ({s.describe()})",
        "Every config at the top level, then the finalists (the served config among them) at every level in "
        f"turns; a finalist may not fall more than {LOWER_LEVEL_TOLERANCE:.0%} below the served config at a lower level.",
        table(["delay us", "instances", "preferred", "max batch", f"c{top} req/s", "p99 ms", "mean batch", "verdict"],
              [[c.max_queue_delay_us, c.instance_count, c.preferred_batch_sizes or "none", c.max_batch_size,
                f"{c.top.throughput_rps:.0f}", f"{c.top.p99_ms:.3f}", number(c.top.mean_batch, ".2f"),
                ("served: " if c.served else "") + c.verdict] for c in s.configs]),
        table(["config", *[f"c{lv} req/s (mean batch)" for lv in s.levels], *[f"c{lv} p99 ms" for lv in s.levels]],
              [[f"delay {c.max_queue_delay_us}, {c.instance_count} inst, pref {c.preferred_batch_sizes or 'none'}, "
                f"max {c.max_batch_size}" + (" (served)" if c.served else ""),
                *[f"{c.throughput_at(lv):.0f} ({fmean_batch(c, lv)})" for lv in s.levels],
                *[f"{max(r.p99_ms for r in c.at(lv)):.3f}" for lv in s.levels]] for c in finalists]),
        "Winner: " + (f"delay {best.max_queue_delay_us} us, {best.instance_count} instances, preferred batch sizes "
                      f"{best.preferred_batch_sizes or 'none'}, max batch {best.max_batch_size} "
                      f"({best.throughput_at(top):.0f} req/s at c{top}, against {s.baseline.throughput_at(top):.0f} "
                      f"served)" if best else "none within the budget")
        + (f"; recorded in {s.tuning_file}" if s.tuning_file else "")
        + (f"; written to {s.written_to}" if s.written_to else "")]


def fmean_batch(c, level: int) -> str:
    runs = c.at(level)
    return number(sum(r.mean_batch for r in runs) / len(runs), ".2f")
