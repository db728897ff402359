"""The project's own benchmark (`tritonize bench --project`): tritonize's goals, not a user's.

Two targets, each a ratio measured taking turns (studies/turns.py) on the suite's main server:
- the served MLP's batch-1 gRPC p50 over its do-nothing twin's (`<model>_noop`, served beside it):
  what the model's own path costs above transport and the Python backend, goal <= 1.10x, and its
  absolute p50, goal <= 0.5 ms;
- the CNN's throughput at concurrency 8 over concurrency 1 with dynamic batching, per load
  generator, goal >= 3x.
It also studies the host: with a split placement, the MLP floor again on an unplaced server and on
one whose stubs alone have the instance cores (what the placement is worth); where the host allows
it, both ratios again with idle cores polling instead of halting (serving/idle.py: what the host's
wake-ups cost). Polling runs last, after everything measured with the host's own idle policy, since
its effect outlasts it. A user's run judges the user's SLOs instead (bench/suite/slo.py).

The suite runs it through its studies hook (bench/suite/run.py's `Studies`): `tritonize bench
--project` (cli/bench.py) passes `ProjectBenchmark`. Its results are the report's records
(bench/report/project.py), which the report renders.
"""
from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Callable

from ..bench.report.project import FloorResult, ProjectResults, ScalingResult, Target
from ..bench.suite.options import SuiteOptions
from ..bench.suite.progress import Progress
from ..model_repository.writer import NOOP_SUFFIX
from ..serving.idle import poll_idle_unavailable
from ..serving.placement import available_cpus
from ..serving.server import TritonServer
from .turns import SCALING_CLIENTS, ServedSetup, floor_ratio, scaling_ratio

FLOOR_MODEL = "mlp"  # the model of the floor target
SCALING_MODEL = "cnn"  # the model of the dynamic-batching scaling target
POLLING = ", idle cores polling"
FLOOR_GOAL, FLOOR_P50_GOAL_MS, SCALING_GOAL = 1.10, 0.5, 3.0


class ProjectBenchmark:
    """The project's studies around the user's measurements on the suite's main server: `before()`
    (the floors with the host's own idle policy), then the suite's own rows, then `after()` (the
    scaling, then everything with idle cores polling)."""

    def __init__(self, repo: Path, server: TritonServer, client_cpus: frozenset[int], served: list[str],
                 opts: SuiteOptions, progress: Progress, skip: Callable[[str, str], None]):
        main = ServedSetup(server, client_cpus)
        self.repo, self.main, self.opts, self.progress, self.skip = repo, main, opts, progress, skip
        self.results = ProjectResults()
        self.floor = FLOOR_MODEL in served
        self.scaling = SCALING_MODEL in served
        for model, what in ((FLOOR_MODEL, "floor"), (SCALING_MODEL, "scaling")):
            if model not in served:
                skip(f"the project's {model} {what}", f"needs {model} among the served models "
                                                      f"(`tritonize bench --project {FLOOR_MODEL} {SCALING_MODEL}`)")
        poll_reason = poll_idle_unavailable() if opts.compare_poll_idle else "not requested (--no-poll-idle)"
        self.polling = poll_reason is None
        if poll_reason:
            skip("the MLP floor and the CNN scaling with idle cores polling", poll_reason)
        elif not opts.compare_idle_scaling:
            skip("the CNN scaling with idle cores polling", "not requested (a --quick run leaves it to the full suite)")
        if main.placement == "split" and not opts.compare_placements:
            skip("the MLP floor unplaced and with the stubs alone",
                 "not requested (a --quick run leaves it to the full suite)")

    def before(self) -> None:
        if self.floor:
            self.results.floors += self._floors(poll_idle=False)

    def after(self) -> ProjectResults:
        main = self.main
        if self.scaling:
            self.results.scaling += self._scaling(main)
        if self.polling and self.floor:
            self.results.floors += self._floors(poll_idle=True)
        if self.polling and self.scaling and self.opts.compare_idle_scaling:
            self.results.scaling += self._scaling(replace(main, poll_idle=True))
        self.results.targets = targets(self.results)
        return self.results

    def _floors(self, poll_idle: bool) -> list[FloorResult]:
        """The MLP's floor ratio on the main server, with the host's own idle policy or with idle cores
        polling. When the main server is placed, also on servers started beside it for the comparison:
        one with the stubs alone on the instance cores and, with the host's own idle policy, an unplaced
        one (from this process while it is unpinned, so on every core)."""
        main = self.main
        setups = [replace(main, poll_idle=poll_idle)]
        with contextlib.ExitStack() as servers:
            if main.placement == "split" and self.opts.compare_placements:
                models = [FLOOR_MODEL, FLOOR_MODEL + NOOP_SUFFIX]
                if not poll_idle:
                    setups.append(ServedSetup(servers.enter_context(TritonServer(self.repo, models)), available_cpus()))
                alone = servers.enter_context(TritonServer(self.repo, models, placement=replace(
                    main.server.placement, stubs_alone=True)))
                setups.append(ServedSetup(alone, main.client_cpus, poll_idle))
            self.progress.stage(f"project: {FLOOR_MODEL} vs its do-nothing twin{POLLING if poll_idle else ''}", 1)
            floors = floor_ratio(setups, FLOOR_MODEL, self.opts.floor_seconds)
            self.progress.advance("; ".join(f"{f.setup} {f.ratio:.3f}x" for f in floors))
            return floors

    def _scaling(self, setup: ServedSetup) -> list[ScalingResult]:
        self.progress.stage(f"project: {SCALING_MODEL} concurrency 1 and 8 taking turns"
                            f"{POLLING if setup.poll_idle else ''}", 1)
        rows = scaling_ratio([setup], SCALING_MODEL, self.opts.scaling_seconds)
        self.progress.advance("; ".join(f"{r.protocol}, {r.setup} {r.ratio:.2f}x" for r in rows))
        return rows


def _floor_targets(floor: FloorResult | None, condition: str) -> list[Target]:
    if not floor:
        return []
    return [Target(f"served mlp batch-1 gRPC p50 / do-nothing model p50{condition}", f"{floor.ratio:.3f}x",
                   f"<= {FLOOR_GOAL:.2f}x", floor.ratio <= FLOOR_GOAL),
            Target(f"served mlp batch-1 gRPC p50 (absolute){condition}", f"{floor.p50_ms:.3f} ms",
                   f"<= {FLOOR_P50_GOAL_MS} ms", floor.p50_ms <= FLOOR_P50_GOAL_MS)]


def _scaling_targets(scaling: list[ScalingResult], condition: str) -> list[Target]:
    out = []
    for r in scaling:
        errors = r.errors
        out.append(Target(
            f"{r.model} throughput, concurrency 8 / concurrency 1 (dynamic batching), "
            f"{SCALING_CLIENTS[r.protocol]}{condition}",
            f"{r.ratio:.2f}x (per-turn quartiles {' / '.join(f'{q:.2f}' for q in r.turn_ratio_quartiles)}; mean batch "
            f"{r.levels['c8'].mean_batch:.2f}{f'; {errors} failed requests' if errors else ''})",
            f">= {SCALING_GOAL:g}x", r.ratio >= SCALING_GOAL and not errors))
    return out


def targets(results: ProjectResults) -> list[Target]:
    """Judged on the main setup with the host's own idle policy, then again with idle cores polling
    where that was measured."""
    main = results.floors[0] if results.floors else None
    polled = next((f for f in results.floors if main and f.idle == "poll" and f.placement == main.placement), None)
    by_idle = {idle: [r for r in results.scaling if r.idle == idle] for idle in ("default", "poll")}
    return (_floor_targets(main, "") + _scaling_targets(by_idle["default"], "")
            + _floor_targets(polled, POLLING) + _scaling_targets(by_idle["poll"], POLLING))
