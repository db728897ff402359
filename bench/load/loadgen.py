"""A bounded load generator, in the manner of perf_analyzer.

Two modes, each bounded in time and in request count, and each counting every request it sends:
  - closed loop: `concurrency` workers, each sending its next request when the last one returns
    (N requests always in flight);
  - open loop: requests sent at Poisson arrival times for a target rate, whatever the server does
    (latency includes any queueing the load causes; the dispatcher's lag behind schedule is reported).
`send()` is any callable that performs one request and raises on failure; workers get their own
sender (one client, one channel per worker) from `make_sender()`.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ...timing import percentiles
from ..record import Record

Sender = Callable[[], None]


@dataclass
class LoadSummary(Record):
    """A load run without its samples: the counts, the client-side latency percentiles (ms) and the
    throughput of answered requests."""
    mode: str
    level: float  # concurrency (closed loop) or target rate in requests/s (open loop)
    sent: int
    ok: int
    errors: int
    duration_s: float
    first_errors: list[str]
    max_lag_ms: float
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float


@dataclass
class LoadResult:
    mode: str
    level: float  # concurrency (closed loop) or target rate in requests/s (open loop)
    sent: int = 0
    ok: int = 0
    errors: int = 0
    duration_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    first_errors: list[str] = field(default_factory=list)
    max_lag_ms: float = 0.0

    @property
    def throughput_rps(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def summary(self) -> LoadSummary:
        return LoadSummary(mode=self.mode, level=float(self.level), sent=self.sent, ok=self.ok, errors=self.errors,
                           duration_s=self.duration_s, first_errors=list(self.first_errors),
                           max_lag_ms=self.max_lag_ms, throughput_rps=self.throughput_rps,
                           **percentiles(self.latencies_ms),
                           mean_ms=float(np.mean(self.latencies_ms)) if self.latencies_ms else float("nan"))


class _Tally:
    """Thread-safe counting shared by the workers."""

    def __init__(self, result: LoadResult, max_requests: int):
        self.result, self.max_requests, self.lock = result, max_requests, threading.Lock()

    def claim(self) -> bool:
        with self.lock:
            if self.result.sent >= self.max_requests:
                return False
            self.result.sent += 1
            return True

    def timed_send(self, send: Sender) -> None:
        t0 = time.perf_counter()
        try:
            send()
        except Exception as e:  # noqa: BLE001 - every failure is counted, the first few kept
            with self.lock:
                self.result.errors += 1
                if len(self.result.first_errors) < 5:
                    self.result.first_errors.append(f"{type(e).__name__}: {e}"[:300])
            return
        latency = (time.perf_counter() - t0) * 1e3
        with self.lock:
            self.result.ok += 1
            self.result.latencies_ms.append(latency)


def _check_bounds(duration_s: float, max_requests: int) -> None:
    if not duration_s > 0 or max_requests < 1:
        raise ValueError(f"a load run needs duration_s > 0 and max_requests >= 1, got {duration_s} and {max_requests}")


def closed_loop(make_sender: Callable[[], Sender], concurrency: int, duration_s: float, max_requests: int,
                warmup_requests: int = 0) -> LoadResult:
    """`concurrency` workers in a loop until `duration_s` has passed or `max_requests` were sent."""
    _check_bounds(duration_s, max_requests)
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    result = LoadResult("closed", concurrency)
    tally = _Tally(result, max_requests)
    window = {}

    def open_window() -> None:
        window["start"] = time.perf_counter()
        window["deadline"] = window["start"] + duration_s

    # Each worker builds its sender in its own thread: some clients (tritonclient.http's gevent
    # pool) must be used from the thread that made them. The timed window opens once all are warm.
    ready = threading.Barrier(concurrency, action=open_window)

    failures: list[BaseException] = []

    def worker() -> None:
        try:
            send = make_sender()
            for _ in range(warmup_requests):
                send()
        except BaseException as e:  # noqa: BLE001 - reported below; the others must not wait forever
            failures.append(e)
            ready.abort()
            return
        try:
            ready.wait()
        except threading.BrokenBarrierError:
            return
        while time.perf_counter() < window["deadline"] and tally.claim():
            tally.timed_send(send)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise RuntimeError(f"a load worker failed while warming up: {failures[0]}") from failures[0]
    result.duration_s = time.perf_counter() - window["start"]
    return result


def open_loop(make_sender: Callable[[], Sender], rate_rps: float, duration_s: float, max_requests: int,
              max_in_flight: int = 64, rng: np.random.Generator | None = None) -> LoadResult:
    """Poisson arrivals at `rate_rps` until `duration_s` or `max_requests`; at most `max_in_flight`
    requests outstanding (beyond that the dispatcher waits, and its lag behind schedule is reported)."""
    _check_bounds(duration_s, max_requests)
    if not rate_rps > 0:
        raise ValueError(f"rate_rps must be > 0, got {rate_rps}")
    rng = rng if rng is not None else np.random.default_rng()
    result = LoadResult("open", rate_rps)
    tally = _Tally(result, max_requests)
    local = threading.local()

    def task() -> None:
        if not hasattr(local, "send"):
            local.send = make_sender()
        tally.timed_send(local.send)

    slots = threading.BoundedSemaphore(max_in_flight)
    with ThreadPoolExecutor(max_workers=max_in_flight) as pool:
        start = time.perf_counter()
        next_at = start
        while True:
            next_at += rng.exponential(1.0 / rate_rps)
            if next_at - start >= duration_s:
                break
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            slots.acquire()
            result.max_lag_ms = max(result.max_lag_ms, (time.perf_counter() - next_at) * 1e3)
            if not tally.claim():
                slots.release()
                break
            pool.submit(task).add_done_callback(lambda _: slots.release())
    result.duration_s = time.perf_counter() - start  # leaving the pool waited for the last requests
    return result
