"""When to try a call again, and how long to wait first.

Only failures that say "not now" are retried (UNAVAILABLE: nothing listening, or the server shutting
down; RESOURCE_EXHAUSTED: a full queue). A wrong request (INVALID_ARGUMENT, NOT_FOUND, ...) fails the
same way every time, and a DEADLINE_EXCEEDED means the caller's time is up. `Attempts` tracks one
call: attempts made, time spent, and the call's own deadline, so sync and async clients share it.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from tritonclient.utils import InferenceServerException

from .errors import DEADLINE_EXCEEDED, InferTimeoutError, UnavailableError

RETRYABLE = frozenset({"StatusCode.UNAVAILABLE", "StatusCode.RESOURCE_EXHAUSTED"})


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff bounded in attempts and in total time.

    The n-th retry waits `initial_backoff_s * multiplier**(n-1)`, capped at `max_backoff_s`, times a
    random factor in [0.5, 1] so that many clients do not retry in step. A retry that can go to
    another, healthy endpoint goes at once. `max_attempts` counts the first attempt; `budget_s`
    bounds the time from the first attempt to the start of the last."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.05
    multiplier: float = 2.0
    max_backoff_s: float = 1.0
    budget_s: float = 10.0
    retry_on: frozenset[str] = field(default=RETRYABLE)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.initial_backoff_s < 0 or self.max_backoff_s < 0 or self.budget_s < 0 or self.multiplier < 1:
            raise ValueError(f"backoff times and budget must be >= 0 and the multiplier >= 1, got {self}")

    def is_retryable(self, error: Exception) -> bool:
        return isinstance(error, InferenceServerException) and error.status() in self.retry_on

    def backoff_s(self, retry: int) -> float:
        """The wait before retry number `retry` (1 for the first retry)."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))
        return base * random.uniform(0.5, 1.0)


NO_RETRY = RetryPolicy(max_attempts=1)


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


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

    def after_failure(self, error: InferenceServerException, url: str, failover: bool,
                      retry_anyway: bool = False) -> float:
        """The seconds to wait before the next attempt, or raise what the caller should see.

        `failover`: another endpoint looks healthy, so the retry goes there without waiting.
        `retry_anyway`: retry an error the policy would not (the client fixed its own state)."""
        self.count += 1
        if error.status() == DEADLINE_EXCEEDED:
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

    def gave_up(self, how: str, error: InferenceServerException) -> UnavailableError:
        recent = "; ".join(f"{url}: {message}" for url, message in self.last_errors.items())
        return UnavailableError(f"{self.what}: no endpoint could serve the call {how}; last error per endpoint: "
                                f"{recent}", status=error.status())
