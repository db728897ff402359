"""The project's own results as a run's report holds them (`tritonize bench --project`): the records
results.json keeps and the report's sections on them.

The studies that measure and judge these (tritonize.studies: the floors and the scaling taking turns,
the targets) run from a checkout only; their results are part of the report's format, so that any
tritonize, installed or not, reads and renders every results.json.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..load.served import ServerBreakdown
from ..record import Record
from .tables import cores, table


@dataclass
class FloorResult(Record):
    """One setup's floor ratio: `model`'s p50 over its do-nothing twin's, measured taking turns."""
    model: str
    setup: str  # the setup's label: placement, and ", poll idle" when idle cores polled
    placement: str
    where: str
    idle: str  # "default" (the host's own idle policy) or "poll"
    p50_ms: float
    noop_p50_ms: float
    ratio: float
    requests: dict[str, int]  # per model name (the model and its twin)
    blocks: int
    block_requests: int
    measured_s: list[float]  # wall-clock start and end of the turns (all setups measured together)
    block_ratio_quartiles: list[float]
    resting_idle_entries_per_request: dict[str, float]  # host-wide entries into idle states that must be woken from
    server: dict[str, ServerBreakdown]  # per model name, from statistics read after every block


@dataclass
class PooledLevel(Record):
    """One concurrency level's load windows as one run."""
    requests: int
    errors: int
    infer_per_s: float
    mean_batch: float
    window_p50_ms_median: float
    cores_busy: dict[str, float]


@dataclass
class ScalingResult(Record):
    """One setup's and load generator's throughput at concurrency 8 over concurrency 1, taking turns."""
    model: str
    setup: str
    idle: str
    protocol: str
    turns: int
    window_s: float
    measured_s: list[float]
    levels: dict[str, PooledLevel]  # "c1" and "c8"
    ratio: float
    turn_ratio_quartiles: list[float]

    @property
    def errors(self) -> int:
        return sum(level.errors for level in self.levels.values())


@dataclass
class Target(Record):
    name: str
    measured: str
    goal: str
    met: bool


@dataclass
class ProjectResults(Record):
    floors: list[FloorResult] = field(default_factory=list)  # the main setup with the host's idle policy first
    scaling: list[ScalingResult] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)


def markdown(results: ProjectResults) -> list[str]:
    """The project's sections of the report: its targets, the host setups of the MLP floor, the scaling."""
    parts = ["## Project targets", "tritonize's own goals (`tritonize bench --project`), judged on ratios measured "
             "taking turns in this run; a user's constraints are the SLOs above."]
    parts.append(table(["target", "measured", "goal", "met"],
                       [[t.name, t.measured, t.goal, "yes" if t.met else "**no**"] for t in results.targets])
                 if results.targets else "No target could be judged: the run served neither mlp nor cnn.")
    floors = results.floors
    if len(floors) > 1:
        parts += ["## Host setup: placement and idle policy (served mlp, batch 1, gRPC, concurrency 1)", table(
            ["setup", "requests each", "mlp p50 ms", "do-nothing p50 ms", "ratio", "per-block ratio, quartiles",
             "resting idle entries per request (mlp / do-nothing)", "server compute infer us (mlp / do-nothing)"],
            [[f.setup, f.requests[f.model], f"{f.p50_ms:.3f}", f"{f.noop_p50_ms:.3f}", f"{f.ratio:.3f}x",
              " / ".join(f"{q:.3f}" for q in f.block_ratio_quartiles),
              " / ".join(f"{n:.2f}" for n in f.resting_idle_entries_per_request.values()),
              " / ".join(f"{b.compute_infer_us:.1f}" for b in f.server.values())] for f in floors]),
            # The block size as the run recorded it (studies/turns.py's FLOOR_BLOCK when it ran).
            f"The models and setups take turns in blocks of {floors[0].block_requests} requests, so a slow spell of "
            "the host falls on all alike. Server compute infer is the server's own count per request (statistics "
            "API): the model's call from the server to its Python stub and back, so the difference between the two "
            "is what the model's own path costs inside the server.",
            "; ".join(dict.fromkeys(f"{f.placement}: {f.where}" for f in floors))
            + ". poll idle: idle cores poll instead of entering an idle state they must be woken from, while the "
            "benchmark holds a PM QoS CPU latency request of 0 us (serving/idle.py; `tritonize serve "
            "--poll-idle` serves that way). Resting idle entries are counted over the whole host."]
    if results.scaling:
        first = results.scaling[0]
        parts += [f"## Scaling with dynamic batching (served {first.model}, concurrency 1 and 8 taking turns)", table(
            ["setup", "load generator", "turns", "c1 req/s", "c8 req/s", "c8 mean batch", "c8 / c1",
             "per-turn ratio, quartiles", "cores busy, c1", "cores busy, c8"],
            [[r.setup, r.protocol, r.turns, f"{r.levels['c1'].infer_per_s:.0f}", f"{r.levels['c8'].infer_per_s:.0f}",
              f"{r.levels['c8'].mean_batch:.2f}", f"{r.ratio:.2f}x",
              " / ".join(f"{q:.2f}" for q in r.turn_ratio_quartiles), cores(r.levels["c1"].cores_busy),
              cores(r.levels["c8"].cores_busy)] for r in results.scaling]),
            f"The two levels take turns in windows of {first.window_s} s over the load generators and setups, so a "
            "slow spell of the host falls on both alike; the targets are judged on these rows. The concurrency "
            "sweep measures each level once. Cores busy: each core's share of the time not idle, host-wide, in "
            "core order; with placement the instance cores are the upper half, so a full last figure means the "
            "model's own work is what bounds throughput."]
    return parts
