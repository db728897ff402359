import itertools
import threading
import time

import pytest

from tritonize.bench.load.loadgen import closed_loop, open_loop


def flaky_sender_factory(every: int = 5, sleep_s: float = 0.001):
    """Real work for the generator to drive: sleeps, and fails on every `every`-th call overall."""
    counter = itertools.count(1)
    lock = threading.Lock()

    def make():
        def send():
            with lock:
                n = next(counter)
            time.sleep(sleep_s)
            if n % every == 0:
                raise RuntimeError(f"call {n} failed")
        return send

    return make, counter


def test_closed_loop_counts_every_request_and_error():
    make, counter = flaky_sender_factory(every=5)
    result = closed_loop(make, concurrency=4, duration_s=30, max_requests=200)
    assert result.sent == 200 == result.ok + result.errors
    assert result.errors == 40 and len(result.latencies_ms) == 160
    assert next(counter) == 201  # exactly max_requests calls were made
    assert result.first_errors and "failed" in result.first_errors[0] and len(result.first_errors) <= 5
    assert all(lat >= 1.0 for lat in result.latencies_ms)  # each call sleeps 1 ms


def test_closed_loop_stops_at_its_time_bound():
    make, _ = flaky_sender_factory(every=10**9, sleep_s=0.01)
    t0 = time.perf_counter()
    result = closed_loop(make, concurrency=2, duration_s=0.3, max_requests=10**6)
    elapsed = time.perf_counter() - t0
    assert 0.3 <= elapsed < 1.5 and result.errors == 0  # stopped by time, long before 10**6 requests
    assert 4 <= result.sent <= 62  # at most 2 workers x 10 ms calls for 0.3 s (+1 each in flight)
    summary = result.summary()
    assert summary.throughput_rps == pytest.approx(result.ok / result.duration_s)
    assert summary.p50_ms >= 10.0 and (summary.sent, summary.ok, summary.level) == (result.sent, result.ok, 2)


def test_open_loop_follows_the_rate_and_counts_errors():
    make, _ = flaky_sender_factory(every=4, sleep_s=0.002)
    result = open_loop(make, rate_rps=200, duration_s=1.0, max_requests=10**6)
    # Poisson arrivals: 200 expected, standard deviation ~14.
    assert 140 <= result.sent <= 260
    assert result.sent == result.ok + result.errors and result.errors == result.sent // 4


def test_open_loop_stops_at_its_count_bound():
    make, counter = flaky_sender_factory(every=10**9)
    result = open_loop(make, rate_rps=2000, duration_s=30, max_requests=50)
    assert result.sent == 50 == result.ok and next(counter) == 51
    assert result.duration_s < 5


@pytest.mark.parametrize("kwargs, message", [
    (dict(duration_s=0, max_requests=1), "duration_s > 0"),
    (dict(duration_s=1, max_requests=0), "max_requests >= 1"),
])
def test_bad_bounds_are_rejected(kwargs, message):
    make, _ = flaky_sender_factory()
    with pytest.raises(ValueError, match=message):
        closed_loop(make, 1, **kwargs)
    with pytest.raises(ValueError, match="concurrency must be >= 1, got 0"):
        closed_loop(make, 0, 1, 1)
    with pytest.raises(ValueError, match="rate_rps must be > 0"):
        open_loop(make, 0, 1, 1)


def test_a_sender_that_fails_while_warming_up_stops_the_run_with_its_error():
    def make():
        def send():
            raise ConnectionError("server is down")
        return send

    with pytest.raises(RuntimeError, match="failed while warming up: server is down"):
        closed_loop(make, concurrency=3, duration_s=5, max_requests=10, warmup_requests=1)
