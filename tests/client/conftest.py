"""Fixtures of the client tests: raw tritonclient access to the session server, and extra servers.

Extra servers load only the models they need (mlp, or a tiny BYTES model), since each start costs
seconds on this machine.
"""
import functools
import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tritonize.client import discovery as discovery_module
from tritonize.client.errors import GRPC_ADMIN_KEY_HEADER
from tritonize.models import get_spec
from tritonize.serving.server import TritonServer, free_port

OUR_SEGMENTS = f"tritonize_client_{os.getpid()}_"

TEXT_CONFIG = """\
name: "text_stats"
backend: "python"
max_batch_size: 8
input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ]
output [
  { name: "length" data_type: TYPE_INT32 dims: [ 1 ] },
  { name: "upper" data_type: TYPE_STRING dims: [ 1 ] }
]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

# A model with BYTES in and out, and a numeric output beside a BYTES one: byte length and upper case
# of each string.
TEXT_MODEL = """\
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "text").as_numpy()
            length = np.vectorize(len, otypes=[np.int32])(text)
            upper = np.vectorize(bytes.upper, otypes=[np.object_])(text)
            responses.append(pb_utils.InferenceResponse(
                [pb_utils.Tensor("length", length), pb_utils.Tensor("upper", upper)]))
        return responses
"""


# tritonclient calls a server may restrict to its admin key (shared memory, model control, statistics).
RESTRICTED_CALLS = ("get_inference_statistics", "get_system_shared_memory_status", "register_system_shared_memory",
                    "unregister_system_shared_memory", "load_model", "unload_model", "get_model_repository_index")


def admin_key(server) -> str | None:
    """The server's admin key, where the server has one (serving/ may restrict its admin APIs)."""
    return getattr(server, "admin_key", None)


def raw_client(server) -> grpcclient.InferenceServerClient:
    """Plain tritonclient on `server`, whose restricted calls carry the server's admin key, if any."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    if admin_key(server):
        headers = {GRPC_ADMIN_KEY_HEADER: admin_key(server)}
        for name in RESTRICTED_CALLS:
            setattr(client, name, functools.partial(getattr(client, name), headers=headers))
    return client


class Clock:
    """A stand-in for time.monotonic that moves only when the test moves it (`clock.now += seconds`)."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """time.monotonic on a clock the test moves, for everything that reads it (the client's modules too)."""
    clock = Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    return clock


@pytest.fixture(scope="session")
def raw(server):
    """Plain tritonclient on the session server: the reference the client is compared with."""
    client = raw_client(server)
    yield client
    client.close()


def request_count(raw_client, model: str, at_least: int | None = None, timeout_s: float = 3.0) -> int:
    """Requests the server has executed for `model`, successful or failed. The server counts a
    request just after answering it, so with `at_least` this waits (bounded) for the count to get there."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = raw_client.get_inference_statistics(model).model_stats[0].inference_stats
        count = stats.success.count + stats.fail.count
        if at_least is None or count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.02)


@pytest.fixture(scope="session")
def requests_seen():
    return request_count


@pytest.fixture(scope="session")
def assert_rows_match(cpu_repository):
    """A check for results of requests the server may have batched together.

    A served variant can depend on its batch's other rows (dynamic INT8 quantizes activations per
    batch), so such results match the reference within the variant's tolerance, not bit for bit;
    and, with `own_rows`, each row must be nearest to its own reference row, so no result went to the
    wrong request (meaningful where rows differ by more than the variant's noise: mlp's 10 logits, not
    the transformer's 2)."""
    from tritonize.export.optimize import PRECISION

    index = json.loads((cpu_repository / "repository.json").read_text())

    def check(model: str, got: list[np.ndarray], want: list[np.ndarray], own_rows: bool = True) -> None:
        tolerance = get_spec(model).tolerance(PRECISION.get(index["models"][model]["variant"], "fp32"))
        got_rows, want_rows = np.concatenate(got), np.concatenate(want)
        assert got_rows.shape == want_rows.shape
        np.testing.assert_allclose(got_rows, want_rows, rtol=tolerance.rtol, atol=tolerance.atol)
        if not own_rows:
            return
        distances = ((got_rows[:, None, :] - want_rows[None, :, :]) ** 2).sum(axis=-1)
        assert (distances.argmin(axis=1) == np.arange(len(got_rows))).all(), "a row matches another request's row"

    return check


@pytest.fixture
def our_segments():
    """A function listing this process's client segments in /dev/shm."""
    return lambda: sorted(p for p in os.listdir("/dev/shm") if p.startswith(OUR_SEGMENTS))


def start_all(servers: list[TritonServer]) -> None:
    """Start servers side by side (each start mostly waits on the server's own loading)."""
    errors = []

    def start(s):
        try:
            s.start()
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    if errors:
        raise errors[0]


def close_all(servers: list[TritonServer]) -> None:
    threads = [threading.Thread(target=s.close) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)


def fixed_port_server(repository: Path, models: list[str]) -> TritonServer:
    """A server on ports chosen now and kept: stop() and start() bring it back at the same address."""
    return TritonServer(repository, models, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port())


@pytest.fixture(scope="module")
def mlp_pair(cpu_repository):
    """Two extra servers of mlp only, on fixed ports, running; tests may stop and restart them."""
    servers = [fixed_port_server(cpu_repository, ["mlp"]) for _ in range(2)]
    try:
        start_all(servers)
        yield servers
    finally:
        close_all(servers)


@pytest.fixture(scope="session")
def text_server(tmp_path_factory):
    """A server of one Python-backend model with BYTES input and outputs (no artifacts needed)."""
    repository = tmp_path_factory.mktemp("text") / "model_repository"
    (repository / "text_stats" / "1").mkdir(parents=True)
    (repository / "text_stats" / "config.pbtxt").write_text(TEXT_CONFIG)
    (repository / "text_stats" / "1" / "model.py").write_text(TEXT_MODEL)
    with TritonServer(repository, ["text_stats"]) as s:
        yield s


# The tiny Python-backend model the failover and discovery tests serve (no artifacts needed):
# y = 2x + 1, exact in float32, so each answer can be checked against numpy; a NaN is refused with
# INVALID_ARG by the model itself (a request error, which the client does not retry). `sleep_s` makes
# each execute slow; `queue_policy` goes into its dynamic_batching block.
AFFINE_CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 16
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 4 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
dynamic_batching {{ {queue_policy} }}
"""
AFFINE_MODEL = """\
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        time.sleep({sleep_s})
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            if np.isnan(x).any():
                error = pb_utils.TritonError("x holds NaN; expected finite values", pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x * np.float32(2) + np.float32(1))]))
        return responses
"""


def _write_affine_model(repository: Path, name: str = "affine", sleep_s: float = 0.0, queue_policy: str = "") -> None:
    (repository / name / "1").mkdir(parents=True)
    (repository / name / "config.pbtxt").write_text(AFFINE_CONFIG.format(name=name, queue_policy=queue_policy))
    (repository / name / "1" / "model.py").write_text(AFFINE_MODEL.format(sleep_s=sleep_s))


@pytest.fixture(scope="session")
def write_affine_model():
    """write_affine_model(repository, name="affine", sleep_s=0.0, queue_policy="") adds the affine model."""
    return _write_affine_model


@pytest.fixture(scope="session")
def affine_trio(tmp_path_factory):
    """Three servers of the tiny Python-backend `affine` model (no artifacts needed), running for the
    session; tests must leave them running."""
    repository = tmp_path_factory.mktemp("affine") / "model_repository"
    _write_affine_model(repository)
    servers = [TritonServer(repository, ["affine"]) for _ in range(3)]
    try:
        start_all(servers)
        yield servers
    finally:
        close_all(servers)


@pytest.fixture(scope="session")
def served_requests():
    """A function (server, model, at_least=None) -> requests `server` has answered for `model`, read with
    its admin key; with `at_least` it waits (bounded) for the count to get there, as `request_count`."""
    def count(server, model: str, at_least: int | None = None) -> int:
        client = raw_client(server)
        try:
            return request_count(client, model, at_least)
        finally:
            client.close()

    return count


@pytest.fixture
def fake_dns(monkeypatch):
    """DNS answers for names ending in .test: the test sets `fake_dns[name] = [(ip, port), ...]` (or an
    exception: the lookup fails); an unset .test name does not resolve, and every other name goes to the
    real resolver. Only the client's discovery sees it; the connections are real."""
    answers: dict[str, object] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if not host.endswith(".test"):
            return real(host, port, *args, **kwargs)
        answer = answers.get(host, socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
        if isinstance(answer, Exception):
            raise answer
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (ip, p, 0, 0) if ":" in ip else (ip, p)) for ip, p in answer]

    monkeypatch.setattr(discovery_module, "getaddrinfo", getaddrinfo)
    return answers
