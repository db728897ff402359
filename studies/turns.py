"""Measurements that take turns, for ratios that must not depend on when each side ran.

On a small shared machine the host has slow spells that last seconds, so two runs made seconds apart
can differ by more than what is being compared. Here the two sides of a ratio take turns in short
blocks until the time is spent (bench/rounds.py), so a slow spell falls on both alike:

- `floor_ratio`: a model's batch-1 gRPC p50 over its do-nothing twin's (what the model's own path
  costs above the transport and the Python backend), per setup (placement and idle policy);
- `scaling_ratio`: a model's throughput at concurrency 8 over concurrency 1 (what dynamic batching
  gains), per load generator and setup.

The project's own benchmark (studies/project.py) judges its targets on these; their records are the
report's (bench/report/project.py).
"""
from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..bench import rounds as alternating
from ..bench.load.served import (
    LEAN_HTTP,
    ServedRow,
    ServerCounts,
    endpoint,
    model_statistics,
    run_load,
    sender_factory,
    server_breakdown,
    settled_statistics,
)
from ..bench.report.project import FloorResult, PooledLevel, ScalingResult
from ..model_repository.writer import NOOP_SUFFIX
from ..models import get_spec
from ..serving.idle import poll_idle, resting_entries
from ..serving.placement import pinned
from ..serving.server import TritonServer
from ..timing import quartiles

STUBS_ALONE = "stubs alone"  # the placement that moves only the stubs (serving/placement.py)
FLOOR_BLOCK = 100  # requests to one model before the other takes its turn: short against the host's slow spells
FLOOR_WARMUP = 20
SCALING_CLIENTS = {LEAN_HTTP: "lean HTTP load generator", "grpc": "tritonclient gRPC load generator"}
SCALING_LEVELS = {"c1": 1, "c8": 8}  # throughput at concurrency 8 over concurrency 1
SCALING_WINDOW_S = 0.4  # how long one level runs before the other takes its turn


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


def floor_ratio(setups: list[ServedSetup], model: str, seconds: float) -> list[FloorResult]:
    """Per setup, the batch-1 gRPC p50 of `model` over its do-nothing twin's. One client at
    concurrency 1 sends blocks of FLOOR_BLOCK requests, taking turns over the models and the setups
    until `seconds` are spent. Also the spread of the per-block ratios, how often per request the
    host's cores entered an idle state they must be woken from (a host-wide count), and the server's
    own breakdown per model (statistics read after every block, so each setup's share is its own even
    where two setups are one server)."""
    spec = get_spec(model)
    names = (model, model + NOOP_SUFFIX)
    senders = {(s.label, n): sender_factory("grpc", s.server.grpc_url, n, spec)() for s in setups for n in names}
    stats_of = {(s.label, n): (s.server.grpc_url, n) for s in setups for n in names}  # setups may share a server
    admin_key = {s.server.grpc_url: s.server.admin_key for s in setups}  # statistics need the server's admin key
    last_stats = {k: model_statistics(*k, admin_key[k[0]]) for k in set(stats_of.values())}
    for send in senders.values():
        for _ in range(FLOOR_WARMUP):
            send()
    warmed = Counter(stats_of.values())
    last_stats = {k: settled_statistics(*k, stats.success_count + FLOOR_WARMUP * warmed[k], admin_key=admin_key[k[0]])
                  for k, stats in last_stats.items()}
    latencies: dict[tuple, list[float]] = {k: [] for k in senders}
    block_p50s: dict[tuple, list[float]] = {k: [] for k in senders}
    resting = dict.fromkeys(senders, 0)
    server = {k: ServerCounts() for k in senders}
    span = [time.time()]
    for _, order in alternating.rounds(setups, seconds=seconds):
        for setup in order:
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
                    now = settled_statistics(*stats_key, last_stats[stats_key].success_count + FLOOR_BLOCK,
                                             admin_key=admin_key[stats_key[0]])
                    server[key] = server[key].plus(last_stats[stats_key], now)
                    last_stats[stats_key] = now
                    latencies[key] += block
                    block_p50s[key].append(float(np.median(block)))
    span.append(time.time())
    out = []
    for setup in setups:
        label = setup.label
        ours, floor = (float(np.median(latencies[label, n])) for n in names)
        block_ratios = np.array(block_p50s[label, names[0]]) / np.array(block_p50s[label, names[1]])
        out.append(FloorResult(
            model=model, setup=label, placement=setup.placement, where=setup.where, idle=setup.idle, p50_ms=ours,
            noop_p50_ms=floor, ratio=ours / floor, requests={n: len(latencies[label, n]) for n in names},
            blocks=len(block_ratios), block_requests=FLOOR_BLOCK, measured_s=span,
            block_ratio_quartiles=quartiles(block_ratios),
            resting_idle_entries_per_request={n: resting[label, n] / len(latencies[label, n]) for n in names},
            server={n: server_breakdown(ServerCounts(), server[label, n]) for n in names}))
    return out


def scaling_ratio(setups: list[ServedSetup], model: str, seconds: float) -> list[ScalingResult]:
    """Per setup and load generator (SCALING_CLIENTS), `model`'s throughput at concurrency 8 over
    concurrency 1 (dynamic batching). The two levels take turns in windows of SCALING_WINDOW_S, over
    the load generators and the setups, until `seconds` are spent (at least one turn each). Also the
    spread of the per-turn ratios."""
    spec = get_spec(model)
    pairs = [(setup, protocol) for protocol in SCALING_CLIENTS for setup in setups]
    windows: dict[tuple, list[ServedRow]] = {(s.label, p, name): [] for s, p in pairs for name in SCALING_LEVELS}
    span = [time.time()]
    for _, order in alternating.rounds(pairs, seconds=seconds):
        for setup, protocol in order:
            with setup.measuring():
                for name, level in SCALING_LEVELS.items():
                    windows[setup.label, protocol, name].append(run_load(
                        setup.server.grpc_url, endpoint(setup.server, protocol), protocol, model, spec, level=level,
                        duration_s=SCALING_WINDOW_S, admin_key=setup.server.admin_key))
    span.append(time.time())
    rows = []
    for setup, protocol in pairs:
        c1, c8 = (windows[setup.label, protocol, name] for name in SCALING_LEVELS)
        turn_ratios = [_ratio(high.infer_per_s, low.infer_per_s) for low, high in zip(c1, c8)]
        levels = {name: _pooled(windows[setup.label, protocol, name]) for name in SCALING_LEVELS}
        rows.append(ScalingResult(model=model, setup=setup.label, idle=setup.idle, protocol=protocol, turns=len(c1),
                                  window_s=SCALING_WINDOW_S, measured_s=span, levels=levels,
                                  ratio=_ratio(levels["c8"].infer_per_s, levels["c1"].infer_per_s),
                                  turn_ratio_quartiles=quartiles(turn_ratios)))
    return rows


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")  # a level that answered nothing: no ratio, and no target met


def _pooled(windows: list[ServedRow]) -> PooledLevel:
    """Throughput over the windows' summed time; the mean batch over all the executions the server
    made for them (warm-up requests included); each core's busy fraction weighted by window length."""
    ok, seconds = sum(w.ok for w in windows), sum(w.duration_s for w in windows)
    executions = sum(w.server.executions for w in windows)
    return PooledLevel(
        requests=ok, errors=sum(w.errors for w in windows), infer_per_s=ok / seconds,
        mean_batch=sum(w.server.requests for w in windows) / executions if executions else float("nan"),
        window_p50_ms_median=float(np.median([w.p50_ms for w in windows])),
        cores_busy={core: sum(w.cores_busy[core] * w.duration_s for w in windows) / seconds
                    for core in windows[0].cores_busy})


def servers_in_turns(servers: dict[str, TritonServer], models: list[str], levels: tuple[int, ...], rounds: int,
                     duration_s: float, protocol: str = LEAN_HTTP,
                     progress: Callable[[str], None] = lambda _: None) -> dict[tuple[str, int, str], list[ServedRow]]:
    """Two or more servers' configs side by side (a change against the defaults before it, say): every
    model at every closed-loop level on each server in turn, round after round, the servers' order
    reversed every other round so that neither always runs first. Rows by (model, level, server name)."""
    rows: dict[tuple[str, int, str], list[ServedRow]] = {}
    for round_no, order in alternating.rounds(list(servers.items()), count=rounds, order=alternating.REVERSED):
        for model in models:
            for level in levels:
                for name, server in order:
                    row = run_load(server.grpc_url, endpoint(server, protocol), protocol, model, get_spec(model),
                                   level=level, duration_s=duration_s, admin_key=server.admin_key)
                    rows.setdefault((model, level, name), []).append(row)
                    progress(f"round {round_no}/{rounds}: {model} at {level} on {name}: "
                             f"{row.throughput_rps:.0f} req/s")
    return rows
