"""What a `tritonize bench` run is asked to do, and the checks that refuse a bad request before any
measuring (a run takes minutes; a typo should cost a second).

The user's constraints are service-level objectives (`--slo NAME=VALUE`), as Triton's Model Analyzer
takes them: upper bounds on the client's latency percentiles and a lower bound on throughput. The
report judges every served model and protocol against them (bench/suite/slo.py); the project's own goals
are not the user's and are measured only by `--project` (studies/project.py, in a checkout).
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...artifacts import DEFAULT_RESULTS
from ...models import get_spec
from ..load import perf_analyzer
from ..load.served import LEAN_HTTP, PROTOCOLS
from ..record import Record
from .sweep import write_back_target

LATENCY_SLOS = {"p50_ms": "p50", "p90_ms": "p90", "p99_ms": "p99"}  # upper bounds, ms; the served row's attribute
THROUGHPUT_SLO = "min_throughput"  # a lower bound, inferences per second
SLO_NAMES = (*LATENCY_SLOS, THROUGHPUT_SLO)
SLO_FORM = f"--slo expects NAME=VALUE with NAME one of {', '.join(SLO_NAMES)} and VALUE a positive number"


@dataclass(frozen=True)
class Slo(Record):
    """One constraint: `name` is one of SLO_NAMES; `value` is ms for a latency, inferences/s for throughput."""
    name: str
    value: float

    @property
    def is_latency(self) -> bool:
        return self.name in LATENCY_SLOS

    def describe(self) -> str:
        if self.is_latency:
            return f"{LATENCY_SLOS[self.name]} <= {self.value:g} ms"
        return f"infer/s >= {self.value:g}"

    def __str__(self) -> str:
        return f"{self.name}={self.value:g}"


def parse_slo(text: str) -> Slo:
    """`NAME=VALUE`, e.g. `p99_ms=5` or `min_throughput=2000`; ValueError naming the form otherwise."""
    name, sep, value = str(text).partition("=")
    name, value = name.strip(), value.strip()
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not sep or name not in SLO_NAMES or not (math.isfinite(number) and number > 0):
        raise ValueError(f"{SLO_FORM}, got {text!r}")
    return Slo(name, number)


def parse_slos(texts) -> tuple[Slo, ...]:
    """Each of `texts` parsed; a name given twice is refused (which one would count is not clear)."""
    slos = tuple(parse_slo(t) for t in texts)
    check_slos(slos)
    return slos


def check_slos(slos) -> None:
    for slo in slos:
        if not isinstance(slo, Slo) or slo.name not in SLO_NAMES or not (math.isfinite(slo.value) and slo.value > 0):
            raise ValueError(f"{SLO_FORM}, got {slo!r}")
    names = [s.name for s in slos]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        given = ", ".join(str(s) for s in slos if s.name in twice)
        raise ValueError(f"--slo takes each name once, got {', '.join(twice)} more than once ({given})")


@dataclass
class SuiteOptions(Record):
    models: list[str]
    artifacts: Path
    results_root: Path = DEFAULT_RESULTS
    quick: bool = False
    protocols: tuple[str, ...] = ("grpc", "http", LEAN_HTTP)
    grpc_levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    http_levels: tuple[int, ...] = (1, 8)
    lean_levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    duration_s: float = 3.0
    slos: tuple[Slo, ...] = ()  # the user's constraints, judged on every served model and protocol
    sweep_model: str | None = None
    sweep_write_back: Path | None = None  # a repository whose config gets the sweep's best settings
    perf_analyzer: Path | None = None  # the binary to run beside ours (default: the one on PATH, if any)
    placement: bool = True  # split the cores between the server (and load generator) and the instances
    inprocess: bool = True
    served: bool = True
    # The project's own benchmark (studies/project.py, `tritonize bench --project`) and its settings:
    project: bool = False
    floor_seconds: float = 60.0  # for the MLP's floor ratio, over all its setups
    scaling_seconds: float = 30.0  # for the CNN's scaling ratio, over its load generators and setups
    compare_placements: bool = True  # also measure the MLP floor unplaced and with the stubs alone
    compare_poll_idle: bool = True  # also measure the MLP floor with idle cores polling
    compare_idle_scaling: bool = True  # and the CNN's scaling, taking turns with the host's own idle policy

    @classmethod
    def quick_defaults(cls, **kw) -> "SuiteOptions":
        """The --quick run's settings; `kw` sets the rest and may override them."""
        return cls(**{**dict(quick=True, grpc_levels=(1, 4, 8), http_levels=(1, 8), lean_levels=(1, 8), duration_s=1.5,
                             floor_seconds=14.0, scaling_seconds=5.0, compare_placements=False,
                             compare_idle_scaling=False), **kw})

    def levels(self, protocol: str) -> tuple[int, ...]:
        return {"grpc": self.grpc_levels, "http": self.http_levels, LEAN_HTTP: self.lean_levels}[protocol]

    def slo(self, name: str) -> Slo | None:
        return next((s for s in self.slos if s.name == name), None)


def served_models(models: list[str]) -> list[str]:
    """The names of the models the served part runs (`models` may hold references such as
    `file.py:ATTR`): the ONNX ones (the kernel models run in Triton's interpreter here, untimed)."""
    return [spec.name for spec in map(get_spec, models) if spec.runtime == "onnx"]


def check_options(opts: SuiteOptions) -> None:
    """Fail before any work on what would only fail (or be silently dropped) at the end of a long run."""
    if not opts.models:
        raise ValueError("the benchmark expects at least one model, got none")
    for m in opts.models:
        get_spec(m)
    if not opts.duration_s > 0:
        raise ValueError(f"--duration expects seconds per load run > 0, got {opts.duration_s}")
    unknown = [p for p in opts.protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"protocols must be among {', '.join(PROTOCOLS)}, got {', '.join(map(repr, unknown))}")
    for protocol in opts.protocols:
        levels = opts.levels(protocol)
        if not levels or any(not isinstance(lv, int) or lv < 1 for lv in levels):
            raise ValueError(f"the {protocol} concurrency levels must be integers >= 1, got {list(levels)}")
    if opts.project and not (opts.floor_seconds > 0 and opts.scaling_seconds > 0):
        raise ValueError(f"--project expects floor and scaling seconds > 0, got {opts.floor_seconds} and "
                         f"{opts.scaling_seconds}")
    check_slos(opts.slos)
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
