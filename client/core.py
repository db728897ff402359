"""What the sync and the asyncio client share: options, the model cache, failure handling.

The two clients differ only in how they wait (blocking calls and `time.sleep`, or `await`); every
decision (which endpoint, retry or not, shared memory or not, how to split a batch) is made here.
"""
from __future__ import annotations

import math
import os
import time
from typing import Sequence, Union

from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE
from tritonclient.utils import InferenceServerException

from . import DEFAULT_URL
from .discovery import Discovery
from .endpoints import Endpoint, EndpointRing
from .errors import AdminKeyError, NotReadyError, admin_key_refused, check_admin_key, is_restricted
from .model_info import ModelInfo
from .request import Request
from .retry import Attempts, RetryPolicy
from .stats import EndpointStats

Targets = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]

# Triton refuses to unregister a region a request still uses; how long close() keeps asking.
UNREGISTER_WAIT_S = 2.0
UNREGISTER_POLL_S = 0.02
CONTROL_TIMEOUT_S = 5.0  # limit for the client's own housekeeping RPCs (unregister)


def channel_args() -> list[tuple[str, object]]:
    """tritonclient's own defaults, plus a quick reconnect: gRPC waits up to 120 s between
    reconnection attempts by default, so a restarted server would stay unused long after it is up.
    A local subchannel pool gives each client a connection of its own."""
    return [
        ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.use_local_subchannel_pool", 1),
    ]


def shm_threshold(use_shared_memory: bool | int) -> float | None:
    """True: every request; an int: requests whose inputs hold at least that many bytes; False: none."""
    if use_shared_memory is True:
        return 0
    if use_shared_memory is False or use_shared_memory is None:
        return None
    if isinstance(use_shared_memory, int) and use_shared_memory >= 0:
        return use_shared_memory
    raise ValueError(f"use_shared_memory must be True, False or a byte threshold >= 0, got {use_shared_memory!r}")


def is_in_use(error: InferenceServerException) -> bool:
    """Triton's answer to unregistering a region that a request still reads or writes."""
    return "in use" in (error.message() or "")


def is_stale_region(error: InferenceServerException) -> bool:
    """The server does not know a region this client registered: it restarted in between."""
    message = (error.message() or "").lower()
    return "shared memory" in message and ("unable to find" in message or "not found" in message)


class ClientCore:
    """Options and state common to `TritonClient` and `AsyncTritonClient`."""

    def __init__(self, urls: Targets = DEFAULT_URL, *, timeout_s: float | None = None,
                 retry: RetryPolicy | None = None, use_shared_memory: bool | int = False,
                 split_batches: bool = True, cooldown_s: float = 2.0, admin_key: str | None = None,
                 refresh_s: float | None = None):
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 (or None for no limit), got {timeout_s}")
        if not cooldown_s >= 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
        self.timeout_s = timeout_s
        self.retry = retry if retry is not None else RetryPolicy()
        self.shm_threshold = shm_threshold(use_shared_memory)
        self.split_batches = split_batches
        self.cooldown_s = cooldown_s
        # Only the headers are kept, under a private name, and no repr or message shows them.
        self._admin_headers = check_admin_key(admin_key)
        # Last of the checks: a DNS name is resolved and an endpoints file read here, once the options are
        # known to be good; a target that names no server is an error now, not at the first call.
        self._discovery = Discovery(urls, refresh_s)
        self._models: dict[str, ModelInfo] = {}
        self._closed = False
        self._open()

    def __repr__(self) -> str:
        key = ", admin_key=<set>" if self._admin_headers else ""
        return f"{type(self).__name__}({self._discovery.targets!r}{key})"

    @property
    def urls(self) -> list[str]:
        """The endpoints' URLs as last resolved (host:port, [IPv6]:port), in the order the targets name them."""
        return list(self._discovery.urls)

    @property
    def targets(self) -> list[str]:
        """What the client was given, in canonical form: host:port, dns:///NAME:PORT, file:PATH."""
        return self._discovery.targets

    def _open(self) -> None:
        """Set up the client's connections and state (each client class its own)."""
        raise NotImplementedError

    def _make_ring(self, client_class) -> EndpointRing:
        return EndpointRing(self._discovery.urls, lambda url: client_class(url, channel_args=channel_args()),
                            self.cooldown_s, source_of=self._discovery.source_of)

    def _stale(self, ring: EndpointRing) -> bool:
        """Discovery knows a set of endpoints the ring does not have yet."""
        return [e.url for e in ring.endpoints] != self._discovery.urls

    @staticmethod
    def _ring_stats(ring: EndpointRing | None) -> list[EndpointStats]:
        return [] if ring is None else ring.stats()

    @staticmethod
    def _note_retry(failed_on: Endpoint | None, endpoint: Endpoint, counted: bool) -> None:
        """A call that failed on `failed_on` now goes to `endpoint`: booked when that is another one."""
        if counted and failed_on is not None and failed_on is not endpoint:
            failed_on.counters.sent_elsewhere()

    @staticmethod
    def _book(ring: EndpointRing, endpoint: Endpoint, sent_at: float, counted: bool,
              error: BaseException | None) -> bool:
        """Book an attempt's outcome and release the endpoint; True when the caller must now close it
        (discovery removed it, and this was its last call). A cancelled call is no failure of the server."""
        if counted:
            if error is None:
                endpoint.counters.succeeded(time.monotonic() - sent_at)
            elif isinstance(error, Exception):
                endpoint.counters.failed(error)
        return ring.release(endpoint)

    def _deadline(self, timeout_s: float | None) -> tuple[float | None, float | None]:
        """The call's timeout and the monotonic time it ends at; (None, None) for no limit."""
        if timeout_s is None:
            timeout_s = self.timeout_s
            if timeout_s is None:
                return None, None
        if math.isinf(timeout_s):
            return None, None
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        return timeout_s, time.monotonic() + timeout_s

    def _attempts(self, what: str, timeout_s: float | None, deadline: float | None) -> Attempts:
        return Attempts(self.retry, timeout_s, what, deadline)

    def _wants_shm(self, request: Request) -> bool:
        return self.shm_threshold is not None and request.nbytes >= self.shm_threshold

    def _after_failure(self, ring: EndpointRing, attempts: Attempts, endpoint: Endpoint,
                       error: InferenceServerException, sent_at: float) -> float:
        """Set the endpoint aside on a retryable error, and say how long to wait before retrying
        (or raise). `sent_at`: when the failed call was sent (time.monotonic())."""
        policy = attempts.policy
        if isinstance(error, AdminKeyError):  # raised by the client itself, on a call that sent the key
            raise error
        if is_restricted(error):  # a restricted call: the key is missing or wrong, everywhere alike
            raise self._refused(endpoint, f"a call for {attempts.what}", error, key_sent=False)
        if is_stale_region(error):
            # The server restarted while the client was idle: its pooled regions are gone there.
            endpoint.regions.discard_idle()
            return attempts.after_failure(error, endpoint.url, failover=False, retry_anyway=True)
        if policy.is_elsewhere_only(error) and len(ring.endpoints) > 1 and policy.max_attempts > 1:
            # This server lacks the model; another may hold it. No ejection: it serves other models.
            attempts.tried_elsewhere_only.add(endpoint.url)
            if not ring.has_untried(attempts.tried_elsewhere_only):
                raise attempts.nowhere(error, endpoint.url, len(ring.endpoints)) from error
            return attempts.after_failure(error, endpoint.url, failover=True, retry_anyway=True)
        if policy.is_retryable(error):
            ring.failed(endpoint, sent_at)
            # A restarted server forgets registrations; a live one gets the stale names unregistered.
            endpoint.regions.discard_idle()
        return attempts.after_failure(error, endpoint.url, ring.has_other_up(endpoint))

    def _refused(self, endpoint: Endpoint, call: str, error: InferenceServerException,
                 key_sent: bool) -> AdminKeyError:
        refused = admin_key_refused(endpoint.url, call, self._admin_headers is not None, key_sent)
        refused.__cause__ = error
        return refused

    def _readiness(self, ready: list[str], last: dict[str, str], every: bool, deadline: float,
                   timeout_s: float) -> tuple[list[str] | None, float]:
        """After one round of readiness checks: (the ready URLs, 0) when done, else (None, seconds to
        sleep before the next round); raises NotReadyError once the deadline has passed."""
        if ready and (not every or len(ready) == len(self._ring.endpoints)):
            return ready, 0.0
        left = deadline - time.monotonic()
        if left <= 0:
            raise NotReadyError(f"not ready within {timeout_s:g} s: "
                                + "; ".join(f"{u}: {why}" for u, why in last.items() if u not in ready))
        return None, min(0.1, left)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this client is closed; create a new one")
