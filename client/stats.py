"""Per-endpoint counts of one client: requests, failures by kind, retries sent elsewhere, latency.

Every inference attempt the client sends is booked against the endpoint it went to (metadata reads,
made once per model, are not). Booking costs one uncontended lock and a bisect, so it stays on for
every call. Latency goes into a fixed histogram of buckets 2**(1/8) apart (about 9%) from 10 µs to
about 100 s: a percentile is read as its bucket's geometric middle, so it is off by at most ~4.5%,
and memory stays constant however many calls are made.
"""
from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, fields

from tritonclient.utils import InferenceServerException

from .errors import DEADLINE_EXCEEDED, UNAVAILABLE, AdminKeyError, is_restricted
from .retry import MODEL_MISSING, MODEL_UNLOADING, REQUEST_TIMEOUT, STUB_UNHEALTHY, matches

BUCKETS_PER_OCTAVE = 8
LOWEST_S = 1e-5
# Upper bounds of the buckets; one more bucket past the last holds anything slower.
BOUNDS = [LOWEST_S * 2 ** (i / BUCKETS_PER_OCTAVE) for i in range(BUCKETS_PER_OCTAVE * 24)]


@dataclass(frozen=True)
class FailureCounts:
    """Failed attempts on one endpoint, by what the server (or the transport) answered."""

    unavailable: int = 0  # UNAVAILABLE: refused, reset, not ready, draining
    overloaded: int = 0  # RESOURCE_EXHAUSTED: a full queue
    model_unhealthy: int = 0  # INTERNAL "Stub process ... is not healthy": the model's process died
    model_unloading: int = 0  # NOT_FOUND "... has no available versions": being unloaded or reloaded
    model_missing: int = 0  # NOT_FOUND "... is not found": this server does not hold the model
    timeout: int = 0  # DEADLINE_EXCEEDED, or the request's own timeout ran out in the server's queue
    invalid: int = 0  # INVALID_ARGUMENT: the request itself is wrong
    model_error: int = 0  # any other error the server answered (a model's own failure)
    refused: int = 0  # a restricted call without the right admin key
    other: int = 0  # not a server answer (e.g. a local error while reading the response)

    @property
    def total(self) -> int:
        return sum(getattr(self, f.name) for f in fields(self))

    def nonzero(self) -> str:
        """e.g. "unavailable 2, timeout 1" ("" when none), for tables and messages."""
        return ", ".join(f"{f.name} {getattr(self, f.name)}" for f in fields(self) if getattr(self, f.name))


FAILURE_KINDS = frozenset(f.name for f in fields(FailureCounts))


def classify(error: BaseException) -> str:
    """The FailureCounts field an attempt's error is booked under."""
    if not isinstance(error, InferenceServerException):
        return "other"
    if isinstance(error, AdminKeyError) or is_restricted(error):
        return "refused"
    status, message = error.status(), error.message() or ""
    if status == DEADLINE_EXCEEDED or REQUEST_TIMEOUT in message:
        return "timeout"
    if status == UNAVAILABLE:
        return "unavailable"
    if status == "StatusCode.RESOURCE_EXHAUSTED":
        return "overloaded"
    for kind, pattern in (("model_unhealthy", STUB_UNHEALTHY), ("model_unloading", MODEL_UNLOADING),
                          ("model_missing", MODEL_MISSING)):
        if matches(error, (pattern,)):
            return kind
    if status == "StatusCode.INVALID_ARGUMENT":
        return "invalid"
    return "model_error" if status else "other"


@dataclass(frozen=True)
class Latency:
    """Round trips of the successful attempts on one endpoint, in seconds (None: no success yet).
    Percentiles come from the histogram (within ~4.5%); mean and max are exact."""

    count: int
    p50_s: float | None
    p90_s: float | None
    p99_s: float | None
    mean_s: float | None
    max_s: float | None


@dataclass(frozen=True)
class EndpointStats:
    """What one endpoint of a client has seen since the client added it."""

    url: str  # host:port the calls go to ([v6 address]:port for IPv6)
    source: str  # the form that named it: host:port, dns:///NAME:PORT or file:PATH
    requests: int  # inference attempts sent to it, retries included
    successes: int
    failures: FailureCounts
    retried_elsewhere: int  # attempts that failed here and whose retry went to another endpoint
    latency: Latency
    ejected: bool  # set aside after a failure and not back yet (cooling down or awaiting its probe)
    down_for_s: float  # seconds left of its cool-down (0 when calls may go there)
    in_flight: int  # calls using it now
    removed: bool  # discovery no longer lists it: it takes no new calls and closes once idle


def percentile(counts: list[int], total: int, q: float, max_s: float) -> float:
    """The q-quantile (0 < q <= 1) of a histogram: its bucket's geometric middle, never above the max."""
    rank = max(1, math.ceil(q * total))
    seen = 0
    for i, n in enumerate(counts):
        seen += n
        if seen >= rank:
            if i == 0:
                return min(BOUNDS[0], max_s)
            upper = BOUNDS[i] if i < len(BOUNDS) else max_s
            return min(math.sqrt(BOUNDS[i - 1] * upper), max_s)
    return max_s


class Counters:
    """The live, thread-safe counts behind one endpoint's EndpointStats."""

    __slots__ = ("_lock", "requests", "successes", "retried_elsewhere", "_failures", "_histogram", "_sum_s", "_max_s")

    def __init__(self):
        self._lock = threading.Lock()  # held for a few increments only: safe from threads and asyncio alike
        self.requests = 0
        self.successes = 0
        self.retried_elsewhere = 0
        self._failures = dict.fromkeys(FAILURE_KINDS, 0)
        self._histogram = [0] * (len(BOUNDS) + 1)
        self._sum_s = 0.0
        self._max_s = 0.0

    def sent(self) -> None:
        with self._lock:
            self.requests += 1

    def succeeded(self, seconds: float) -> None:
        i = bisect.bisect_left(BOUNDS, seconds)
        with self._lock:
            self.successes += 1
            self._histogram[i] += 1
            self._sum_s += seconds
            if seconds > self._max_s:
                self._max_s = seconds

    def failed(self, error: BaseException) -> None:
        kind = classify(error)
        with self._lock:
            self._failures[kind] += 1

    def sent_elsewhere(self) -> None:
        with self._lock:
            self.retried_elsewhere += 1

    def failures(self) -> FailureCounts:
        with self._lock:
            return FailureCounts(**self._failures)

    def latency(self) -> Latency:
        with self._lock:
            counts, total, sum_s, max_s = list(self._histogram), self.successes, self._sum_s, self._max_s
        if not total:
            return Latency(0, None, None, None, None, None)
        p50, p90, p99 = (percentile(counts, total, q, max_s) for q in (0.5, 0.9, 0.99))
        return Latency(total, p50, p90, p99, sum_s / total, max_s)
