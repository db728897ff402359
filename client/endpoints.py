"""Several servers behind one client: round-robin over those that are not known to be down.

Each endpoint owns one tritonclient client (one gRPC channel, so one HTTP/2 connection reused by
every call) for the client's whole life. An endpoint that fails with a retryable error is skipped
for a cool-down, then tried again; when every endpoint is down, the one whose cool-down ends first
is tried anyway, so a lone server that comes back is found.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .shared_memory import RegionPool

DEFAULT_PORT = 8001  # tritonserver's gRPC port


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
    down_until: float = 0.0  # time.monotonic() before which this endpoint is skipped
    failures: int = 0  # consecutive retryable failures

    def is_up(self, now: float) -> bool:
        return self.down_until <= now


class EndpointRing:
    """Round-robin choice among endpoints, skipping those in their cool-down."""

    def __init__(self, urls: Sequence[str], make_client: Callable[[str], Any], cooldown_s: float):
        if not urls:
            raise ValueError("a client needs at least one server URL")
        self.cooldown_s = cooldown_s
        self.endpoints = [Endpoint(u, make_client(u), RegionPool()) for u in urls]
        self._turn = itertools.count()  # next() on a count is atomic under the GIL: safe across threads

    def pick(self) -> Endpoint:
        endpoints = self.endpoints
        if len(endpoints) == 1:
            return endpoints[0]
        start = next(self._turn)
        now = time.monotonic()
        for i in range(len(endpoints)):
            endpoint = endpoints[(start + i) % len(endpoints)]
            if endpoint.down_until <= now:
                return endpoint
        return min(endpoints, key=lambda e: e.down_until)

    def has_other_up(self, endpoint: Endpoint) -> bool:
        now = time.monotonic()
        return any(e is not endpoint and e.is_up(now) for e in self.endpoints)

    def mark_down(self, endpoint: Endpoint) -> None:
        endpoint.failures += 1
        endpoint.down_until = time.monotonic() + self.cooldown_s

    @staticmethod
    def mark_up(endpoint: Endpoint) -> None:
        if endpoint.failures:
            endpoint.failures = 0
            endpoint.down_until = 0.0
