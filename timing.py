"""Timing helpers shared by `optimize` and the benchmarks: warm up, then many samples, percentiles."""
from __future__ import annotations

import time
from typing import Callable

import numpy as np


def percentiles(samples_ms, qs=(50, 90, 95, 99)) -> dict[str, float]:
    arr = np.asarray(samples_ms, dtype=np.float64)
    if arr.size == 0:
        return {f"p{q}_ms": float("nan") for q in qs}
    return {f"p{q}_ms": float(np.percentile(arr, q)) for q in qs}


def quartiles(values) -> list[float]:
    """The 25th, 50th and 75th percentiles: the spread of repeated measurements of one ratio."""
    return [float(q) for q in np.percentile(np.asarray(values, dtype=np.float64), [25, 50, 75])]


def measure_latency(run: Callable[[], object], warmup: int = 10, iters: int = 100, budget_s: float = 2.0) -> dict:
    """Percentiles (ms) of `run()` after `warmup` calls; at most `iters` samples, at least 5, and
    no more sampling once `budget_s` is spent."""
    for _ in range(warmup):
        run()
    samples = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < iters and (len(samples) < 5 or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t0) * 1e3)
    return {**percentiles(samples), "mean_ms": float(np.mean(samples)), "std_ms": float(np.std(samples)),
            "samples": len(samples)}
