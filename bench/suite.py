"""`tritonize bench`: the whole suite, one report.

1. In-process latency: pytest-benchmark over `test_inprocess.py` (every backend row runs or is
   skipped with its reason, and the reasons go into the report).
2. Served: a repository of the models plus a do-nothing twin of each (`<model>_noop`), one real
   server; a closed-loop concurrency sweep with tritonclient over gRPC and HTTP and with the lean
   HTTP sender (bench/lean_http.py: what the server can do when the load generator costs little),
   an open-loop (Poisson) run, and the server's own breakdown per run. With two or more cores the
   server and the load generator share the lower half and the model instances get the upper half
   (serving/placement.py); the MLP's floor is then also measured, alternating, on an unplaced
   server and on one whose stubs alone have the upper half, so the report shows what the placement
   is worth and what sharing the stub's core with its instance thread costs. Where the host allows it, the
   MLP's floor and the CNN's scaling are measured again with idle cores polling instead of halting
   (serving/idle.py), so the report also shows what the host's wake-ups cost; those come last, after
   every measurement with the host's own idle policy, since polling's effect outlasts it. The two targets are
   judged on measurements that take turns in short blocks (the MLP with its do-nothing twin, the CNN's
   concurrency 1 with its concurrency 8), never on runs made seconds apart.
3. Optionally a dynamic-batching sweep (Model Analyzer style) for one model.
4. Where a perf_analyzer binary is found, perf_analyzer on the same models and concurrency levels over
   gRPC (bench/perf_analyzer.py), beside our rows; where none is, the report says so and how to get it.
5. The targets, as ratios measured side by side in this run, and the report files.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import socket
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from tritonize.artifacts import DEFAULT_RESULTS, RESULTS_FILE, atomic_dir, check_replaceable, tool_versions
from tritonize.bench import perf_analyzer
from tritonize.bench.report import write_report
from tritonize.bench.served import (LEAN_HTTP, add_statistics, endpoint, model_statistics, run_load, sender_factory,
                                    server_breakdown, settled_statistics, zero_statistics)
from tritonize.bench.sweep import batching_sweep, write_back, write_back_target
from tritonize.serving.idle import describe as describe_idle
from tritonize.serving.idle import poll_idle, poll_idle_unavailable, resting_entries
from tritonize.models import get_spec
from tritonize.serving.placement import Placement, available_cpus, pinned
from tritonize.model_repository.config import TEXT_SUFFIX
from tritonize.model_repository.writer import NOOP_SUFFIX, build_repository
from tritonize.serving.server import TritonServer
from tritonize.timing import quartiles

HERE = Path(__file__).parent
SCALING_MODEL = "cnn"  # the model of the dynamic-batching scaling target
SCALING_CLIENTS = {LEAN_HTTP: "lean HTTP load generator", "grpc": "tritonclient gRPC load generator"}
SCALING_LEVELS = {"c1": 1, "c8": 8}  # the target: throughput at concurrency 8 over concurrency 1
SCALING_WINDOW_S = 0.4  # how long one level runs before the other takes its turn
POLLING = ", idle cores polling"
STUBS_ALONE = "stubs alone"  # the placement that moves only the stubs (serving/placement.py)
FLOOR_BLOCK = 100  # requests to one model before the other takes its turn: about 40 ms here
FLOOR_WARMUP = 20


@dataclass
class SuiteOptions:
    models: list[str]
    artifacts: Path
    results_root: Path = DEFAULT_RESULTS
    quick: bool = False
    protocols: tuple[str, ...] = ("grpc", "http", LEAN_HTTP)
    grpc_levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    http_levels: tuple[int, ...] = (1, 8)
    lean_levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    duration_s: float = 3.0
    floor_seconds: float = 60.0  # for the MLP's floor ratio, over all its setups
    scaling_seconds: float = 30.0  # for the CNN's scaling ratio, over its load generators and setups
    sweep_model: str | None = None
    sweep_write_back: Path | None = None  # a repository whose config gets the sweep's best settings
    perf_analyzer: Path | None = None  # the binary to run beside ours (default: the one on PATH, if any)
    placement: bool = True  # split the cores between the server (and load generator) and the instances
    compare_placements: bool = True  # also measure the MLP floor unplaced and with the stubs alone
    compare_poll_idle: bool = True  # also measure the MLP floor with idle cores polling
    compare_idle_scaling: bool = True  # and the CNN's scaling, taking turns with the host's idle policy
    inprocess: bool = True
    served: bool = True
    skipped: dict = field(default_factory=dict)

    @classmethod
    def quick_defaults(cls, **kw) -> "SuiteOptions":
        """The --quick run's settings; `kw` sets the rest and may override them."""
        return cls(**{**dict(quick=True, grpc_levels=(1, 4, 8), http_levels=(1, 8), lean_levels=(1, 8), duration_s=1.5,
                             floor_seconds=14.0, scaling_seconds=5.0, compare_placements=False,
                             compare_idle_scaling=False), **kw})

    def levels(self, protocol: str) -> tuple[int, ...]:
        return {"grpc": self.grpc_levels, "http": self.http_levels, LEAN_HTTP: self.lean_levels}[protocol]


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = "none"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"host": socket.gethostname(), "platform": platform.platform(), "cpu": cpu, "cores": os.cpu_count(),
            "memory_gb": round(mem, 1), "gpu": gpu, "cpuidle": describe_idle()}


def git_commit(cwd: Path = HERE) -> str:
    """The checkout's short commit, with "-dirty" when tracked files outside bench/results differ from
    it (the report then measured code that no commit holds); "unknown" outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)bench/results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if changed else "")


class _SkipCollector:
    """A pytest plugin that keeps each skipped benchmark's reason for the report."""

    def __init__(self):
        self.skipped: dict[str, str] = {}

    def pytest_runtest_logreport(self, report):
        if report.skipped and isinstance(report.longrepr, tuple):
            row = report.nodeid.split("::")[-1].removeprefix("test_latency")
            self.skipped[f"in-process {row}"] = report.longrepr[2].removeprefix("Skipped: ")


def run_inprocess(opts: SuiteOptions, work: Path) -> tuple[list[dict], dict]:
    out = work / "pytest-benchmark.json"
    collector = _SkipCollector()
    args = [str(HERE / "test_inprocess.py"), "-q", "-p", "no:cacheprovider", f"--rootdir={HERE}",
            f"--artifacts={opts.artifacts}", f"--models={','.join(opts.models)}", "--batches=1,32",
            f"--benchmark-json={out}", "--benchmark-disable-gc"]
    if opts.quick:
        args += ["--quick", "--benchmark-max-time=0.2", "--benchmark-min-rounds=10"]
    else:
        args += ["--benchmark-min-rounds=20"]
    code = pytest.main(args, plugins=[collector])
    if code not in (0, 5) or not out.exists():
        raise RuntimeError(f"the in-process benchmarks failed (pytest exit code {code})")
    rows = []
    for b in json.loads(out.read_text())["benchmarks"]:
        s, info = b["stats"], b["extra_info"]
        rows.append({"model": info["model"], "batch": info["batch"], "backend": info["backend"],
                     "median_us": s["median"] * 1e6, "iqr_us": s["iqr"] * 1e6, "mean_us": s["mean"] * 1e6,
                     "stddev_us": s["stddev"] * 1e6, "min_us": s["min"] * 1e6, "rounds": s["rounds"]})
    rows.sort(key=lambda r: (r["model"], r["batch"], r["median_us"]))
    return rows, collector.skipped


@dataclass(frozen=True)
class ServedSetup:
    """A running server, the cores its load generator runs on, and whether idle cores poll meanwhile."""
    server: TritonServer
    client_cpus: frozenset[int]
    poll_idle: bool = False

    @property
    def placement(self) -> str:
        """The placement's name (split, stubs alone or none), from the server's own."""
        placement = self.server.placement
        return "none" if placement is None else STUBS_ALONE if placement.stubs_alone else "split"

    @property
    def label(self) -> str:
        return self.placement + (", poll idle" if self.poll_idle else "")

    @property
    def idle(self) -> str:
        return "poll" if self.poll_idle else "default"

    @property
    def where(self) -> str:
        placement = self.server.placement
        return placement.describe() if placement else "the OS schedules the server, its stubs and the load generator"

    @contextlib.contextmanager
    def measuring(self):
        with pinned(self.client_cpus), (poll_idle() if self.poll_idle else contextlib.nullcontext()):
            yield


def _turns(seconds: float) -> Iterator[None]:
    """One iteration per turn until `seconds` have passed, at least one: measurements that take turns
    inside the loop share the host's slow spells (they last seconds here)."""
    deadline = time.monotonic() + seconds
    while True:
        yield
        if time.monotonic() >= deadline:
            return


def floor_ratio(setups: list[ServedSetup], model: str, opts: SuiteOptions) -> dict[str, dict]:
    """Per setup, the batch-1 gRPC p50 of `model` over its do-nothing twin's. One client at
    concurrency 1 sends blocks of FLOOR_BLOCK requests, taking turns over the models and the setups
    until `opts.floor_seconds` are spent, so that a slow spell of the host (they last seconds here)
    falls on both models alike instead of on whichever ran then. Also the spread of the per-block
    ratios, how often per request the host's cores entered an idle state they must be woken from
    (a host-wide count), and the server's own breakdown per model (statistics read after every block,
    so each setup's share is its own even where two setups are one server)."""
    spec = get_spec(model)
    names = (model, model + NOOP_SUFFIX)
    senders = {(s.label, n): sender_factory("grpc", s.server.grpc_url, n, spec)() for s in setups for n in names}
    stats_of = {(s.label, n): (s.server.grpc_url, n) for s in setups for n in names}  # setups may share a server
    last_stats = {k: model_statistics(*k) for k in set(stats_of.values())}
    for send in senders.values():
        for _ in range(FLOOR_WARMUP):
            send()
    warmed = Counter(stats_of.values())
    last_stats = {k: settled_statistics(*k, stats["success_count"] + FLOOR_WARMUP * warmed[k])
                  for k, stats in last_stats.items()}
    latencies = {k: [] for k in senders}
    block_p50s = {k: [] for k in senders}
    resting = dict.fromkeys(senders, 0)
    server = {k: zero_statistics() for k in senders}
    span = [time.time()]
    for _ in _turns(opts.floor_seconds):
        for setup in setups:
            with setup.measuring():
                for name in names:
                    key, send, block = (setup.label, name), senders[setup.label, name], []
                    before = resting_entries()
                    for _ in range(FLOOR_BLOCK):
                        start = time.perf_counter()
                        send()
                        block.append((time.perf_counter() - start) * 1e3)
                    resting[key] += resting_entries() - before
                    stats_key = stats_of[key]
                    now = settled_statistics(*stats_key, last_stats[stats_key]["success_count"] + FLOOR_BLOCK)
                    server[key] = add_statistics(server[key], last_stats[stats_key], now)
                    last_stats[stats_key] = now
                    latencies[key] += block
                    block_p50s[key].append(float(np.median(block)))
    span.append(time.time())
    out = {}
    for setup in setups:
        label = setup.label
        ours, floor = (float(np.median(latencies[label, n])) for n in names)
        block_ratios = np.array(block_p50s[label, names[0]]) / np.array(block_p50s[label, names[1]])
        out[label] = {"model": model, "placement": setup.placement, "where": setup.where, "idle": setup.idle,
                      "p50_ms": ours, "noop_p50_ms": floor, "ratio": ours / floor,
                      "requests": {n: len(latencies[label, n]) for n in names}, "blocks": len(block_ratios),
                      "block_requests": FLOOR_BLOCK, "measured_s": span,
                      "block_ratio_quartiles": quartiles(block_ratios),
                      "resting_idle_entries_per_request": {n: resting[label, n] / len(latencies[label, n])
                                                           for n in names},
                      "server": {n: server_breakdown(zero_statistics(), server[label, n]) for n in names}}
    return out


def served_text(server: TritonServer, spec, opts: SuiteOptions, progress: Callable[[str], None]) -> list[dict]:
    """A text model as its users call it: sentences in through `<model>_text` (tokenized on the
    server), gRPC, over the concurrency levels; infer/s is sentences per second."""
    rows = []
    for level in opts.grpc_levels:
        progress(f"served: {spec.name} text, concurrency {level}")
        rows.append(run_load(server.grpc_url, server.grpc_url, "grpc", spec.name + TEXT_SUFFIX, spec, level=level,
                             duration_s=opts.duration_s, text=True))
    return rows


def served_models(models: list[str]) -> list[str]:
    """The models the served part runs: the ONNX ones (the kernel models run in Triton's interpreter here, untimed)."""
    return [m for m in models if get_spec(m).runtime == "onnx"]


def run_served(opts: SuiteOptions, work: Path, progress: Callable[[str], None]) -> dict:
    served = served_models(opts.models)
    for m in set(opts.models) - set(served):
        opts.skipped[f"served {m}"] = ("runs Triton kernels; without a GPU they run in Triton's interpreter, "
                                       "which is checked for correctness in the tests, not timed")
    repo = work / "model_repository"
    build_repository([get_spec(m) for m in served], opts.artifacts, repo, "cpu", noop_baselines=True)
    placement = Placement.split() if opts.placement else None
    if opts.placement and placement is None:
        opts.skipped["CPU placement"] = (f"needs two or more cores in one contiguous upper half, this process has "
                                         f"{sorted(available_cpus())}")
    poll_reason = poll_idle_unavailable() if opts.compare_poll_idle else "not requested (--no-poll-idle)"
    if poll_reason:
        opts.skipped["the MLP floor and the CNN scaling with idle cores polling"] = poll_reason
    elif not opts.compare_idle_scaling:
        opts.skipped["the CNN scaling with idle cores polling"] = "not requested (a --quick run leaves it to the full suite)"
    out: dict = {"served": [], "placement": placement.describe() if placement else "none (the OS schedules everything)"}
    polling = poll_reason is None
    with TritonServer(repo, placement=placement) as server:
        main = ServedSetup(server, placement.server_cpus if placement else available_cpus())
        # Everything with the host's own idle policy first, then with idle cores polling: after a spell
        # of polling this host wakes its cores faster for a while, so windows measured between or after
        # polled ones read too fast (the CNN at concurrency 1 ran 22% faster taking turns with polled
        # windows than alone, while concurrency 8, bound by the cores, did not change).
        floors = _mlp_floors(repo, main, opts, progress, poll_idle=False) if "mlp" in served else {}
        with pinned(main.client_cpus):
            _served_rows(server, repo, served, opts, progress, out)
            _perf_analyzer_rows(server, served, opts, work, progress, out)
        if SCALING_MODEL in served:
            out["scaling"] = scaling_ratio([main], SCALING_MODEL, opts, progress)
        if polling and "mlp" in served:
            floors.update(_mlp_floors(repo, main, opts, progress, poll_idle=True))
        if polling and SCALING_MODEL in served and opts.compare_idle_scaling:
            out["scaling"] += scaling_ratio([replace(main, poll_idle=True)], SCALING_MODEL, opts, progress)
    if floors:
        out["floor"] = floors[main.label]
        if len(floors) > 1:
            out["floor_by_setup"] = floors
    if opts.sweep_model is None:
        opts.skipped["dynamic-batching sweep"] = "not requested (`tritonize bench --sweep MODEL`)"
    return out


def _mlp_floors(repo: Path, main: ServedSetup, opts: SuiteOptions, progress: Callable[[str], None],
                poll_idle: bool) -> dict[str, dict]:
    """The MLP's floor ratio on the main server, with the host's own idle policy or with idle cores
    polling. When the main server is placed, also on servers started beside it for the comparison:
    one with the stubs alone on the instance cores and, with the host's own idle policy, an unplaced
    one (from this process while it is unpinned, so on every core)."""
    setups = [replace(main, poll_idle=poll_idle)]
    others = main.placement == "split" and opts.compare_placements
    if main.placement == "split" and not opts.compare_placements and not poll_idle:
        opts.skipped["the MLP floor unplaced and with the stubs alone"] = ("not requested (a --quick run leaves it "
                                                                            "to the full suite)")
    with contextlib.ExitStack() as servers:
        if others:
            models = ["mlp", "mlp" + NOOP_SUFFIX]
            if not poll_idle:
                setups.append(ServedSetup(servers.enter_context(TritonServer(repo, models)), available_cpus()))
            alone = servers.enter_context(TritonServer(repo, models, placement=replace(main.server.placement,
                                                                                       stubs_alone=True)))
            setups.append(ServedSetup(alone, main.client_cpus, poll_idle))
        progress(f"served: mlp vs its do-nothing twin ({'; '.join(s.label for s in setups)})")
        return floor_ratio(setups, "mlp", opts)


def scaling_ratio(setups: list[ServedSetup], model: str, opts: SuiteOptions,
                  progress: Callable[[str], None]) -> list[dict]:
    """Per setup and load generator of the scaling target, `model`'s throughput at concurrency 8 over
    concurrency 1 (dynamic batching). The two levels take turns in windows of SCALING_WINDOW_S, over
    the load generators and the setups, until `opts.scaling_seconds` are spent (at least one turn
    each), so that a slow spell of the host falls on both levels alike. Also the spread of the
    per-turn ratios."""
    spec = get_spec(model)
    pairs = [(setup, protocol) for protocol in SCALING_CLIENTS for setup in setups]
    windows: dict[tuple, list[dict]] = {(s.label, p, name): [] for s, p in pairs for name in SCALING_LEVELS}
    progress(f"served: {model} concurrency 1 and 8 taking turns "
             f"({'; '.join(f'{p}, {s.label}' for s, p in pairs)})")
    span = [time.time()]
    for _ in _turns(opts.scaling_seconds):
        for setup, protocol in pairs:
            with setup.measuring():
                for name, level in SCALING_LEVELS.items():
                    windows[setup.label, protocol, name].append(run_load(
                        setup.server.grpc_url, endpoint(setup.server, protocol), protocol, model, spec, level=level,
                        duration_s=SCALING_WINDOW_S))
    span.append(time.time())
    rows = []
    for setup, protocol in pairs:
        c1, c8 = (windows[setup.label, protocol, name] for name in SCALING_LEVELS)
        turn_ratios = [_ratio(high["infer_per_s"], low["infer_per_s"]) for low, high in zip(c1, c8)]
        levels = {name: _pooled(windows[setup.label, protocol, name]) for name in SCALING_LEVELS}
        rows.append({"model": model, "setup": setup.label, "idle": setup.idle,
                     "protocol": protocol, "turns": len(c1), "window_s": SCALING_WINDOW_S, "measured_s": span,
                     "levels": levels,
                     "ratio": _ratio(levels["c8"]["infer_per_s"], levels["c1"]["infer_per_s"]),
                     "turn_ratio_quartiles": quartiles(turn_ratios)})
    return rows


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")  # a level that answered nothing: no ratio, and no target met


def _pooled(windows: list[dict]) -> dict:
    """One level's load windows as one run: throughput over their summed time; the mean batch over
    all the executions the server made for them (warm-up requests included); each core's busy
    fraction weighted by the windows' lengths."""
    ok, seconds = sum(w["ok"] for w in windows), sum(w["duration_s"] for w in windows)
    executions = sum(w["server_executions"] for w in windows)
    return {"requests": ok, "errors": sum(w["errors"] for w in windows), "infer_per_s": ok / seconds,
            "mean_batch": sum(w["server_requests"] for w in windows) / executions if executions else float("nan"),
            "window_p50_ms_median": float(np.median([w["p50_ms"] for w in windows])),
            "cores_busy": {core: sum(w["cores_busy"][core] * w["duration_s"] for w in windows) / seconds
                           for core in windows[0]["cores_busy"]}}


def _served_rows(server: TritonServer, repo: Path, served: list[str], opts: SuiteOptions,
                 progress: Callable[[str], None], out: dict) -> None:
    """The concurrency sweeps, the open-loop runs and the optional batching sweep, into `out`."""
    for model in served:
        spec = get_spec(model)
        if spec.text is not None:
            out["served"] += served_text(server, spec, opts, progress)
            continue
        for protocol in opts.protocols:
            url = endpoint(server, protocol)
            for level in opts.levels(protocol):
                progress(f"served: {model} {protocol} concurrency {level}")
                out["served"].append(run_load(server.grpc_url, url, protocol, model, spec, level=level,
                                              duration_s=opts.duration_s))
        c1 = next(r for r in out["served"] if r["model"] == model and r["protocol"] == "grpc" and r["level"] == 1)
        rate = round(0.5 * c1["throughput_rps"], 1)  # half the single-client capacity: a loaded but stable server
        progress(f"served: {model} open loop at {rate} req/s")
        out["served"].append(run_load(server.grpc_url, server.grpc_url, "grpc", model, spec, mode="open",
                                      level=rate, duration_s=opts.duration_s))
    if opts.sweep_model:
        progress(f"dynamic-batching sweep of {opts.sweep_model}")
        out["sweep"] = batching_sweep(server, repo, get_spec(opts.sweep_model), duration_s=opts.duration_s)
        if opts.sweep_write_back and out["sweep"]["best"]:
            out["sweep"]["written_to"] = str(write_back(opts.sweep_write_back, opts.sweep_model, out["sweep"]["best"]))


def _perf_analyzer_rows(server: TritonServer, served: list[str], opts: SuiteOptions, work: Path,
                        progress: Callable[[str], None], out: dict) -> None:
    """perf_analyzer on the tensor models at our gRPC levels, into `out["perf_analyzer"]`; where there
    is no binary, or a run fails, the report's skipped list says so (the rest of the run is kept)."""
    binary = perf_analyzer.find_binary(opts.perf_analyzer)
    if binary is None:
        opts.skipped["perf_analyzer beside our load generator"] = (f"no {perf_analyzer.BINARY} on PATH; "
                                                                   f"{perf_analyzer.INSTALL_HINT}")
        return
    out["perf_analyzer"] = []
    for spec in (get_spec(m) for m in served):
        if spec.text is not None:  # served to our clients as text only (served_text), so nothing to set beside
            continue
        progress(f"served: {spec.name} with perf_analyzer, concurrency {', '.join(map(str, opts.grpc_levels))}")
        try:
            out["perf_analyzer"] += perf_analyzer.run_levels(binary, server.grpc_url, "grpc", spec, opts.grpc_levels,
                                                             opts.duration_s, work / "perf_analyzer")
        except perf_analyzer.PerfAnalyzerFailed as e:
            opts.skipped[f"perf_analyzer on {spec.name}"] = f"failed: {e}"


def _floor_targets(floor: dict | None, condition: str) -> list[dict]:
    if not floor:
        return []
    return [{"name": f"served mlp batch-1 gRPC p50 / do-nothing model p50{condition}",
             "measured": f"{floor['ratio']:.3f}x", "goal": "<= 1.10x", "met": floor["ratio"] <= 1.10},
            {"name": f"served mlp batch-1 gRPC p50 (absolute){condition}", "measured": f"{floor['p50_ms']:.3f} ms",
             "goal": "<= 0.5 ms", "met": floor["p50_ms"] <= 0.5}]


def _scaling_targets(scaling: list[dict], condition: str) -> list[dict]:
    out = []
    for r in scaling:
        errors = sum(level["errors"] for level in r["levels"].values())
        out.append({"name": f"{r['model']} throughput, concurrency 8 / concurrency 1 (dynamic batching), "
                            f"{SCALING_CLIENTS[r['protocol']]}{condition}",
                    "measured": f"{r['ratio']:.2f}x (per-turn quartiles "
                                f"{' / '.join(f'{q:.2f}' for q in r['turn_ratio_quartiles'])}; mean batch "
                                f"{r['levels']['c8']['mean_batch']:.2f}{f'; {errors} failed requests' if errors else ''})",
                    "goal": ">= 3x", "met": r["ratio"] >= 3.0 and not errors})
    return out


def targets(results: dict) -> list[dict]:
    """Judged on the main setup with the host's own idle policy, then again with idle cores polling
    where that was measured."""
    polled = next((f for f in results.get("floor_by_setup", {}).values()
                   if f["idle"] == "poll" and f["placement"] == results["floor"]["placement"]), None)
    scaling = results.get("scaling", [])
    by_idle = {idle: [r for r in scaling if r["idle"] == idle] for idle in ("default", "poll")}
    return (_floor_targets(results.get("floor"), "") + _scaling_targets(by_idle["default"], "")
            + _floor_targets(polled, POLLING) + _scaling_targets(by_idle["poll"], POLLING))


def check_options(opts: SuiteOptions) -> None:
    """Fail before any work on what would only fail (or be silently dropped) at the end of a long run."""
    for m in opts.models:
        get_spec(m)
    if not opts.duration_s > 0:
        raise ValueError(f"--duration expects seconds per load run > 0, got {opts.duration_s}")
    if opts.perf_analyzer is not None:
        perf_analyzer.find_binary(opts.perf_analyzer)
    if opts.sweep_write_back is not None and opts.sweep_model is None:
        raise ValueError("--write-back REPO writes the sweep's best config, so it needs --sweep MODEL too")
    if opts.sweep_model is None:
        return
    if not opts.served:
        raise ValueError(f"--sweep {opts.sweep_model} runs against the served models; it cannot go with --no-served")
    served = served_models(opts.models)
    if opts.sweep_model not in served:
        raise ValueError(f"--sweep expects one of the models this run serves ({', '.join(served) or 'none'}), "
                         f"got {opts.sweep_model!r}")
    if opts.sweep_write_back is not None:
        write_back_target(opts.sweep_write_back, opts.sweep_model)


def check_results_root(root: Path) -> None:
    """Make sure the report can be written under `root` (creating it), before minutes of measuring."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryDirectory(dir=root).cleanup()
    except OSError as e:
        raise ValueError(f"--results expects a folder the report can be written to; {root}: {e.strerror or e}") from None


def run_suite(opts: SuiteOptions, progress: Callable[[str], None] = lambda _: None) -> Path:
    """Run everything asked for and write `<results_root>/<host>-<date>[-quick]/`; returns that folder."""
    check_options(opts)
    check_results_root(opts.results_root)
    now = dt.datetime.now(dt.timezone.utc)
    results = {"date": now.date().isoformat(), "started": now.isoformat(timespec="seconds"),
               "machine": machine_info(), "versions": tool_versions(), "git_commit": git_commit(),
               "quick": opts.quick, "models": opts.models}
    # A quick run (the main job's) never replaces a full report of the same day.
    folder = opts.results_root / f"{results['machine']['host']}-{results['date']}{'-quick' if opts.quick else ''}"
    check_replaceable(folder, RESULTS_FILE)
    with tempfile.TemporaryDirectory(prefix="tritonize-bench-") as tmp:
        work = Path(tmp)
        if opts.inprocess:
            progress("in-process latency (pytest-benchmark)")
            results["inprocess"], skipped = run_inprocess(opts, work)
            opts.skipped.update(skipped)
        if opts.served:
            results.update(run_served(opts, work, progress))
    results["targets"] = targets(results)
    results["skipped"] = opts.skipped
    with atomic_dir(folder, marker=RESULTS_FILE) as tmp_folder:
        write_report(results, tmp_folder)
    return folder
