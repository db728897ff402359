"""The peer comparison's results: typed rows, medians over the rounds, tritonize's ratios to each peer,
and peers.json / peers.md written atomically (bench/peers/compare.py runs the comparison)."""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ...artifacts import write_json
from ..load.loadgen import LoadSummary
from ..record import Record
from ..report.provenance import Machine

TRITONIZE = "tritonize"
RTOL, ATOL = 1e-5, 1e-6  # how close every server's answers must be to in-process ONNX Runtime


@dataclass(kw_only=True)
class PeerRow(LoadSummary):
    """One load run of one server in one round; `mean_batch` is Triton's (inferences per execution),
    None for a peer, which does not report it."""
    model: str
    server: str
    round: int
    mean_batch: float | None


@dataclass
class AnswerCheck(Record):
    """A server's answers to `rows` rows against in-process ONNX Runtime on the same file."""
    model: str
    server: str
    round: int
    rows: int
    max_abs_diff: float
    ok: bool


@dataclass
class PeerSummary(Record):
    """One server at one level over the rounds: medians, and the throughput's spread."""
    model: str
    server: str
    level: int
    rounds: int
    throughput_rps: float
    throughput_min: float
    throughput_max: float
    p50_ms: float
    p99_ms: float
    errors: int
    mean_batch: float | None


@dataclass
class PeerRatio(Record):
    """tritonize over one peer at one level: throughput (above 1: tritonize serves more) and latency
    (below 1: tritonize answers sooner)."""
    model: str
    peer: str
    level: int
    throughput_ratio: float
    p50_ratio: float
    p99_ratio: float


@dataclass
class PeerResults(Record):
    started: str
    machine: Machine
    models: list[str]
    levels: list[int]
    rounds: int
    duration_s: float
    servers: dict[str, str]  # name -> how it was configured
    versions: dict[str, str]  # what each peer venv pinned, and tritonize's onnxruntime and numpy
    onnx_sha256: dict[str, str]  # the one file every server served, per model
    load_generator: str = "python"  # "wrk" (bench/load/wrk.py) or "python" (bench/load/loadgen.py's closed loop)
    threads: dict[str, str] = field(default_factory=dict)  # "tritonize" (per model) and "peers": ONNX Runtime threads
    checks: list[AnswerCheck] = field(default_factory=list)
    rows: list[PeerRow] = field(default_factory=list)
    summary: list[PeerSummary] = field(default_factory=list)
    ratios: list[PeerRatio] = field(default_factory=list)


def summarize(rows: list[PeerRow]) -> list[PeerSummary]:
    """Medians over the rounds per (model, server, level), in the order the rows first appear."""
    groups: dict[tuple[str, str, int], list[PeerRow]] = {}
    for r in rows:
        groups.setdefault((r.model, r.server, int(r.level)), []).append(r)
    out = []
    for (model, server, level), group in groups.items():
        throughputs = [r.throughput_rps for r in group]
        batches = [r.mean_batch for r in group if r.mean_batch is not None]
        out.append(PeerSummary(model=model, server=server, level=level, rounds=len(group),
                               throughput_rps=statistics.median(throughputs), throughput_min=min(throughputs),
                               throughput_max=max(throughputs), p50_ms=statistics.median(r.p50_ms for r in group),
                               p99_ms=statistics.median(r.p99_ms for r in group), errors=sum(r.errors for r in group),
                               mean_batch=statistics.median(batches) if batches else None))
    return out


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def ratios(summary: list[PeerSummary]) -> list[PeerRatio]:
    """tritonize over every peer, at every level both were measured at."""
    ours = {(s.model, s.level): s for s in summary if s.server == TRITONIZE}
    return [PeerRatio(model=s.model, peer=s.server, level=s.level,
                      throughput_ratio=_ratio(t.throughput_rps, s.throughput_rps), p50_ratio=_ratio(t.p50_ms, s.p50_ms),
                      p99_ratio=_ratio(t.p99_ms, s.p99_ms))
            for s in summary if s.server != TRITONIZE and (t := ours.get((s.model, s.level)))]


def headlines(summary: list[PeerSummary], ratio_rows: list[PeerRatio]) -> list[str]:
    """Per model: throughput at the highest level against batched Mosec (with tritonize's mean batch),
    and p50 at the lowest level against unbatched Mosec, where both were measured."""
    lines = []
    for model in dict.fromkeys(s.model for s in summary):
        levels = sorted({s.level for s in summary if s.model == model})
        find = {(s.server, s.level): s for s in summary if s.model == model}
        top, low = levels[-1], levels[0]
        if (t := find.get((TRITONIZE, top))) and (m := find.get(("mosec-batched", top))):
            batch = f"{t.mean_batch:.1f}" if t.mean_batch is not None else "n/a"
            lines.append(f"{model}, concurrency {top}: tritonize {t.throughput_rps:.0f} req/s (Triton's mean batch "
                         f"{batch}) vs mosec-batched {m.throughput_rps:.0f} req/s: "
                         f"{_ratio(t.throughput_rps, m.throughput_rps):.2f}x")
        if (t := find.get((TRITONIZE, low))) and (m := find.get(("mosec-unbatched", low))):
            lines.append(f"{model}, concurrency {low}: p50 tritonize {t.p50_ms:.3f} ms vs mosec-unbatched "
                         f"{m.p50_ms:.3f} ms: {_ratio(t.p50_ms, m.p50_ms):.2f}x")
    return lines


LOAD_GENERATOR_TEXT = {"wrk": "wrk, one thread, the request pre-encoded",
                       "python": "tritonize's closed loop of kept-alive Python sockets, the request pre-encoded"}


def markdown(results: PeerResults) -> str:
    errors = sum(s.errors for s in results.summary)
    worst = max((c.max_abs_diff for c in results.checks), default=float("nan"))
    lines = [f"# tritonize beside its peers ({results.machine.host}, {results.started})", "",
             f"{results.rounds} round(s), {results.duration_s:g} s per level, closed loop at concurrency "
             f"{', '.join(map(str, results.levels))}; one load generator ({LOAD_GENERATOR_TEXT.get(results.load_generator, results.load_generator)}), "
             f"servers taking turns. Answers checked "
             f"against in-process ONNX Runtime before timing: {len(results.checks)} checks, max |diff| {worst:.2e} "
             f"(rtol {RTOL:g}, atol {ATOL:g}). Errors: {errors}.", ""]
    lines += [f"- {line}" for line in headlines(results.summary, results.ratios)] + [""]
    lines += ["Servers:", ""] + [f"- **{name}**: {text}" for name, text in results.servers.items()] + [""]
    lines += [f"ONNX Runtime threads: {'. '.join(f'{k}: {v}' for k, v in results.threads.items())}.", ""] \
        if results.threads else []
    lines += [f"Versions: {', '.join(f'{k} {v}' for k, v in results.versions.items())}", ""]
    for model in results.models:
        lines += [f"## {model}", "", "| server | concurrency | req/s (median) | req/s min-max | p50 ms | p99 ms | "
                  "errors | mean batch |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for s in (s for s in results.summary if s.model == model):
            batch = f"{s.mean_batch:.2f}" if s.mean_batch is not None else ""
            lines.append(f"| {s.server} | {s.level} | {s.throughput_rps:.0f} | {s.throughput_min:.0f}-"
                         f"{s.throughput_max:.0f} | {s.p50_ms:.3f} | {s.p99_ms:.3f} | {s.errors} | {batch} |")
        lines += ["", "tritonize / peer (throughput above 1 and latency below 1: tritonize does better):", "",
                  "| peer | concurrency | throughput | p50 | p99 |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {r.peer} | {r.level} | {r.throughput_ratio:.2f}x | {r.p50_ratio:.2f}x | {r.p99_ratio:.2f}x |"
                  for r in results.ratios if r.model == model]
        lines.append("")
    return "\n".join(lines)


def write_results(results: PeerResults, out: Path) -> list[Path]:
    """peers.json and peers.md into `out`, each written to a temporary name and renamed."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "peers.json", results.to_json())
    md = out / "peers.md"
    tmp = md.with_name(f".{md.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(markdown(results) + "\n")
        os.replace(tmp, md)
    finally:
        tmp.unlink(missing_ok=True)
    return [out / "peers.json", md]
