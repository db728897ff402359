"""From which batch size a second ONNX Runtime thread pays, measured per variant by `tritonize optimize`.

A served model runs one ONNX Runtime thread per instance by default: on a small machine the server's
front end and its clients share the cores, and at batch 1 a second thread costs more than it saves
(waking the idle worker and splitting a tiny amount of work takes longer than the work). A large
batch is different: a CNN's batch of 32 can run about 1.4x faster on two threads. Whether and from
where it pays depends on the model and on its variant (an INT8 graph can lose at every size), so it
is measured, not guessed: both thread counts take turns on the same inputs at each batch size. The
smallest size at which the larger count wins by at least `MIN_SPEEDUP`, and still wins by
`MIN_SPEEDUP_ABOVE` at every larger measured size, becomes the profile's `from_rows`. The CPU runner
(model_repository/backends/onnxruntime) then runs batches of at least that many rows on a second
session with more threads, and smaller ones, a lone client's, on the one-thread session.

The margin is wide because the measurement runs in-process on otherwise idle cores, while a busy
server shares them with its front end and its clients; only a clear win survives that.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Callable

MIN_SPEEDUP = 1.2
# Above the first winning size a smaller margin: one noisy size (the medians of two runs on a 2-core VM
# differ by up to ~10%) must not push the threshold past sizes that clearly win.
MIN_SPEEDUP_ABOVE = 1.1
PAIRS = 40  # turns per batch size, each running both thread counts once
BUDGET_S = 1.0  # per batch size: a large model's big batches stop at this, after at least MIN_PAIRS turns
MIN_PAIRS = 3
WARMUP = 3  # runs of each count first: first-run allocations, the worker thread's start


@dataclass(frozen=True)
class ThreadProfile:
    """How one variant ran on `base_threads` and on `threads` threads. `speedup[b]` is the median
    time on base_threads over that on threads, at batch size b; `from_rows` is the smallest batch that
    runs on `threads` (None: none does, the larger count never paid)."""
    base_threads: int
    threads: int
    from_rows: int | None
    speedup: dict[int, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {**asdict(self), "speedup": {str(b): s for b, s in self.speedup.items()}}

    @classmethod
    def from_json(cls, data: dict, where: str) -> ThreadProfile:
        """The profile in a manifest; a ValueError naming `where` when it is not one."""
        keys = {"base_threads", "threads", "from_rows", "speedup"}
        if not isinstance(data, dict) or set(data) != keys:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"{where}: expected a thread profile with {sorted(keys)}, got {got}")
        ints = [data["base_threads"], data["threads"]] + ([] if data["from_rows"] is None else [data["from_rows"]])
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in ints) \
                or not isinstance(data["speedup"], dict):
            raise ValueError(f"{where}: expected base_threads, threads and from_rows as integers >= 1 (from_rows "
                             f"may be null) and speedup as an object, got {data}")
        return cls(data["base_threads"], data["threads"], data["from_rows"],
                   {int(b): float(s) for b, s in data["speedup"].items()})


def batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... up to the model's max batch size, which is always measured."""
    sizes, b = [], 1
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    return sizes + [max(max_batch_size, 1)]


def choose_from_rows(speedup: dict[int, float], min_speedup: float = MIN_SPEEDUP,
                     min_above: float = MIN_SPEEDUP_ABOVE) -> int | None:
    """The smallest batch size that wins by `min_speedup` with every larger one winning by `min_above`."""
    from_rows = None
    for b in sorted(speedup, reverse=True):
        if speedup[b] < min_above:
            break
        if speedup[b] >= min_speedup:
            from_rows = b
    return from_rows


def measure_profile(run_base: Callable[[int], object], run_more: Callable[[int], object], sizes: list[int],
                    base_threads: int, threads: int, clock: Callable[[], float] = time.perf_counter,
                    pairs: int = PAIRS, budget_s: float = BUDGET_S) -> ThreadProfile:
    """`run_base(b)` and `run_more(b)` run one batch of b rows on `base_threads` and on `threads`
    threads; they take turns (after WARMUP runs each), so both see the same state of the machine."""
    speedup = {}
    for b in sizes:
        for _ in range(WARMUP):
            run_base(b), run_more(b)
        base, more = [], []
        deadline = clock() + budget_s
        while len(base) < pairs and (len(base) < MIN_PAIRS or clock() < deadline):
            for run, samples in ((run_base, base), (run_more, more)):
                t0 = clock()
                run(b)
                samples.append(clock() - t0)
        speedup[b] = round(median(base) / median(more), 3)
    return ThreadProfile(base_threads, threads, choose_from_rows(speedup), speedup)
