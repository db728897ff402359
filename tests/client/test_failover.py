"""Failover between two real servers (#24): what is retried where, deadlines, the admin key.

`pair` is two servers of a tiny Python-backend model, `affine` (y = 2x + 1, exact in float32, so every
answer can be checked against numpy in-process; a NaN input is refused with INVALID_ARG by the model
itself, as a model that validates values does). Server A also serves `slow`, whose queue policy lets a
request's deadline drop it from the queue. Each server restricts shared memory, model control and
statistics to its own admin key, as every tritonize server does. The tests run in file order: the stub test
reloads the model it broke, and the last test stops server A for good.
"""
import asyncio
import os
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonize.client import (
    AdminKeyError,
    AsyncTritonClient,
    InferTimeoutError,
    RetryPolicy,
    TritonClient,
    UnavailableError,
)
from tritonize.client.errors import ADMIN_KEY_HEADER, GRPC_ADMIN_KEY_HEADER
from tritonize.serving.server import TritonServer

pytestmark = pytest.mark.server

# With `allow_timeout_override`, Triton 2.51 drops a queued request whose gRPC deadline has passed, and
# honours a request's own `timeout` below the default (measured; without it an abandoned request runs).
QUEUE_POLICY = ("default_queue_policy { timeout_action: REJECT default_timeout_microseconds: 60000000 "
                "allow_timeout_override: true }")
SLOW_S = 0.5
DRAIN_S = 2.0
INVALID_ARGUMENT = "StatusCode.INVALID_ARGUMENT"


def affine(x: np.ndarray) -> np.ndarray:
    """The model, in-process: the reference every served answer must equal exactly."""
    return x * np.float32(2) + np.float32(1)


def rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 4)).astype(np.float32)


class Served:
    """A server (restricted to its admin key, as every tritonize server is) and tritonclient calls on it."""

    def __init__(self, repository, models):
        # A short drain: once a stub has died, its old instance never finishes unloading, and the server
        # waits the whole drain (then as long again, its own exit timeout) before it exits.
        self.server = TritonServer(repository, models, drain_s=DRAIN_S)
        self.key = self.server.admin_key

    @property
    def url(self) -> str:
        return self.server.grpc_url

    def admin(self, call: str, *args):
        """A restricted tritonclient call on this server, with the key."""
        with grpcclient.InferenceServerClient(self.url) as raw:
            return getattr(raw, call)(*args, headers={GRPC_ADMIN_KEY_HEADER: self.key})

    def executed(self, model: str) -> int:
        """Rows of `model` the server has taken from its queue and executed."""
        return self.admin("get_inference_statistics", model).model_stats[0].inference_count

    def requests(self, model: str) -> int:
        """Requests of `model` the server has answered, successfully or not."""
        stats = self.admin("get_inference_statistics", model).model_stats[0].inference_stats
        return stats.success.count + stats.fail.count

    def stub_pid(self, model: str) -> int:
        """The Python-backend stub process of `model`'s instance: a child of the server (read from /proc)."""
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except (OSError, ValueError, IndexError):
                continue
            if (ppid == self.server.process.pid and len(argv) > 1  # a dead stub's zombie has no argv
                    and argv[0].endswith("triton_python_backend_stub") and f"/{model}/" in argv[1]):
                return int(pid)
        raise AssertionError(f"no triton_python_backend_stub of {model} under server pid {self.server.process.pid}")


@pytest.fixture(scope="module")
def pair(tmp_path_factory, write_affine_model):
    repository = tmp_path_factory.mktemp("failover") / "model_repository"
    write_affine_model(repository)
    write_affine_model(repository, "slow", sleep_s=SLOW_S, queue_policy=QUEUE_POLICY)
    a, b = Served(repository, ["affine", "slow"]), Served(repository, ["affine"])
    try:
        with ThreadPoolExecutor(2) as pool:  # side by side: a start mostly waits on the server's loading
            list(pool.map(lambda s: s.server.start(), (a, b)))
        yield a, b
    finally:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: s.server.close(), (a, b)))


class Spy:
    """Every attempt a client makes to infer or register shared memory: endpoint URL, outcome, kwargs."""

    def __init__(self, endpoints):
        self.calls: list[tuple[str, str, str, dict]] = []  # (url, call, "ok" or "STATUS message", kwargs)
        for endpoint in endpoints:
            for call in ("infer", "register_system_shared_memory"):
                setattr(endpoint.client, call, self._wrap(endpoint.url, call, getattr(endpoint.client, call)))

    def _wrap(self, url, call, method):
        def outcome(kwargs, error=None):
            self.calls.append((url, call, "ok" if error is None else f"{error.status()} {error.message()}", kwargs))

        if asyncio.iscoroutinefunction(method):
            async def spied(*args, **kwargs):
                try:
                    result = await method(*args, **kwargs)
                except InferenceServerException as e:
                    outcome(kwargs, e)
                    raise
                outcome(kwargs)
                return result
        else:
            def spied(*args, **kwargs):
                try:
                    result = method(*args, **kwargs)
                except InferenceServerException as e:
                    outcome(kwargs, e)
                    raise
                outcome(kwargs)
                return result
        return spied

    def outcomes(self, url: str | None = None, call: str = "infer") -> Counter:
        return Counter(o.split(" ", 1)[0] for u, c, o, _ in list(self.calls) if c == call and url in (None, u))


def test_what_is_retried_where():
    policy = RetryPolicy()

    def error(status, message):
        return InferenceServerException(message, status=status)

    retried = [error("StatusCode.UNAVAILABLE", "failed to connect to all addresses; ... Connection refused"),
               error("StatusCode.UNAVAILABLE", "Stream removed (recvmsg:Connection reset by peer (104))"),
               error("StatusCode.UNAVAILABLE", "Server not ready"),
               error("StatusCode.RESOURCE_EXHAUSTED", "Exceeds maximum queue size"),
               error("StatusCode.INTERNAL", "Stub process 'mlp_0_0' is not healthy."),
               error("StatusCode.NOT_FOUND", "Request for unknown model: 'mlp' has no available versions")]
    refused = [error(INVALID_ARGUMENT, "unexpected shape for input 'x'"),
               error("StatusCode.INTERNAL", "model raised: index out of data bounds"),
               error("StatusCode.NOT_FOUND", "Request for unknown model: 'mlp' is not found"),
               error("StatusCode.UNAVAILABLE", "This protocol is restricted, expecting header "
                                               f"'{GRPC_ADMIN_KEY_HEADER}'"),
               error("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded")]
    assert [policy.is_retryable(e) for e in retried] == [True] * len(retried)
    assert [policy.is_retryable(e) for e in refused] == [False] * len(refused)
    assert [policy.is_elsewhere_only(e) for e in refused] == [False, False, True, False, False]


def test_invalid_arg_is_raised_at_once_without_retries(pair):
    a, b = pair
    slow_retries = RetryPolicy(max_attempts=10, initial_backoff_s=2.0)  # a retry would show in time and count
    with TritonClient([a.url, b.url], retry=slow_retries) as client:
        x = rows(2, 0)
        # Read before the first call: a server counts a request just after answering it, so a count read
        # right after the call may or may not hold it yet.
        before = a.requests("affine") + b.requests("affine")
        np.testing.assert_array_equal(client.infer("affine", x)["y"], affine(x))
        spy = Spy(client._ring.endpoints)
        x[1, 2] = np.nan  # fits the model's metadata, so the client sends it; the model refuses it
        started = time.monotonic()
        with pytest.raises(InferenceServerException) as raised:
            client.infer("affine", x)
        assert time.monotonic() - started < 1.0
        assert raised.value.status() == INVALID_ARGUMENT
        assert raised.value.message() == "x holds NaN; expected finite values"
        assert spy.outcomes() == {INVALID_ARGUMENT: 1}
        # The servers' own count: the good request and the refused one reached them, each once.
        deadline = time.monotonic() + 3
        while a.requests("affine") + b.requests("affine") - before < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)  # a retry of the refused one, had there been one, would be counted by now
        assert a.requests("affine") + b.requests("affine") - before == 2
        # Not the server's fault: nothing was set aside, and the next calls still alternate.
        assert all(e.ejections == 0 for e in client._ring.endpoints)
        for i in range(4):
            client.infer("affine", rows(1, i))
        assert spy.outcomes(a.url)["ok"] == spy.outcomes(b.url)["ok"] == 2

    async def run():
        async with AsyncTritonClient([a.url, b.url], retry=slow_retries) as client:
            await client.model_info("affine")
            spy = Spy(client._ring.endpoints)
            with pytest.raises(InferenceServerException) as raised:
                await client.infer("affine", np.full((1, 4), np.nan, np.float32))
            return raised.value.status(), spy.outcomes()

    assert asyncio.run(run()) == (INVALID_ARGUMENT, {INVALID_ARGUMENT: 1})


def test_a_model_one_server_lacks_is_found_on_the_other(pair):
    a, b = pair
    with TritonClient([b.url, a.url], retry=RetryPolicy(initial_backoff_s=2.0)) as client:
        started = time.monotonic()
        assert client.model_info("slow").max_batch_size == 16  # b says "is not found", a has it
        with pytest.raises(UnavailableError, match=r"model nope: no endpoint could serve the call on any of its 2 "
                                                   r"endpoints; .*Request for unknown model: 'nope' is not found"):
            client.model_info("nope")
        assert time.monotonic() - started < 1.0  # no backoff: a server lacking a model does not get it by waiting
        assert all(e.ejections == 0 for e in client._ring.endpoints)  # b still serves its other models
    with TritonClient(b.url, retry=RetryPolicy(initial_backoff_s=2.0)) as alone:
        with pytest.raises(InferenceServerException, match="Request for unknown model: 'slow' is not found"):
            alone.model_info("slow")  # nowhere else to look: the server's own answer, at once


def test_the_deadline_goes_to_the_server_which_drops_the_abandoned_request(pair):
    a, _ = pair
    x = rows(1, 1)
    with TritonClient(a.url) as client:
        client.model_info("slow")
        spy = Spy(client._ring.endpoints)
        before = a.executed("slow")
        busy = ThreadPoolExecutor(1).submit(client.infer, "slow", x)  # holds the one instance for SLOW_S
        time.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(InferTimeoutError, match="model slow: no response within the 150 ms timeout"):
            client.infer("slow", x, timeout_s=0.15)  # queued behind `busy`, abandoned before it runs
        assert time.monotonic() - started < 0.5
        np.testing.assert_array_equal(busy.result(timeout=10)["y"], affine(x))
        time.sleep(SLOW_S)  # had the server kept it, the abandoned request would have run by now
        assert a.executed("slow") - before == 1
        # What went out: the call's time left as gRPC deadline and as Triton's `timeout` (microseconds);
        # a call without a timeout sends neither.
        [limited] = [kwargs for *_, kwargs in spy.calls if kwargs["client_timeout"] is not None]
        assert 0.1 < limited["client_timeout"] <= 0.15
        assert limited["timeout"] == pytest.approx(1e6 * limited["client_timeout"], abs=1)
        assert [kwargs["timeout"] for *_, kwargs in spy.calls if kwargs["client_timeout"] is None] == [None]


def test_the_admin_key_goes_only_with_restricted_calls_and_never_shows(pair):
    a, _ = pair
    x = rows(3, 2)
    with TritonClient(a.url, use_shared_memory=True, admin_key=a.key) as client:
        spy = Spy(client._ring.endpoints)
        np.testing.assert_array_equal(client.infer("affine", x)["y"], affine(x))
        assert len(a.admin("get_system_shared_memory_status").regions) == 1
        assert a.key not in repr(client) and "admin_key=<set>" in repr(client)
        [registered] = [kwargs for _, call, _, kwargs in spy.calls if call == "register_system_shared_memory"]
        assert registered["headers"] == {ADMIN_KEY_HEADER: a.key, GRPC_ADMIN_KEY_HEADER: a.key}
        infers = [kwargs for _, call, _, kwargs in spy.calls if call == "infer"]
        assert [kwargs.get("headers") for kwargs in infers] == [None]  # never on inference
    assert len(a.admin("get_system_shared_memory_status").regions) == 0  # unregistered, with the key
    wrong = "not-" + a.key
    for key, given in [(None, "this client has no admin_key"), (wrong, "it refused the admin_key this client sent")]:
        with TritonClient(a.url, use_shared_memory=True, admin_key=key, retry=RetryPolicy(initial_backoff_s=2.0)) as c:
            c.model_info("affine")
            spy = Spy(c._ring.endpoints)
            started = time.monotonic()
            with pytest.raises(AdminKeyError) as raised:
                c.infer("affine", x)
            message = str(raised.value)
            assert time.monotonic() - started < 1.0 and spy.outcomes(call="register_system_shared_memory") == \
                {"StatusCode.UNAVAILABLE": 1}  # Triton's status for it; not retried all the same
            assert f"{a.url} refused shared memory registration: it expects its admin key in header " \
                   f"'{GRPC_ADMIN_KEY_HEADER}', and {given}" in message
            assert a.key not in message and wrong not in message and c._ring.endpoints[0].ejections == 0
    for bad, error in [(7, "admin_key must be a str \\(or None\\), got int"),
                       ("", "got a str of 0 character"), (" " + a.key, f"got a str of {len(a.key) + 1} character")]:
        with pytest.raises((TypeError, ValueError), match=error) as raised:
            TritonClient(a.url, admin_key=bad)
        assert a.key not in str(raised.value)

    async def run():
        async with AsyncTritonClient(a.url, use_shared_memory=True, admin_key=a.key) as client:
            return (await client.infer("affine", x))["y"]

    np.testing.assert_array_equal(asyncio.run(run()), affine(x))


def test_a_killed_stub_sends_requests_to_the_other_server_until_it_is_back(pair):
    a, b = pair
    cooldown_s = 0.5
    with TritonClient([a.url, b.url], cooldown_s=cooldown_s, timeout_s=20) as client:
        for i in range(4):
            client.infer("affine", rows(1, i))
        spy = Spy(client._ring.endpoints)
        os.kill(a.stub_pid("affine"), signal.SIGKILL)
        started, answers = time.monotonic(), 0
        while time.monotonic() - started < 3.0:
            x = rows(answers % 3 + 1, 100 + answers)
            np.testing.assert_array_equal(client.infer("affine", x)["y"], affine(x))
            answers += 1
        elapsed = time.monotonic() - started
        on_a = spy.outcomes(a.url)
        assert on_a["StatusCode.INTERNAL"] >= 1, f"the dead stub never answered: {on_a}"
        assert any("Stub process 'affine_0_0' is not healthy" in o for u, _, o, _ in spy.calls if u == a.url)
        # Set aside, not hammered: after the first failure, a gets one probe per cool-down at most, each
        # twice as long as the last; plain round-robin would have sent it half of the requests.
        assert on_a["StatusCode.INTERNAL"] <= 1 + elapsed / cooldown_s, on_a
        assert spy.outcomes(b.url)["ok"] >= answers - on_a["ok"] and answers >= 20

        # The server reloads the model, as serving/ does for a dead stub (on 2.51 a plain load is a no-op
        # then: it takes an unload first). The next probe finds it well, and a is back in the ring.
        a.admin("unload_model", "affine")
        a.admin("load_model", "affine")
        deadline = time.monotonic() + 15
        while spy.outcomes(a.url)["ok"] == on_a["ok"] and time.monotonic() < deadline:
            x = rows(2, 7)
            np.testing.assert_array_equal(client.infer("affine", x)["y"], affine(x))
            time.sleep(0.01)
        assert spy.outcomes(a.url)["ok"] > on_a["ok"], "a never got a request again after the reload"


def test_a_server_stopped_mid_stream_costs_the_caller_nothing(pair):
    a, b = pair
    errors, answers, stop = [], Counter(), threading.Event()
    with TritonClient([a.url, b.url], cooldown_s=0.5, timeout_s=20) as client:
        client.model_info("affine")
        spy = Spy(client._ring.endpoints)

        def send(seed: int) -> None:
            rng = np.random.default_rng(seed)
            while not stop.is_set():
                x = rng.standard_normal((int(rng.integers(1, 5)), 4)).astype(np.float32)
                try:
                    y = client.infer("affine", x)["y"]
                    answers["right" if np.array_equal(y, affine(x)) else "wrong"] += 1
                except Exception as e:  # every failure that reaches the caller is reported
                    errors.append(repr(e))

        threads = [threading.Thread(target=send, args=(seed,)) for seed in (1, 2)]
        for t in threads:
            t.start()
        try:
            deadline = time.monotonic() + 10
            while min(spy.outcomes(a.url)["ok"], spy.outcomes(b.url)["ok"]) < 20 and time.monotonic() < deadline:
                time.sleep(0.02)
            a.server.stop()  # SIGINT: the server drains (finishes what it has, refuses the rest), then exits
            served_by_b = spy.outcomes(b.url)["ok"]
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
    assert errors == []
    assert answers["wrong"] == 0 and answers["right"] >= 100, answers
    on_a = spy.outcomes(a.url)
    assert on_a["ok"] >= 20 and sum(on_a.values()) > on_a["ok"], f"a never failed while it stopped: {on_a}"
    assert spy.outcomes(b.url)["ok"] > served_by_b
