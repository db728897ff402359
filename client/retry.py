"""When to try a call again, where, and how long to wait first.

Retried: failures of a server rather than of the request, which another server (or this one, a moment
later) can serve. By status: UNAVAILABLE (nothing listening, a connection refused or reset, "Server not
ready" while a server starts or stops) and RESOURCE_EXHAUSTED (a full queue). By Triton's own words, as
2.51 says them (measured):

- INTERNAL "Stub process 'mlp_0_0' is not healthy.": a Python-backend model whose stub process died.
  Every request to that model on that server fails so (after about 1 s) until the server reloads it.
- NOT_FOUND "Request for unknown model: 'mlp' has no available versions": the model is being unloaded,
  as every model is while a server drains on SIGINT, or reloaded.
- NOT_FOUND "Request for unknown model: 'mlp' is not found": this server does not hold the model at all.
  Another server may, so the call goes on to an endpoint it has not tried; but waiting for the same one
  would not help, so with no untried endpoint left the error is the caller's at once.

Never retried: a wrong request (INVALID_ARGUMENT, a model's own error), a restricted call without the
admin key (UNAVAILABLE too, in Triton's words, but asking again changes nothing), and DEADLINE_EXCEEDED,
which means the caller's time is up. `Attempts` tracks one call: attempts made, time spent, and the
call's own deadline; the one retry flow both clients run (`ClientCore._retried`, see flow.py) asks it
after each failure whether to wait, go on or give up.
"""
from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass, field

from tritonclient.utils import InferenceServerException

from .errors import DEADLINE_EXCEEDED, InferTimeoutError, UnavailableError, is_restricted

RETRYABLE = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED"})
# (status, pattern searched in the message), named so that endpoint statistics can tell them apart.
STUB_UNHEALTHY = ("StatusCode.INTERNAL", r"^Stub process '[^']*' is not healthy")
MODEL_UNLOADING = ("StatusCode.NOT_FOUND", r"^Request for unknown model: '[^']*' has no available versions")
MODEL_MISSING = ("StatusCode.NOT_FOUND", r"^Request for unknown model: '[^']*' is not found")
# Failures of one server, retried like RETRYABLE ones.
SERVER_FAILURES = (STUB_UNHEALTHY, MODEL_UNLOADING)
# Failures that another endpoint may not have: retried only on endpoints this call has not tried.
ELSEWHERE_ONLY = (MODEL_MISSING,)
# A request's own `timeout` ran out in the server's queue (a model whose queue policy allows it).
REQUEST_TIMEOUT = "Request timeout expired"


def matches(error: Exception, patterns: tuple[tuple[str, str], ...]) -> bool:
    """The error has one of the (status, message pattern) pairs."""
    if not isinstance(error, InferenceServerException) or not patterns:
        return False
    status, message = error.status(), error.message() or ""
    return any(status == s and re.search(p, message) for s, p in patterns)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff bounded in attempts and in total time.

    The n-th retry waits `initial_backoff_s * multiplier**(n-1)`, capped at `max_backoff_s`, times a
    random factor in [0.5, 1] so that many clients do not retry in step. A retry that can go to
    another, healthy endpoint goes at once. `max_attempts` counts the first attempt; `budget_s`
    bounds the time from the first attempt to the start of the last. `retry_on` (statuses) and
    `retry_when` ((status, message pattern) pairs) say what is retried anywhere, `elsewhere_when`
    what is retried only on endpoints the call has not tried yet."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.05
    multiplier: float = 2.0
    max_backoff_s: float = 1.0
    budget_s: float = 10.0
    retry_on: frozenset[str] = field(default=RETRYABLE)
    retry_when: tuple[tuple[str, str], ...] = field(default=SERVER_FAILURES)
    elsewhere_when: tuple[tuple[str, str], ...] = field(default=ELSEWHERE_ONLY)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.budget_s < 0 or self.multiplier < 1:
            raise ValueError(f"backoff times and budget must be >= 0 and the multiplier >= 1, got {self}")

    def is_retryable(self, error: Exception) -> bool:
        """A failure of the server, not of the request: worth another attempt, here or elsewhere."""
        if not isinstance(error, InferenceServerException) or is_restricted(error):
            return False
        return error.status() in self.retry_on or matches(error, self.retry_when)

    def is_elsewhere_only(self, error: Exception) -> bool:
        """A failure another endpoint may not have, but this one will have again."""
        return matches(error, self.elsewhere_when)

    def backoff_s(self, retry: int) -> float:
        """The wait before retry number `retry` (1 for the first retry)."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))
        return base * random.uniform(0.5, 1.0)


NO_RETRY = RetryPolicy(max_attempts=1)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def server_timeout_us(client_timeout: float | None) -> int | None:
    """The request's own `timeout` parameter (microseconds) for the time left: Triton drops a request
    still queued when it runs out, where the model's queue policy lets a request set its timeout."""
    return None if client_timeout is None else max(1, math.ceil(client_timeout * 1e6))


class Attempts:
    """The attempts of one call under a policy, and the call's deadline (None: no time limit)."""

    def __init__(self, policy: RetryPolicy, timeout_s: float | None, what: str, deadline: float | None = None):
        self.policy = policy
        self.timeout_s = timeout_s
        self.what = what  # e.g. "model mlp", for messages
        self.start = time.monotonic()
        self.deadline = deadline if deadline is not None or timeout_s is None else self.start + timeout_s
        self.count = 0
        self.last_errors: dict[str, str] = {}  # endpoint URL -> its latest retryable error
        self.tried_elsewhere_only: set[str] = set()  # endpoints not to try again in this call

    def client_timeout(self) -> float | None:
        """Seconds left for the next attempt (tritonclient's `client_timeout`); None: no limit."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.timed_out()
        return left

    def timed_out(self, error: InferenceServerException | None = None) -> InferTimeoutError:
        tried = f" after {self.count} attempt(s)" if self.count > 1 else ""
        if self.timeout_s is None:  # not the client's own limit: report what the server said
            return InferTimeoutError(f"{self.what}: deadline exceeded{tried} ({error.message() if error else ''}; "
                                     "not retried)")
        return InferTimeoutError(f"{self.what}: no response within the {_ms(self.timeout_s)} timeout{tried} "
                                 f"(client_timeout; not retried)")

    def _out_of_time(self, error: InferenceServerException) -> bool:
        """The call's time is up: a gRPC deadline, or the request's own timeout that the server applied
        (it started counting on arrival, so it ends at or after the deadline; 1 ms for rounding)."""
        if error.status() == DEADLINE_EXCEEDED:
            return True
        return (self.deadline is not None and REQUEST_TIMEOUT in (error.message() or "")
                and time.monotonic() >= self.deadline - 1e-3)

    def after_failure(self, error: InferenceServerException, url: str, failover: bool,
                      retry_anyway: bool = False) -> float:
        """The seconds to wait before the next attempt, or raise what the caller should see.

        `failover`: another endpoint looks healthy, so the retry goes there without waiting.
        `retry_anyway`: retry at once an error the policy would not retry (the client fixed its own
        state, or another endpoint may not fail so)."""
        self.count += 1
        if self._out_of_time(error):
            raise self.timed_out(error) from error
        if not (retry_anyway or self.policy.is_retryable(error)):
            raise error
        self.last_errors[url] = error.message() or str(error)
        elapsed = time.monotonic() - self.start
        wait = 0.0 if failover or retry_anyway else self.policy.backoff_s(self.count)
        if self.count >= self.policy.max_attempts:
            raise self.gave_up(f"after {self.count} attempt(s) in {_ms(elapsed)}", error) from error
        if elapsed + wait > self.policy.budget_s:
            raise self.gave_up(f"within the retry budget of {_ms(self.policy.budget_s)} "
                               f"({self.count} attempt(s))", error) from error
        if self.deadline is not None and time.monotonic() + wait >= self.deadline:
            raise self.gave_up(f"within the call's {_ms(self.timeout_s)} timeout ({self.count} attempt(s))",
                               error) from error
        return wait

    def nowhere(self, error: InferenceServerException, url: str, endpoints: int) -> UnavailableError:
        """The error once every endpoint has failed in a way only another endpoint could have helped."""
        self.count += 1
        self.last_errors[url] = error.message() or str(error)
        return self.gave_up(f"on any of its {endpoints} endpoints", error)

    def gave_up(self, how: str, error: InferenceServerException) -> UnavailableError:
        recent = "; ".join(f"{url}: {message}" for url, message in self.last_errors.items())
        return UnavailableError(f"{self.what}: no endpoint could serve the call {how}; last error per endpoint: "
                                f"{recent}", status=error.status())
