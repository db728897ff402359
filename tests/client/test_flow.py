"""The clients' one retry flow (client/flow.py, client/core.py), without a server.

The flows are driven here by hand, on a clock the test moves: each step the flow yields is answered
from a script, so what is retried, where, after which wait and with which error the flow gives up is
checked step by step. Then both clients run the same script through their public calls, on fake
tritonclient clients, and must take the same steps.
"""
import asyncio
import re
from types import SimpleNamespace

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tritonize.client import (
    AsyncTritonClient,
    InferTimeoutError,
    NotReadyError,
    RetryPolicy,
    TritonClient,
    UnavailableError,
)
from tritonize.client import retry as retry_module
from tritonize.client.flow import Call, FlowRun, Sleep
from tritonize.client.model_info import ModelInfo, TensorInfo

URLS = ["127.0.0.1:1", "127.0.0.1:2"]  # never dialled: no step is taken for real in the hand-driven tests
MODEL = ModelInfo("m", "1", 8, (TensorInfo("x", "FP32", (-1, 4)),), (TensorInfo("y", "FP32", (-1, 4)),))
X = np.arange(8, dtype=np.float32).reshape(2, 4)


def error(status: str, message: str = "failed to connect to all addresses") -> InferenceServerException:
    return InferenceServerException(message, status=f"StatusCode.{status}")


@pytest.fixture
def full_backoff(monkeypatch):
    """Backoffs without their random factor: each wait is the policy's upper bound."""
    monkeypatch.setattr(retry_module.random, "uniform", lambda low, high: high)


def drive(flow, answer, clock=None, call_s=0.0):
    """Run a flow by hand: `answer(step)` gives a Call's result or raises its error; a Sleep moves the
    clock, as does each Call by `call_s`. Returns (the steps taken, what the flow returned); an error
    the flow raises carries the steps taken, as `.steps`."""
    steps = []
    try:
        run = FlowRun(flow)
        while not run.finished:
            step = run.step
            steps.append(step)
            with run:
                if isinstance(step, Sleep):
                    clock.now += step.seconds
                else:
                    if clock is not None:
                        clock.now += call_s
                    run.outcome = answer(step)
    except BaseException as e:
        e.steps = steps
        raise
    return steps, run.result


def taken(steps) -> list:
    """Steps as plain values: (url, method) for a Call, ("sleep", seconds) for a Sleep."""
    return [("sleep", round(s.seconds, 6)) if isinstance(s, Sleep) else (s.endpoint.url, s.method) for s in steps]


def infer_flow(client, timeout_s=None):
    [flow] = client._infer_flows("m", MODEL, X, None, timeout_s)
    return flow


def scripted(*answers):
    """Answers to Calls in turn: an exception is raised, anything else is the result; once they run out,
    an inference result."""
    left = list(answers)

    def answer(step):
        if not left:
            return FakeResult(step.args[1])
        value = left.pop(0)
        if isinstance(value, BaseException):
            raise value
        return value
    return answer


class FakeResult:
    """What tritonclient's infer returns, as far as the client reads it: y, of x's shape (0, 1, 2...)."""

    def __init__(self, inputs):
        self.shape = list(inputs[0].shape())

    def as_numpy(self, name):
        return np.arange(np.prod(self.shape), dtype=np.float32).reshape(self.shape)

    def get_output(self, name):
        return SimpleNamespace(shape=self.shape)


# -- the flow runner ------------------------------------------------------------------------------


def test_a_flow_gets_each_outcome_and_errors_it_does_not_handle_come_out_unchanged(clock):
    endpoint = SimpleNamespace(url="u:1", client=None)
    refused = error("INVALID_ARGUMENT", "bad input")

    def flow():
        try:
            yield Call(endpoint, "first")
        except InferenceServerException as e:
            got = f"handled {e.status()}"
        second = yield Call(endpoint, "second")
        yield Sleep(0.5)
        return got, second

    steps, result = drive(flow(), scripted(error("UNAVAILABLE"), "two"), clock)
    assert taken(steps) == [("u:1", "first"), ("u:1", "second"), ("sleep", 0.5)]
    assert result == ("handled StatusCode.UNAVAILABLE", "two")

    def unhandled():
        yield Call(endpoint, "infer")

    with pytest.raises(InferenceServerException) as raised:
        drive(unhandled(), scripted(refused))
    assert raised.value is refused  # the step's own error, not a copy or a wrapper

    def at_once():
        return "done"
        yield  # a flow that ends before its first step

    assert drive(at_once(), None) == ([], "done")


# -- the retry flow, step by step ------------------------------------------------------------------


def test_retries_go_elsewhere_at_once_then_back_off_and_the_give_up_error_names_every_endpoint(clock, full_backoff):
    retry = RetryPolicy(max_attempts=4, initial_backoff_s=0.1, max_backoff_s=1.0)
    with TritonClient(URLS, retry=retry, cooldown_s=5.0) as client:
        a, b = client._ring.endpoints
        refused = [error("UNAVAILABLE", f"refused #{i}") for i in range(1, 5)]
        with pytest.raises(UnavailableError) as raised:
            drive(infer_flow(client), scripted(*refused), clock, call_s=0.01)
        # a fails: b is up, so the retry goes there at once; then no endpoint is up: back off (0.1 * 2**(n-1)
        # for retry n), each time to the endpoint back soonest.
        assert taken(raised.value.steps) == [(a.url, "infer"), (b.url, "infer"), ("sleep", 0.2), (a.url, "infer"),
                                             ("sleep", 0.4), (b.url, "infer")]
        assert str(raised.value) == (
            "[StatusCode.UNAVAILABLE] model m: no endpoint could serve the call after 4 attempt(s) in 640 ms; "
            f"last error per endpoint: {a.url}: refused #3; {b.url}: refused #4")
        assert raised.value.__cause__ is refused[3]
        # Each failure set its endpoint aside (the second time twice as long); nothing is held any more.
        assert (a.ejections, b.ejections) == (2, 2)
        assert [e.in_flight for e in (a, b)] == [0, 0]
        stats = {s.url: s for s in client.endpoint_stats()}
        assert [stats[u].requests for u in (a.url, b.url)] == [2, 2]
        assert [stats[u].failures.unavailable for u in (a.url, b.url)] == [2, 2]
        assert [stats[u].retried_elsewhere for u in (a.url, b.url)] == [2, 1]


def test_the_deadline_bounds_each_attempt_and_the_waits(clock, full_backoff):
    retry = RetryPolicy(max_attempts=100, initial_backoff_s=0.3, multiplier=1.0, budget_s=60)
    with TritonClient(URLS[0], retry=retry) as client:
        [a] = client._ring.endpoints
        with pytest.raises(UnavailableError) as raised:
            drive(infer_flow(client, timeout_s=1.0), scripted(*[error("UNAVAILABLE")] * 9), clock, call_s=0.1)
        calls = [s for s in raised.value.steps if isinstance(s, Call)]
        # Each attempt sends the time left as the gRPC deadline and as Triton's own timeout (µs).
        assert [round(c.kwargs["client_timeout"], 6) for c in calls] == [1.0, 0.6, 0.2]
        assert all(c.kwargs["timeout"] == pytest.approx(1e6 * c.kwargs["client_timeout"], abs=1) for c in calls)
        assert taken(raised.value.steps).count(("sleep", 0.3)) == 2  # a third wait would end past the deadline
        assert "within the call's 1000 ms timeout (3 attempt(s))" in str(raised.value)
        assert a.in_flight == 0

        # The server's DEADLINE_EXCEEDED is the caller's timeout, never retried.
        with pytest.raises(InferTimeoutError, match=r"model m: no response within the 1000 ms timeout after 2 "):
            drive(infer_flow(client, timeout_s=1.0), scripted(error("UNAVAILABLE"), error("DEADLINE_EXCEEDED")),
                  clock, call_s=0.1)
        # Out of time before an attempt: nothing is sent.
        flow = infer_flow(client, timeout_s=0.5)
        clock.now += 0.5
        with pytest.raises(InferTimeoutError, match="no response within the 500 ms timeout"):
            drive(flow, scripted())


def test_what_another_endpoint_cannot_fix_is_raised_at_once(clock, full_backoff):
    with TritonClient(URLS, retry=RetryPolicy(initial_backoff_s=5.0)) as client:
        a, b = client._ring.endpoints
        refused = error("INVALID_ARGUMENT", "x holds NaN")
        with pytest.raises(InferenceServerException) as raised:
            drive(infer_flow(client), scripted(refused), clock)
        assert raised.value is refused and taken(raised.value.steps) == [(a.url, "infer")]
        # A model one server lacks is looked for on the others, once each, without a wait or an ejection.
        missing = [error("NOT_FOUND", "Request for unknown model: 'm' is not found")] * 2
        with pytest.raises(UnavailableError, match=r"on any of its 2 endpoints; last error per endpoint: "
                                                   rf"{b.url}: .*is not found; {a.url}: .*is not found"):
            drive(infer_flow(client), scripted(*missing), clock)
        assert all(e.ejections == 0 and e.in_flight == 0 for e in (a, b))
        # A server that fails, then answers: the call succeeds on the other endpoint, and only the first is
        # set aside.
        steps, result = drive(infer_flow(client), scripted(error("UNAVAILABLE")), clock)
        first, second = [step.endpoint for step in steps]
        assert first is not second and (first.ejections, second.ejections) == (1, 0)
        np.testing.assert_array_equal(result["y"], np.arange(8, dtype=np.float32).reshape(2, 4))


def test_wait_ready_checks_every_endpoint_each_round_until_the_deadline(clock):
    with TritonClient(URLS) as client:
        a, b = client._ring.endpoints
        a.ejections, a.down_until = 1, clock.now + 60  # set aside: a fresh readiness answer brings it back

        def answer(step):
            if step.endpoint is b:
                raise error("UNAVAILABLE", "b is down")
            return step.method == "is_server_ready"  # a is up, its model is not

        with pytest.raises(NotReadyError, match=rf"not ready within 1 s: {a.url}: model m not ready; "
                                                rf"{b.url}: \[StatusCode.UNAVAILABLE\] b is down") as raised:
            drive(client._ready_flow(1.0, "m", every=False), answer, clock, call_s=0.125)
        one_round = [(a.url, "is_server_ready"), (a.url, "is_model_ready"), (b.url, "is_server_ready")]
        assert taken(raised.value.steps) == one_round + [("sleep", 0.1)] + one_round + [("sleep", 0.1)] + one_round
        assert a.ejections == 1 and [e.in_flight for e in (a, b)] == [0, 0]

        steps, ready = drive(client._ready_flow(1.0, None, every=False), answer, clock)
        assert ready == [a.url] and a.ejections == 0
        assert taken(steps) == [(a.url, "is_server_ready"), (b.url, "is_server_ready")]
        with pytest.raises(NotReadyError, match=f"{b.url}: .*b is down"):
            drive(client._ready_flow(0.05, None, every=True), answer, clock)


# -- the two clients take the same steps -----------------------------------------------------------


class FakeServer:
    """A tritonclient client answering from a script: each call but `close` takes the next answer for
    its endpoint (an exception is raised, False is an answer "not ready"; none left: success). Every
    call is logged as (url, method)."""

    def __init__(self, url: str, script: list, log: list, asynchronous: bool):
        self.url, self.script, self.log, self.asynchronous = url, script, log, asynchronous

    def __getattr__(self, method):
        def call(*args, **kwargs):
            self.log.append((self.url, method))
            answer = self.script.pop(0) if self.script and method != "close" else None
            if isinstance(answer, Exception):
                raise answer
            if method == "infer":
                return FakeResult(args[1])
            return answer is not False if method.startswith("is_") else None

        async def call_async(*args, **kwargs):
            return call(*args, **kwargs)

        return call_async if self.asynchronous else call


STUB_DEAD = ("INTERNAL", "Stub process 'm_0_0' is not healthy.")
MISSING = ("NOT_FOUND", "Request for unknown model: 'm' is not found")
# name: (client options, answers per endpoint (None: success), the calls made)
SCRIPTS = {
    "failover": ({}, [[("UNAVAILABLE",)], []], ["infer", "infer"]),
    "gives up": ({}, [[("UNAVAILABLE",)] * 9, [("UNAVAILABLE",)] * 9], ["infer"]),
    "stub, then a server without the model": ({}, [[STUB_DEAD], [MISSING]], ["infer", "infer"]),
    "invalid": ({}, [[("INVALID_ARGUMENT", "x holds NaN")], []], ["infer", "infer"]),
    "deadline": ({"timeout_s": 0.05}, [[("DEADLINE_EXCEEDED", "Deadline Exceeded")], []], ["infer"]),
    "shared memory": ({"use_shared_memory": True}, [[None, ("UNAVAILABLE",)], [None, ("UNAVAILABLE",)]],
                      ["infer", "infer"]),
    "readiness": ({}, [[("UNAVAILABLE",), False], [False, False]], ["wait_ready", "wait_ready every"]),
}


def script(answers):
    return [[a if a is None or a is False else error(*a) for a in per_endpoint] for per_endpoint in answers]


def summary(outcome):
    """What a call gave, comparable across runs: outputs' shapes, ready URLs, or the error (its time left out)."""
    if isinstance(outcome, BaseException):
        return type(outcome).__name__, re.sub(r"in \d+ ms", "in N ms", str(outcome))
    return {k: v.shape for k, v in outcome.items()} if isinstance(outcome, dict) else outcome


def stats(client):
    return [(s.url, s.requests, s.successes, s.failures, s.retried_elsewhere, s.ejected)
            for s in client.endpoint_stats()]


def run_sync(options, answers, calls):
    log, outcomes = [], []
    with TritonClient(URLS, retry=RetryPolicy(initial_backoff_s=0.01), cooldown_s=60, **options) as client:
        client._models["m"] = MODEL
        for endpoint, script_ in zip(client._ring.endpoints, script(answers)):
            endpoint.client.close()
            endpoint.client = FakeServer(endpoint.url, script_, log, asynchronous=False)
        for call in calls:
            try:
                outcomes.append(client.infer("m", X) if call == "infer"
                                else client.wait_ready(1.0, every=call.endswith("every")))
            except InferenceServerException as e:
                outcomes.append(e)
        counts = stats(client)
    return log, [summary(o) for o in outcomes], counts


def run_async(options, answers, calls):
    log, outcomes = [], []

    async def run():
        async with AsyncTritonClient(URLS, retry=RetryPolicy(initial_backoff_s=0.01), cooldown_s=60,
                                     **options) as client:
            client._models["m"] = MODEL
            for endpoint, script_ in zip(client._ring.endpoints, script(answers)):
                await endpoint.client.close()
                endpoint.client = FakeServer(endpoint.url, script_, log, asynchronous=True)
            for call in calls:
                try:
                    outcomes.append(await client.infer("m", X) if call == "infer"
                                    else await client.wait_ready(1.0, every=call.endswith("every")))
                except InferenceServerException as e:
                    outcomes.append(e)
            return stats(client)

    counts = asyncio.run(run())
    return log, [summary(o) for o in outcomes], counts


@pytest.mark.parametrize("name", SCRIPTS)
def test_sync_and_async_clients_take_the_same_steps_for_the_same_answers(name, full_backoff):
    options, answers, calls = SCRIPTS[name]
    sync_log, sync_outcomes, sync_stats = run_sync(options, answers, calls)
    async_log, async_outcomes, async_stats = run_async(options, answers, calls)
    assert async_log == sync_log and len(sync_log) > len(calls)
    assert async_outcomes == sync_outcomes
    assert async_stats == sync_stats


def test_a_cancelled_unregistration_keeps_the_names_it_did_not_get_to(clock):
    with TritonClient(URLS[0]) as client:
        [a] = client._ring.endpoints
        a.regions.requeue_pending(["r1", "r2", "r3"])
        with pytest.raises(asyncio.CancelledError) as raised:
            drive(client._unregister_pending(a), scripted(None, asyncio.CancelledError()), clock)
        assert [step.args[0] for step in raised.value.steps] == ["r1", "r2"]
        assert a.regions.take_pending() == ["r2", "r3"]  # r2's answer never came: asked again later
