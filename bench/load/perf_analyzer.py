"""perf_analyzer beside our load generator: NVIDIA's own client run on the same served model, with
the same request tensors, so the report shows two measurements of one server side by side.

It runs where a `perf_analyzer` binary is found (on PATH, or named with `tritonize bench
--perf-analyzer PATH`). On this project's CPU machines there is none: the `perf-analyzer` wheel needs
glibc 2.38, so the suite says in its report that the comparison was not made, and how to get the
binary (NVIDIA's SDK container ships it).

Each concurrency level is one perf_analyzer run in time windows: three windows, so its stability
check (the last three windows within `STABILITY_PERCENT` of each other) decides nothing and the run
is bounded by the same duration as ours; its CSV (`-f`) gives the client percentiles and the
server's breakdown.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...models.spec import ModelSpec
from ...serving.admin import admin_headers
from ..record import Record
from .served import ServerTimes

BINARY = "perf_analyzer"
INSTALL_HINT = ("get perf_analyzer from NVIDIA's SDK container (nvcr.io/nvidia/tritonserver:<yy.mm>-py3-sdk) or "
                "`pip install perf-analyzer` on a system with glibc 2.38 or newer, then put it on PATH or pass "
                "`tritonize bench --perf-analyzer PATH`")
WINDOWS = 3  # the fewest its stability check looks at
STABILITY_PERCENT = 1000  # any three windows pass: the run is bounded by time, not by how steady the host is
# perf_analyzer's CSV layout (`-f`, times in us), read here and written by the report for our own rows:
# its column names, and the attributes of our rows that hold the same measure (latencies in ms there;
# the server's columns are attributes of ServerTimes).
LATENCY_COLUMNS = {f"p{p} latency": f"p{p}_ms" for p in (50, 90, 95, 99)}
SERVER_COLUMNS = {"Server Queue": "queue_us", "Server Compute Input": "compute_input_us",
                  "Server Compute Infer": "compute_infer_us", "Server Compute Output": "compute_output_us"}
COLUMNS = ["Concurrency", "Inferences/Second", "Client Send", "Network+Server Send/Recv", *SERVER_COLUMNS,
           "Client Recv", *LATENCY_COLUMNS, "Avg latency"]
LEVEL_COLUMNS = ("Concurrency", "Request Rate")  # the first column: closed loop or fixed rate
REQUIRED_COLUMNS = ("Inferences/Second", *LATENCY_COLUMNS)


class PerfAnalyzerFailed(RuntimeError):
    pass


@dataclass
class PerfAnalyzerMeasurement(Record):
    """One row of perf_analyzer's CSV: latencies in ms as in our rows; the server's breakdown in us
    where the CSV has all four of its columns, else None (nothing invented)."""
    mode: str  # "closed" (a concurrency level) or "open" (a request rate)
    level: float
    infer_per_s: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    server: ServerTimes | None = None


@dataclass(kw_only=True)
class PerfAnalyzerRow(PerfAnalyzerMeasurement):
    """A measurement of perf_analyzer on a served model, beside our own rows of it."""
    model: str
    protocol: str
    client: str = BINARY


def find_binary(explicit: str | os.PathLike | None = None) -> Path | None:
    """The binary named, else the one on PATH, else None. A named one that is not an executable
    file is an error, not a silent fall back to PATH."""
    if explicit is not None:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ValueError(f"--perf-analyzer expects an executable perf_analyzer binary, got {str(path)!r} "
                             f"({'not executable' if path.is_file() else 'no such file'})")
        return path
    found = shutil.which(BINARY)
    return Path(found) if found else None


def input_data(spec: ModelSpec, batch: int = 1, seq: int | None = None,
               rng: np.random.Generator | None = None) -> dict:
    """perf_analyzer's JSON input data for `spec`: one entry per row of a valid random request (the
    same kind our senders send), each tensor without its batch axis, its shape given so that dynamic
    axes need no --shape."""
    examples = spec.example_inputs(batch, seq if seq is not None else spec.default_seq(), rng)
    inputs = {t.name: t.as_served(examples[t.name]) for t in spec.inputs}
    return {"data": [{name: {"content": array[row].ravel().tolist(), "shape": list(array[row].shape)}
                      for name, array in inputs.items()} for row in range(batch)]}


def command(binary: Path, model: str, url: str, protocol: str, level: int, data_file: Path, csv_file: Path,
            duration_s: float, admin_key: str | None = None) -> list[str]:
    """One closed-loop run of batch-1 requests at `level` in flight, bounded by about `duration_s`.
    perf_analyzer reads the server's statistics, which a tritonize server answers only with its admin
    key: `-H` sends it (as perf_analyzer's own arguments, which local users can list)."""
    if protocol not in ("grpc", "http"):
        raise ValueError(f"perf_analyzer speaks grpc or http, got {protocol!r}")
    if level < 1:
        raise ValueError(f"concurrency must be 1 or more, got {level}")
    window_ms = max(int(duration_s * 1000 / WINDOWS), 100)
    return [str(binary), "-m", model, "-u", url, "-i", protocol, "-b", "1",
            "--concurrency-range", f"{level}:{level}", "--input-data", str(data_file),
            "--measurement-mode", "time_windows", "--measurement-interval", str(window_ms),
            "--max-trials", str(WINDOWS), "--stability-percentage", str(STABILITY_PERCENT), "-f", str(csv_file),
            *([] if admin_key is None else ["-H", f"{next(iter(admin_headers(admin_key, protocol)))}:{admin_key}"])]


def parse_csv(text: str) -> list[PerfAnalyzerMeasurement]:
    """Rows of a perf_analyzer `-f` CSV, by column name (versions add columns), in order of level:
    latencies in ms as in our rows, the server's breakdown in us."""
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    level_column = next((c for c in LEVEL_COLUMNS if c in header), None)
    lacking = ([] if level_column else [" / ".join(LEVEL_COLUMNS)]) + [c for c in REQUIRED_COLUMNS if c not in header]
    if lacking:
        raise ValueError(f"a perf_analyzer CSV has the columns {' or '.join(LEVEL_COLUMNS)}, "
                         f"{', '.join(REQUIRED_COLUMNS)}; this one lacks {', '.join(lacking)} "
                         f"(its header: {','.join(header) or 'none'})")
    rows = []
    for line in reader:
        server = None
        if all(line.get(column) for column in SERVER_COLUMNS):
            server = ServerTimes(**{key: float(line[column]) for column, key in SERVER_COLUMNS.items()})
        rows.append(PerfAnalyzerMeasurement(
            mode="closed" if level_column == "Concurrency" else "open", level=float(line[level_column]),
            infer_per_s=float(line["Inferences/Second"]),
            **{key: float(line[column]) / 1e3 for column, key in LATENCY_COLUMNS.items()}, server=server))
    if not rows:
        raise ValueError("the perf_analyzer CSV has a header and no measurement")
    return sorted(rows, key=lambda r: r.level)


def run_levels(binary: Path, url: str, protocol: str, spec: ModelSpec, levels: tuple[int, ...], duration_s: float,
               work: Path, admin_key: str | None = None) -> list[PerfAnalyzerRow]:
    """perf_analyzer on the served model of `spec` at each concurrency level, one run each; a run that
    fails raises PerfAnalyzerFailed with its command and the end of its output."""
    model = spec.name
    work.mkdir(parents=True, exist_ok=True)
    data_file = work / f"{model}_input_data.json"
    data_file.write_text(json.dumps(input_data(spec)))
    rows = []
    for level in levels:
        csv_file = work / f"{model}_{protocol}_c{level}.csv"
        cmd = command(binary, model, url, protocol, level, data_file, csv_file, duration_s, admin_key)
        shown = " ".join(cmd) if admin_key is None else " ".join(cmd).replace(admin_key, "<admin key>")
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s * 4 + 60)
        except subprocess.TimeoutExpired:
            raise PerfAnalyzerFailed(f"perf_analyzer did not finish within {duration_s * 4 + 60:.0f} s: "
                                     f"{shown}") from None
        if done.returncode != 0 or not csv_file.is_file():
            tail = (done.stderr or done.stdout).strip()[-800:] or "no output"
            raise PerfAnalyzerFailed(f"perf_analyzer exited with {done.returncode} on {model} at concurrency {level}"
                                     f"{'' if done.returncode else ' without writing its CSV'}: {tail}\n"
                                     f"command: {shown}")
        rows += [PerfAnalyzerRow(**vars(m), model=model, protocol=protocol) for m in parse_csv(csv_file.read_text())]
    return rows
