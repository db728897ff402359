"""Batching settings chosen by measurement, kept beside the artifacts and applied by `tritonize repo --tune`.

The benchmarks' batching sweep (bench/suite/sweep.py) measures a model's dynamic-batching settings under
load and records the winner here, in one JSON file per artifact root (`<artifacts>/tuning.json`, one
entry per model, with what it was measured on). `tritonize repo --tune` reads it and builds each
model's config.pbtxt with its entry over the spec's own ServingHints; a model without an entry keeps
its spec's settings, and the repository's index says which models were tuned and from where.

The file sits at the artifact root, not in a model's folder: a model folder holds only what its
manifest lists, and a tuning is a measurement of the serving machine, not of the exported model.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..artifacts import TUNING_FILE
from ..models.spec import ModelSpec

__all__ = ["TUNING_FILE", "BatchingSettings", "Tuning", "apply_tuning", "read_tunings", "record_tuning"]
FORMAT = 1


@dataclass(frozen=True)
class BatchingSettings:
    """What the sweep varies in a model's config.pbtxt."""
    max_queue_delay_us: int
    instance_count: int
    preferred_batch_sizes: tuple[int, ...]
    max_batch_size: int

    def __post_init__(self) -> None:
        checks = {"max_queue_delay_us": self.max_queue_delay_us >= 0, "instance_count": self.instance_count >= 1,
                  "max_batch_size": self.max_batch_size >= 1}
        for name, ok in checks.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not ok:
                raise ValueError(f"{name} expects an integer >= {0 if name == 'max_queue_delay_us' else 1}, "
                                 f"got {value!r}")
        sizes = self.preferred_batch_sizes
        if not isinstance(sizes, tuple) or not all(isinstance(b, int) and 1 <= b <= self.max_batch_size
                                                   for b in sizes):
            raise ValueError(f"preferred_batch_sizes expects a tuple of integers in [1, max_batch_size "
                             f"{self.max_batch_size}], got {sizes!r}")


@dataclass(frozen=True)
class Tuning:
    """One model's measured winner, and what it was measured on (for the reader to judge whether it
    still applies: a tuning from another machine kind is a guess)."""
    model: str
    settings: BatchingSettings
    measured: str  # e.g. "concurrency 1, 8, 32 over http-lean; p99 budget 20 ms; 2 cores; 2026-12-02"
    throughput_rps: float  # the winner's throughput at the highest level measured


def apply_tuning(spec: ModelSpec, tuning: Tuning | None) -> ModelSpec:
    """`spec` with its serving hints replaced by `tuning`'s settings (the spec itself where None)."""
    if tuning is None:
        return spec
    if tuning.model != spec.name:
        raise ValueError(f"tuning for model {tuning.model!r} applied to {spec.name!r}")
    s = tuning.settings
    hints = dataclasses.replace(spec.serving, max_queue_delay_us=s.max_queue_delay_us, instance_count=s.instance_count,
                                preferred_batch_sizes=s.preferred_batch_sizes, max_batch_size=s.max_batch_size)
    return dataclasses.replace(spec, serving=hints)


def _tuning_from_json(model: str, entry, path: Path) -> Tuning:
    where = f"{path}: model {model!r}"
    if not isinstance(entry, dict) or set(entry) != {"settings", "measured", "throughput_rps"}:
        raise ValueError(f"{where}: expected an object with settings, measured and throughput_rps, got "
                         f"{sorted(entry) if isinstance(entry, dict) else type(entry).__name__}")
    settings = entry["settings"]
    fields = {f.name for f in dataclasses.fields(BatchingSettings)}
    if not isinstance(settings, dict) or set(settings) != fields:
        raise ValueError(f"{where}: settings expects exactly {sorted(fields)}, got "
                         f"{sorted(settings) if isinstance(settings, dict) else type(settings).__name__}")
    sizes = settings["preferred_batch_sizes"]
    try:
        parsed = BatchingSettings(**{**settings, "preferred_batch_sizes": tuple(sizes) if isinstance(sizes, list)
                                     else sizes})
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if not isinstance(entry["measured"], str) or not isinstance(entry["throughput_rps"], (int, float)):
        raise ValueError(f"{where}: measured expects text and throughput_rps a number, got "
                         f"{entry['measured']!r} and {entry['throughput_rps']!r}")
    return Tuning(model=model, settings=parsed, measured=entry["measured"], throughput_rps=float(entry["throughput_rps"]))


def read_tunings(path: Path) -> dict[str, Tuning]:
    """Every model's tuning in `path`; a missing file is an error naming how to make one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--tune expects a tuning file written by the batching sweep, {path} does not exist "
                         f"(make one with `tritonize bench --sweep MODEL`, which records its winner there)")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: expected a tuning file (JSON), got unreadable text: {e}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("models"), dict):
        raise ValueError(f"{path}: expected a tuning file of format {FORMAT} with a 'models' object, got "
                         f"{sorted(data) if isinstance(data, dict) else type(data).__name__}")
    return {model: _tuning_from_json(model, entry, path) for model, entry in data["models"].items()}


def record_tuning(path: Path, tuning: Tuning) -> Path:
    """Put `tuning` into the file at `path` (other models' entries kept), atomically."""
    path = Path(path)
    models = read_tunings(path) if path.exists() else {}
    models[tuning.model] = tuning
    data = {"format": FORMAT, "models": {
        name: {"settings": {**dataclasses.asdict(t.settings), "preferred_batch_sizes": list(t.settings.preferred_batch_sizes)},
               "measured": t.measured, "throughput_rps": round(t.throughput_rps, 1)}
        for name, t in sorted(models.items())}}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path
