"""A dynamic-batching sweep, as Triton's Model Analyzer does it: for each combination of
max_queue_delay_microseconds x instance count x preferred batch sizes, reload the model with that
config (explicit model control, config override: no server restart), put it under a closed-loop
load, and pick the highest throughput whose p99 stays within a latency budget. The load comes from
the lean HTTP sender by default, so the sweep ranks what the server can do, not what the client can."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import tritonclient.grpc as grpcclient
from google.protobuf import json_format, text_format

from ..model_repository.config import parse_pbtxt, to_pbtxt
from ..models.spec import ModelSpec
from ..serving.admin import admin_headers
from .record import Record
from .served import LEAN_HTTP, endpoint, run_load

DEFAULT_GRID = {"max_queue_delay_us": (0, 200, 1000), "instance_count": (1, 2), "preferred_batch_sizes": ((), (4, 8))}
DEFAULT_P99_BUDGET_MS = 20.0  # the sweep's latency budget when the run was given no p99 SLO


@dataclass
class BatchingSettings(Record):
    """What the sweep varies in a model's config.pbtxt."""
    max_queue_delay_us: int
    instance_count: int
    preferred_batch_sizes: list[int]


@dataclass(kw_only=True)
class SweepConfig(BatchingSettings):
    """One setting of the grid under load."""
    throughput_rps: float
    p99_ms: float
    errors: int
    mean_batch: float
    within_budget: bool


@dataclass
class SweepResult(Record):
    model: str
    protocol: str
    concurrency: int
    p99_budget_ms: float
    configs: list[SweepConfig]
    best: SweepConfig | None  # the highest throughput within the budget, None when nothing met it
    written_to: str | None = None  # the config.pbtxt that got the best settings, if asked to


def grid_size(grid: dict | None = None) -> int:
    """How many configs `batching_sweep` measures for `grid`."""
    grid = grid or DEFAULT_GRID
    return len(grid["max_queue_delay_us"]) * len(grid["instance_count"]) * len(grid["preferred_batch_sizes"])


def _with(config, delay_us: int, instances: int, preferred: tuple[int, ...]):
    out = type(config)()
    out.CopyFrom(config)
    out.dynamic_batching.max_queue_delay_microseconds = delay_us
    del out.dynamic_batching.preferred_batch_size[:]
    out.dynamic_batching.preferred_batch_size.extend(preferred)
    out.instance_group[0].count = instances
    return out


def _load(client, model: str, config, admin_key: str | None) -> None:
    client.load_model(model, config=json_format.MessageToJson(config, preserving_proto_field_name=True),
                      headers=admin_headers(admin_key))  # model control needs the server's admin key


def batching_sweep(server, repository: Path, spec: ModelSpec, *, concurrency: int = 8, duration_s: float = 3.0,
                   p99_budget_ms: float = DEFAULT_P99_BUDGET_MS, grid: dict | None = None, protocol: str = LEAN_HTTP,
                   measured: Callable[[SweepConfig], None] = lambda _: None) -> SweepResult:
    """Every config of `grid` measured in turn (`measured` is called after each), the served config
    put back at the end, and the best one within the budget picked."""
    grid = grid or DEFAULT_GRID
    client = grpcclient.InferenceServerClient(server.grpc_url)
    base = parse_pbtxt((Path(repository) / spec.name / "config.pbtxt").read_text())
    configs = []
    try:
        for delay, instances, preferred in itertools.product(grid["max_queue_delay_us"], grid["instance_count"],
                                                             grid["preferred_batch_sizes"]):
            _load(client, spec.name, _with(base, delay, instances, tuple(preferred)), server.admin_key)
            r = run_load(server.grpc_url, endpoint(server, protocol), protocol, spec.name, spec, level=concurrency,
                         duration_s=duration_s, admin_key=server.admin_key)
            configs.append(SweepConfig(max_queue_delay_us=delay, instance_count=instances,
                                       preferred_batch_sizes=list(preferred), throughput_rps=r.throughput_rps,
                                       p99_ms=r.p99_ms, errors=r.errors, mean_batch=r.server.mean_batch,
                                       within_budget=r.p99_ms <= p99_budget_ms and r.errors == 0))
            measured(configs[-1])
    finally:
        _load(client, spec.name, base, server.admin_key)
    passing = [c for c in configs if c.within_budget]
    best = max(passing, key=lambda c: c.throughput_rps) if passing else None
    return SweepResult(model=spec.name, protocol=protocol, concurrency=concurrency, p99_budget_ms=p99_budget_ms,
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
    config = _with(config, best.max_queue_delay_us, best.instance_count, tuple(best.preferred_batch_sizes))
    tmp = path.with_name(".config.pbtxt.tmp")
    tmp.write_text(to_pbtxt(config))
    tmp.replace(path)
    return path
