"""A dynamic-batching sweep, as Triton's Model Analyzer does it: for each combination of
max_queue_delay_microseconds x instance count x preferred batch sizes x max batch size, reload the
model with that config (explicit model control, config override: no server restart) and put it
under a closed-loop load; then pick the highest throughput whose p99 stays within the latency budget
at every concurrency level and which makes no lower level worse than the served config.

It runs in two phases, so that a grid of tens of configs takes a minute or two, not one run per
config and level:
1. every config at the top level (the most clients, where batching matters) and at the lowest (one
   client: the guard against a setting that makes a lone request wait);
2. the best few of those within the budget, and the served config as the baseline, at every level,
   in turns (round by round, level by level, config by config), so that they are compared side by side;
   when none of them qualifies, the next few (up to `max_groups` groups). A finalist
   qualifies when its p99 meets the budget with no failed request at every level, and its median
   throughput at each lower level is within LOWER_LEVEL_TOLERANCE of the baseline's: a setting that makes a lone
   client wait (a queue delay, preferred sizes it cannot fill) is refused, however well it does at the
   top. The winner is the qualifying finalist with the highest top-level throughput, over both phases.

The load comes from wrk where it is installed, else from the lean HTTP sender, so the sweep ranks
what the server can do, not what the client can.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Callable

from google.protobuf import text_format

from ...model_repository.config import parse_pbtxt, to_pbtxt
from ...model_repository.tuning import BatchingSettings
from ...models.spec import ModelSpec
from ...serving.admin import TritonAdmin
from ..load import wrk
from ..load.served import LEAN_HTTP, WRK_HTTP, endpoint, run_load
from ..record import Record

DEFAULT_P99_BUDGET_MS = 20.0  # the sweep's latency budget when the run was given no p99 SLO
# How much lower a finalist's throughput may be than the served config's at a level below the top, over
# phase 2's rounds: two runs of one config differ by about this much on a shared 2-core machine, so a
# smaller margin would refuse configs for noise.
LOWER_LEVEL_TOLERANCE = 0.10
# Phase 1's guard, on one run at the lowest level: only what is clearly slower for a lone client (a queue
# delay holds each lone request for the whole delay: a half to a quarter of the throughput), because a
# lone client's latency on a VM is bimodal (an idle core's wake-up), and one run can land on either mode.
SCREEN_TOLERANCE = 0.25


@dataclass(frozen=True)
class SweepGrid:
    """What the sweep tries. Max batch sizes above the served config's are left out (it is what the
    model was exported and checked for), and so are preferred sizes above a config's max batch size."""
    max_queue_delay_us: tuple[int, ...] = (0, 500)
    instance_count: tuple[int, ...] = (1, 2)
    preferred_batch_sizes: tuple[tuple[int, ...], ...] = ((), (4, 8), (8, 32))
    max_batch_size: tuple[int, ...] = (16, 64)
    levels: tuple[int, ...] = (1, 8, 32)  # the top one ranks; the lower ones guard
    finalists: int = 3
    rounds: int = 2  # phase 2's turns: each finalist measured this many times at each level
    max_groups: int = 2  # phase 2 tries the next `finalists` when a group has no qualifying one

    def __post_init__(self) -> None:
        for name in ("max_queue_delay_us", "instance_count", "max_batch_size", "levels"):
            values = getattr(self, name)
            low = 0 if name == "max_queue_delay_us" else 1
            if not values or not all(isinstance(v, int) and v >= low for v in values):
                raise ValueError(f"the sweep's {name} expects integers >= {low}, got {values!r}")
        if not self.preferred_batch_sizes or not all(isinstance(p, tuple) for p in self.preferred_batch_sizes):
            raise ValueError(f"the sweep's preferred_batch_sizes expects tuples of sizes, got {self.preferred_batch_sizes!r}")
        if self.finalists < 1 or self.rounds < 1 or self.max_groups < 1:
            raise ValueError(f"the sweep's finalists, rounds and max_groups expect at least 1, got {self.finalists}, "
                             f"{self.rounds} and {self.max_groups}")

    @property
    def top(self) -> int:
        return max(self.levels)

    def settings(self, served: BatchingSettings) -> list[BatchingSettings]:
        """The configs to measure, the served one first (the baseline), each once."""
        out = [served]
        for delay, instances, preferred, top in itertools.product(
                self.max_queue_delay_us, self.instance_count, self.preferred_batch_sizes, self.max_batch_size):
            if top > served.max_batch_size or any(b > top for b in preferred):
                continue
            s = BatchingSettings(delay, instances, tuple(preferred), top)
            if s not in out:
                out.append(s)
        return out


DEFAULT_GRID = SweepGrid()


@dataclass
class LevelRun(Record):
    """One load run of one config."""
    level: int
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    mean_batch: float


@dataclass(kw_only=True)
class SweepConfig(Record):
    """One config of the grid and its runs (the top level first; finalists then have one per level)."""
    max_queue_delay_us: int
    instance_count: int
    preferred_batch_sizes: list[int]
    max_batch_size: int
    served: bool  # the repository's own config: the baseline
    finalist: bool = False  # measured at every level in phase 2
    runs: list[LevelRun] = field(default_factory=list)
    within_budget: bool = False  # p99 within the budget and no failed request in every run
    verdict: str = ""  # why it won or did not

    def settings(self) -> BatchingSettings:
        return BatchingSettings(self.max_queue_delay_us, self.instance_count, tuple(self.preferred_batch_sizes),
                                self.max_batch_size)

    def at(self, level: int) -> list[LevelRun]:
        return [r for r in self.runs if r.level == level]

    def throughput_at(self, level: int) -> float:
        """The median over this config's runs at `level`."""
        return median(r.throughput_rps for r in self.at(level))

    @property
    def top(self) -> LevelRun:
        """The first top-level run (what phase 1 ranked)."""
        return self.runs[0]


@dataclass
class SweepResult(Record):
    model: str
    protocol: str
    levels: list[int]
    p99_budget_ms: float
    configs: list[SweepConfig]  # the served config first
    best: SweepConfig | None  # the winner; None when no config met the budget
    written_to: str | None = None  # the config.pbtxt that got the best settings, if asked to
    tuning_file: str | None = None  # where the winner was recorded for `tritonize repo --tune`

    @property
    def baseline(self) -> SweepConfig:
        return self.configs[0]

    def describe(self) -> str:
        """What the tuning was measured on, for the tuning file and the report."""
        return (f"concurrency {', '.join(map(str, self.levels))} over {self.protocol}; p99 budget "
                f"{self.p99_budget_ms:g} ms")


def served_settings(config) -> BatchingSettings:
    return BatchingSettings(config.dynamic_batching.max_queue_delay_microseconds, config.instance_group[0].count,
                            tuple(config.dynamic_batching.preferred_batch_size), config.max_batch_size)


def grid_size(grid: SweepGrid = DEFAULT_GRID, served: BatchingSettings | None = None) -> int:
    """How many load runs `batching_sweep` makes at most (for progress bars)."""
    served = served or BatchingSettings(0, 1, (), max(grid.max_batch_size))
    phase1 = len(grid.settings(served)) * len({grid.top, min(grid.levels)})
    return phase1 + (grid.finalists + 1) * len(grid.levels) * grid.rounds * grid.max_groups


def _with(config, s: BatchingSettings):
    out = type(config)()
    out.CopyFrom(config)
    out.dynamic_batching.max_queue_delay_microseconds = s.max_queue_delay_us
    del out.dynamic_batching.preferred_batch_size[:]
    out.dynamic_batching.preferred_batch_size.extend(s.preferred_batch_sizes)
    out.instance_group[0].count = s.instance_count
    out.max_batch_size = s.max_batch_size
    return out


def _over_budget(c: SweepConfig, budget_ms: float) -> bool:
    return any(r.errors or r.p99_ms > budget_ms for r in c.runs)


def _screened_out(c: SweepConfig, baseline: SweepConfig, grid: SweepGrid, budget_ms: float) -> str:
    """Why phase 1 left `c` out."""
    low = min(grid.levels)
    over = next((r for r in c.runs if r.errors or r.p99_ms > budget_ms), None)
    if over is not None:
        return f"c{over.level}: {over.errors} failed, p99 {over.p99_ms:.3f} ms (budget {budget_ms:g} ms)"
    if c.throughput_at(low) < (1 - SCREEN_TOLERANCE) * baseline.throughput_at(low):
        return f"c{low}: {c.throughput_at(low):.0f} req/s, under {1 - SCREEN_TOLERANCE:.0%} of the served config's"
    return f"c{grid.top} {c.top.throughput_rps:.0f} req/s, below the finalists'"


def _qualifies(c: SweepConfig, baseline: SweepConfig, grid: SweepGrid, budget_ms: float) -> str:
    """Why `c` cannot win, or "" when it can (over the levels it was measured at)."""
    for r in c.runs:
        if r.errors or r.p99_ms > budget_ms:
            return f"c{r.level}: {r.errors} failed, p99 {r.p99_ms:.3f} ms (budget {budget_ms:g} ms)"
    if c is baseline:
        return ""
    for level in sorted(grid.levels)[:-1]:
        if not c.at(level):
            continue
        mine, theirs = c.throughput_at(level), baseline.throughput_at(level)
        if mine < (1 - LOWER_LEVEL_TOLERANCE) * theirs:
            return f"c{level}: {mine:.0f} req/s, below the served config's {theirs:.0f}"
    return ""


def batching_sweep(server, repository: Path, spec: ModelSpec, *, duration_s: float = 2.0,
                   p99_budget_ms: float = DEFAULT_P99_BUDGET_MS, grid: SweepGrid = DEFAULT_GRID,
                   protocol: str | None = None, measured: Callable[[SweepConfig, LevelRun], None] = lambda *_: None
                   ) -> SweepResult:
    """The grid measured in two phases (see the module's docstring; `measured` is called after each
    run), the served config put back at the end, and the winner picked. The load is wrk's where it is
    installed (bench/load/wrk.py: at 32 clients a Python sender would take the CPU the server needs), else
    the lean HTTP sender's; `protocol` picks one."""
    protocol = protocol or (WRK_HTTP if wrk.find_binary() else LEAN_HTTP)
    admin = TritonAdmin(server.grpc_url, server.admin_key)  # model control needs the server's admin key
    base = parse_pbtxt((Path(repository) / spec.name / "config.pbtxt").read_text())
    configs = [SweepConfig(max_queue_delay_us=s.max_queue_delay_us, instance_count=s.instance_count,
                           preferred_batch_sizes=list(s.preferred_batch_sizes), max_batch_size=s.max_batch_size,
                           served=i == 0)
               for i, s in enumerate(grid.settings(served_settings(base)))]

    def run(c: SweepConfig, level: int) -> None:
        r = run_load(server.grpc_url, endpoint(server, protocol), protocol, spec.name, spec, level=level,
                     duration_s=duration_s, admin_key=server.admin_key)
        c.runs.append(LevelRun(level=level, throughput_rps=r.throughput_rps, p50_ms=r.p50_ms, p99_ms=r.p99_ms,
                               errors=r.errors, mean_batch=r.server.mean_batch))
        measured(c, c.runs[-1])

    low, levels = min(grid.levels), sorted(grid.levels)
    try:
        for c in configs:  # phase 1: everything at the top level, and at the lowest, which guards a lone client
            admin.load(spec.name, _with(base, c.settings()))
            for level in dict.fromkeys((grid.top, low)):
                run(c, level)
        baseline = configs[0]
        passing = sorted((c for c in configs[1:] if not _over_budget(c, p99_budget_ms)
                          and c.throughput_at(low) >= (1 - SCREEN_TOLERANCE) * baseline.throughput_at(low)),
                         key=lambda c: -c.top.throughput_rps)
        # Phase 2, a group of finalists at a time, the baseline beside each: when none of a group qualifies
        # (more instances than cores, say, win at the top and lose a lone client), the next best are
        # tried, up to max_groups. With nothing passing phase 1, the baseline runs alone.
        for group in range(grid.max_groups):
            candidates = passing[group * grid.finalists:(group + 1) * grid.finalists]
            if group and not candidates:
                break
            turn = [baseline, *candidates]
            for c in turn:
                c.finalist = True
            for _, level in itertools.product(range(grid.rounds), levels):  # side by side, in turns
                for c in turn:
                    admin.load(spec.name, _with(base, c.settings()))
                    run(c, level)
            if any(not _qualifies(c, baseline, grid, p99_budget_ms) for c in candidates):
                break
    finally:
        try:
            admin.load(spec.name, base)
        finally:
            admin.close()
    for c in configs:
        c.within_budget = not _over_budget(c, p99_budget_ms)
        if not c.finalist:
            c.verdict = "not a finalist: " + _screened_out(c, baseline, grid, p99_budget_ms)
    qualified = []
    for c in (c for c in configs if c.finalist):
        c.verdict = _qualifies(c, baseline, grid, p99_budget_ms)
        if not c.verdict:
            qualified.append(c)
    best = max(qualified, key=lambda c: c.throughput_at(grid.top)) if qualified else None
    for c in qualified:
        c.verdict = "winner" if c is best else (f"qualified, c{grid.top} {c.throughput_at(grid.top):.0f} req/s "
                                                f"below the winner's")
    return SweepResult(model=spec.name, protocol=protocol, levels=sorted(grid.levels), p99_budget_ms=p99_budget_ms,
                       configs=configs, best=best)


def write_back_target(repository: Path, model: str):
    """The config that `write_back` would change, read and checked; a ValueError names what is wrong.
    The suite calls it before any measuring, so a wrong path fails in a second, not after the sweep."""
    path = Path(repository) / model / "config.pbtxt"
    if not path.is_file():
        raise ValueError(f"--write-back expects a model repository with {model}/config.pbtxt; {path} does not exist "
                         f"(create the repository with `tritonize repo --out {repository}`)")
    try:
        config = parse_pbtxt(path.read_text())
    except text_format.ParseError as e:
        raise ValueError(f"--write-back: {path} is not a valid Triton model config: {e}") from None
    if config.name and config.name != model:
        raise ValueError(f"--write-back: {path} configures model {config.name!r}, expected {model!r}")
    if config.max_batch_size < 1 or not config.instance_group:
        raise ValueError(f"--write-back: {path} needs max_batch_size >= 1 and an instance_group for the sweep's "
                         f"settings, it has max_batch_size {config.max_batch_size} and "
                         f"{len(config.instance_group)} instance groups")
    return path, config


def write_back(repository: Path, model: str, best: BatchingSettings) -> Path:
    """Put the sweep's best batching settings into `<repository>/<model>/config.pbtxt` (atomically)."""
    path, config = write_back_target(repository, model)
    config = _with(config, best)
    tmp = path.with_name(".config.pbtxt.tmp")
    tmp.write_text(to_pbtxt(config))
    tmp.replace(path)
    return path
