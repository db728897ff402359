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

The set can change while calls run (`update`, fed by discovery): an endpoint that appears joins the
rotation with a clean record; one that vanishes takes no new call and is closed by whoever finishes
its last call in flight (`release`), so no call loses its channel under it. Its record stays
readable in `stats()` for a while (`REMOVED_KEPT`).
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Sequence

from .shared_memory import RegionPool
from .stats import Counters, EndpointStats

DEFAULT_PORT = 8001  # tritonserver's gRPC port
MAX_COOLDOWN_FACTOR = 8  # the longest cool-down, in units of the first one
REMOVED_KEPT = 32  # records of removed endpoints kept for stats(): enough for a rollout, bounded for years


def normalize_url(url: str, expected: str = "expected host:port, e.g. 127.0.0.1:8001") -> str:
    """`host:port` as gRPC takes it; a bare host gets Triton's gRPC port, a grpc:// or http:// scheme is
    dropped. Anything else that is not host:port (another scheme, a path, a bad port, an IPv6 address
    without brackets) is a ValueError saying `expected` and what was given."""
    given = url
    url = url.strip()
    for scheme in ("grpc://", "http://"):
        if url.startswith(scheme):
            url = url[len(scheme):]
    host, port, why = split_host_port(url)
    if why is not None:
        raise ValueError(f"{expected}, got {given!r}: {why}")
    return f"{host}:{port or DEFAULT_PORT}"


def split_host_port(url: str) -> tuple[str, str, str | None]:
    """(host, port or "" when none is given, None), or ("", "", what is wrong with `url`)."""
    if not url:
        return "", "", "it is empty"
    if "/" in url or any(c.isspace() for c in url):
        return "", "", "not a host:port (a scheme, a path or a space in it)"
    if url.startswith("["):  # [IPv6]:port
        address, bracket, rest = url[1:].partition("]")
        if not bracket or not address or (rest and not rest.startswith(":")):
            return "", "", "an IPv6 address goes in brackets, [ADDRESS]:PORT"
        host, colon, port = f"[{address}]", rest[:1], rest[1:]
    else:
        host, colon, port = url.rpartition(":") if ":" in url else (url, "", "")
        if ":" in host:
            return "", "", "an IPv6 address goes in brackets, [ADDRESS]:PORT"
        if not host:
            return "", "", "no host before the port"
    if colon and not (port.isdigit() and 0 < int(port) < 65536):
        return "", "", "the port must be a number from 1 to 65535"
    return host, port, None


@dataclass(eq=False)
class Endpoint:
    url: str
    client: Any  # tritonclient.grpc(.aio).InferenceServerClient
    regions: RegionPool
    down_until: float = 0.0  # time.monotonic() before which this endpoint is set aside
    probe_until: float = 0.0  # a probe is out until then: other calls keep away
    ejected_at: float = -1.0  # when it was last set aside (-1: never)
    ejections: int = 0  # consecutive ejections without a success since; each doubles the cool-down
    source: str = ""  # the target that named it (host:port, dns:///..., file:...)
    counters: Counters = field(default_factory=Counters)
    in_flight: int = 0  # calls using it now (guarded by the ring's lock)
    removed: bool = False  # no longer listed: no new calls; closed once in_flight is 0
    closing: bool = False  # someone was told to close it: exactly one closer

    def is_up(self, now: float) -> bool:
        return self.down_until <= now and self.probe_until <= now


class EndpointRing:
    """Round-robin choice among endpoints, skipping those set aside (see the module doc)."""

    def __init__(self, urls: Sequence[str], make_client: Callable[[str], Any], cooldown_s: float,
                 max_cooldown_s: float | None = None, source_of: Callable[[str], str] = lambda url: url):
        if not urls:
            raise ValueError("a client needs at least one server URL")
        if not cooldown_s >= 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max(cooldown_s, MAX_COOLDOWN_FACTOR * cooldown_s if max_cooldown_s is None
                                  else max_cooldown_s)
        self.probe_s = max(cooldown_s, 0.1)
        self._make_client = make_client
        self._source_of = source_of
        # Replaced, never changed in place: a reader holding the list sees one consistent set.
        self.endpoints = [self._new(u) for u in urls]
        self.removed: deque[Endpoint] = deque(maxlen=REMOVED_KEPT)
        self.closed = False
        self._turn = itertools.count()  # next() on a count is atomic under the GIL: safe across threads
        self._lock = threading.Lock()  # never held across an await or an RPC: safe for asyncio too
        self._update_lock = threading.Lock()  # one update at a time (it makes clients outside _lock)

    def _new(self, url: str) -> Endpoint:
        return Endpoint(url, self._make_client(url), RegionPool(), source=self._source_of(url))

    def pick(self, avoid: Collection[str] = ()) -> Endpoint:
        """The next endpoint that is up, among those whose URL is not in `avoid` (when any is left).
        The call now holds it: `release` it when done."""
        start = next(self._turn)
        with self._lock:
            endpoint = self._choose(self.endpoints, avoid, start, time.monotonic())
            endpoint.in_flight += 1
        return endpoint

    def _choose(self, endpoints: list[Endpoint], avoid: Collection[str], start: int, now: float) -> Endpoint:
        if len(endpoints) == 1:
            return endpoints[0]
        if avoid:
            endpoints = [e for e in endpoints if e.url not in avoid] or endpoints
        for i in range(len(endpoints)):
            endpoint = endpoints[(start + i) % len(endpoints)]
            if endpoint.is_up(now):
                if endpoint.ejections:  # back from its cool-down: this call is the probe
                    endpoint.probe_until = now + self.probe_s
                return endpoint
        return min(endpoints, key=lambda e: max(e.down_until, e.probe_until))

    def acquire(self, endpoint: Endpoint) -> bool:
        """Hold an endpoint chosen by the caller (a readiness check); False when it is removed."""
        with self._lock:
            if endpoint.removed:
                return False
            endpoint.in_flight += 1
            return True

    def release(self, endpoint: Endpoint) -> bool:
        """A call is done with it; True when the endpoint was removed and the caller must now close it."""
        with self._lock:
            endpoint.in_flight -= 1
            if endpoint.removed and endpoint.in_flight == 0 and not endpoint.closing:
                endpoint.closing = True
                return True
            return False

    def update(self, urls: Sequence[str]) -> list[Endpoint]:
        """Make `urls` the endpoints, in order: known ones keep their state, new ones start clean. Returns
        the removed endpoints that are idle, for the caller to close; busy ones close on `release`."""
        if not urls:
            raise ValueError("an endpoint update needs at least one URL")  # discovery keeps the last good set
        with self._update_lock:
            known = {e.url for e in self.endpoints}
            fresh = {u: self._new(u) for u in urls if u not in known}  # channels connect lazily: quick
            with self._lock:
                if self.closed:  # the client closed meanwhile: what was just made goes at once
                    return list(fresh.values())
                current = {e.url: e for e in self.endpoints}
                self.endpoints = [current.pop(u, None) or fresh[u] for u in urls]
                to_close = []
                for endpoint in current.values():
                    endpoint.removed = True
                    self.removed.append(endpoint)
                    if endpoint.in_flight == 0:
                        endpoint.closing = True
                        to_close.append(endpoint)
                return to_close

    def close_all(self) -> list[Endpoint]:
        """Stop updates; every endpoint not yet being closed (current and removed), for the caller to close."""
        with self._update_lock, self._lock:
            self.closed = True
            left = [e for e in [*self.endpoints, *self.removed] if not e.closing]
            for endpoint in left:
                endpoint.closing = True
            return left

    def stats(self) -> list[EndpointStats]:
        """A record per endpoint: the current ones in order, then the removed ones still kept."""
        now = time.monotonic()
        return [EndpointStats(url=e.url, source=e.source, requests=e.counters.requests,
                              successes=e.counters.successes, failures=e.counters.failures(),
                              retried_elsewhere=e.counters.retried_elsewhere, latency=e.counters.latency(),
                              ejected=e.ejections > 0, down_for_s=max(0.0, e.down_until - now),
                              in_flight=e.in_flight, removed=e.removed)
                for e in [*self.endpoints, *self.removed]]

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
