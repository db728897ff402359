"""Timeouts, retries and several servers, against real servers that are stopped and started again.

`mlp_pair` is two extra servers of mlp only, on fixed ports, so a stopped one comes back at the same
address. The tests run in file order and leave both servers running.
"""
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonize.client import NO_RETRY, InferTimeoutError, RequestError, RetryPolicy, TritonClient, UnavailableError
from tritonize.client.errors import GRPC_ADMIN_KEY_HEADER
from tritonize.client.retry import Attempts
from tritonize.serving.server import free_port

pytestmark = pytest.mark.server
X = np.random.default_rng(0).standard_normal((2, 784)).astype(np.float32)


def mlp_requests(server) -> int:
    key = getattr(server, "admin_key", None)  # statistics may be restricted to the server's admin key
    with grpcclient.InferenceServerClient(server.grpc_url) as raw:
        stats = raw.get_inference_statistics("mlp", headers={GRPC_ADMIN_KEY_HEADER: key} if key else None)
        return stats.model_stats[0].inference_stats.success.count


def test_a_timeout_is_a_clear_error_and_is_not_retried(server):
    big = np.random.default_rng(0).standard_normal((64, 3, 24, 24)).astype(np.float32)
    with TritonClient(server.grpc_url, retry=RetryPolicy(initial_backoff_s=5.0)) as client:
        client.model_info("cnn")
        started = time.monotonic()
        with pytest.raises(InferTimeoutError) as error:
            client.infer("cnn", big, timeout_s=0.001)
        elapsed = time.monotonic() - started
        assert str(error.value) == ("[StatusCode.DEADLINE_EXCEEDED] model cnn: no response within the 1 ms timeout "
                                    "(client_timeout; not retried)")
        assert elapsed < 1.0  # a retry would first have waited the 5 s backoff
        assert client.infer("cnn", big, timeout_s=30)["logits"].shape == (64, 10)


def test_only_transient_errors_are_retried():
    policy = RetryPolicy()
    for status, retried in [("StatusCode.UNAVAILABLE", True), ("StatusCode.RESOURCE_EXHAUSTED", True),
                            ("StatusCode.INVALID_ARGUMENT", False), ("StatusCode.DEADLINE_EXCEEDED", False),
                            ("StatusCode.NOT_FOUND", False), ("StatusCode.INTERNAL", False), (None, False)]:
        assert policy.is_retryable(InferenceServerException("x", status=status)) is retried, status
    attempts = Attempts(policy, None, "model m")
    with pytest.raises(InferenceServerException, match="bad"):
        attempts.after_failure(InferenceServerException("bad", status="StatusCode.INVALID_ARGUMENT"), "u", False)
    waits = [RetryPolicy(initial_backoff_s=0.1, max_backoff_s=0.3).backoff_s(n) for n in (1, 2, 3, 4)]
    assert 0.05 <= waits[0] <= 0.1 and 0.1 <= waits[1] <= 0.2 and all(0.15 <= w <= 0.3 for w in waits[2:])


def test_retries_are_bounded_in_attempts_and_time():
    dead = f"127.0.0.1:{free_port()}"
    with TritonClient(dead, retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.05)) as client:
        started = time.monotonic()
        with pytest.raises(UnavailableError, match=f"model mlp: no endpoint could serve the call after 3 attempt.*{dead}"):
            client.model_info("mlp")
        assert time.monotonic() - started < 5
    with TritonClient(dead, retry=RetryPolicy(max_attempts=1000, initial_backoff_s=0.05, budget_s=0.5)) as client:
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="within the retry budget of 500 ms"):
            client.model_info("mlp")
        assert time.monotonic() - started < 3


def test_round_robin_spreads_requests_over_two_servers(mlp_pair):
    a, b = mlp_pair
    with TritonClient([a.grpc_url, b.grpc_url]) as client:
        client.model_info("mlp")
        before = [mlp_requests(a), mlp_requests(b)]
        for _ in range(20):
            client.infer("mlp", X)
        assert [mlp_requests(a) - before[0], mlp_requests(b) - before[1]] == [10, 10]


def test_a_stopped_server_is_skipped_and_used_again_after_its_cooldown(mlp_pair):
    a, b = mlp_pair
    with TritonClient([a.grpc_url, b.grpc_url], cooldown_s=0.5) as client:
        expected = client.infer("mlp", X)["logits"]
        b.stop()
        before_a = mlp_requests(a)
        started = time.monotonic()
        for _ in range(10):
            np.testing.assert_array_equal(client.infer("mlp", X)["logits"], expected)
        assert time.monotonic() - started < 5
        assert mlp_requests(a) - before_a == 10
        b.start()
        time.sleep(0.6)  # past the cooldown
        before = [mlp_requests(a), mlp_requests(b)]
        deadline = time.monotonic() + 20
        while mlp_requests(b) == before[1] and time.monotonic() < deadline:
            client.infer("mlp", X)
        assert mlp_requests(b) > before[1], "the restarted server never got a request again"


def test_a_call_waits_for_a_server_that_is_restarted_on_the_same_ports(mlp_pair):
    a = mlp_pair[0]
    retry = RetryPolicy(max_attempts=200, initial_backoff_s=0.05, max_backoff_s=0.25, budget_s=60)
    with TritonClient(a.grpc_url, retry=retry) as client:
        expected = client.infer("mlp", X)["logits"]
        a.stop()
        # Nothing is sent for a request the client refuses: the error is about the request, not the server.
        with pytest.raises(RequestError):
            client.infer("mlp", X.astype(np.float64))
        with TritonClient(a.grpc_url, retry=NO_RETRY) as no_retry:
            with pytest.raises(UnavailableError):
                no_retry.infer("mlp", X)
        outcome = {}
        thread = threading.Thread(target=lambda: outcome.update(result=client.infer("mlp", X)))
        thread.start()
        time.sleep(0.5)
        assert thread.is_alive(), "the call should be retrying while the server is down"
        a.start()
        thread.join(timeout=60)
        assert not thread.is_alive()
        np.testing.assert_array_equal(outcome["result"]["logits"], expected)
