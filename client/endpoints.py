"""Several servers behind one client: round-robin over those that are not set aside.

Each endpoint owns one tritonclient client (one gRPC channel, so one HTTP/2 connection reused by
every call) for the client's whole life.

An endpoint that fails with a retryable error is ejected: set aside for a cool-down, so that calls go
to the others instead of paying for the same failure again (a dead Python stub takes about 1 s to fail
each request). When the cool-down ends, one call is let through as a probe while the others keep
away; if it succeeds the endpoint is back, if it fails the endpoint is set aside again for twice as
long (up to `max_cooldown_s`). A probe that never reports (a cancelled call) blocks the endpoint only
for `probe_s`. Only news counts: the outcome of a call sent before the endpoint's latest ejection
(a straggler of the same outage) neither ejects it again nor brings it back. When every endpoint is
set aside, the one back soonest is used anyway, so a lone server that comes back is found.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Collection, Sequence

from .shared_memory import RegionPool

DEFAULT_PORT = 8001  # tritonserver's gRPC port
MAX_COOLDOWN_FACTOR = 8  # the longest cool-down, in units of the first one


def normalize_url(url: str) -> str:
    """`host:port` as gRPC takes it; a bare host gets Triton's gRPC port, a scheme is dropped."""
    url = url.strip()
    for scheme in ("grpc://", "http://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    if not url:
        raise ValueError("an endpoint URL is empty; expected host:port, e.g. 127.0.0.1:8001")
    return url if ":" in url.rsplit("]", 1)[-1] else f"{url}:{DEFAULT_PORT}"


@dataclass(eq=False)
class Endpoint:
    url: str
    client: Any  # tritonclient.grpc(.aio).InferenceServerClient
    regions: RegionPool
    down_until: float = 0.0  # time.monotonic() before which this endpoint is set aside
    probe_until: float = 0.0  # a probe is out until then: other calls keep away
    ejected_at: float = -1.0  # when it was last set aside (-1: never)
    ejections: int = 0  # consecutive ejections without a success since; each doubles the cool-down

    def is_up(self, now: float) -> bool:
        return self.down_until <= now and self.probe_until <= now


class EndpointRing:
    """Round-robin choice among endpoints, skipping those set aside (see the module doc)."""

    def __init__(self, urls: Sequence[str], make_client: Callable[[str], Any], cooldown_s: float,
                 max_cooldown_s: float | None = None):
        if not urls:
            raise ValueError("a client needs at least one server URL")
        if not cooldown_s >= 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max(cooldown_s, MAX_COOLDOWN_FACTOR * cooldown_s if max_cooldown_s is None
                                  else max_cooldown_s)
        self.probe_s = max(cooldown_s, 0.1)
        self.endpoints = [Endpoint(u, make_client(u), RegionPool()) for u in urls]
        self._turn = itertools.count()  # next() on a count is atomic under the GIL: safe across threads
        self._lock = threading.Lock()  # never held across an await or an RPC: safe for asyncio too

    def pick(self, avoid: Collection[str] = ()) -> Endpoint:
        """The next endpoint that is up, among those whose URL is not in `avoid` (when any is left)."""
        endpoints = self.endpoints
        if len(endpoints) == 1:
            return endpoints[0]
        if avoid:
            endpoints = [e for e in endpoints if e.url not in avoid] or endpoints
        start = next(self._turn)
        with self._lock:
            now = time.monotonic()
            for i in range(len(endpoints)):
                endpoint = endpoints[(start + i) % len(endpoints)]
                if endpoint.is_up(now):
                    if endpoint.ejections:  # back from its cool-down: this call is the probe
                        endpoint.probe_until = now + self.probe_s
                    return endpoint
            return min(endpoints, key=lambda e: max(e.down_until, e.probe_until))

    def has_other_up(self, endpoint: Endpoint) -> bool:
        now = time.monotonic()
        return any(e is not endpoint and e.is_up(now) for e in self.endpoints)

    def has_untried(self, tried: Collection[str]) -> bool:
        return any(e.url not in tried for e in self.endpoints)

    def failed(self, endpoint: Endpoint, sent_at: float) -> None:
        """A call sent at `sent_at` (time.monotonic()) failed with a retryable error: set it aside."""
        with self._lock:
            if sent_at < endpoint.ejected_at:
                return  # sent before the latest ejection: the same outage, already counted
            now = time.monotonic()
            endpoint.ejections += 1
            endpoint.ejected_at = now
            endpoint.down_until = now + min(self.max_cooldown_s, self.cooldown_s * 2 ** (endpoint.ejections - 1))
            endpoint.probe_until = 0.0

    def succeeded(self, endpoint: Endpoint, sent_at: float) -> None:
        """A call sent at `sent_at` succeeded: an ejected endpoint is back, unless the call predates
        its ejection."""
        if not endpoint.ejections:  # the common case, without the lock
            return
        with self._lock:
            if sent_at >= endpoint.ejected_at:
                self._reset(endpoint)

    def mark_up(self, endpoint: Endpoint) -> None:
        """It answered a fresh check (readiness): back in the ring at once."""
        if endpoint.ejections:
            with self._lock:
                self._reset(endpoint)

    @staticmethod
    def _reset(endpoint: Endpoint) -> None:
        endpoint.ejections = 0
        endpoint.down_until = endpoint.probe_until = 0.0
