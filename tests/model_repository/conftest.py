"""A real server of mlp and minilm with test-only serving hints (#24), shared by the input-check and
queue-policy tests: a batching window, so requests sent together reach one `execute` call (when their
shapes match: Triton batches only equal shapes), and a small queue on mlp, so a flood overflows it.

Both models come from the session's `artifacts` (exported once for the whole test run); the repository
is written by the writer under test, from the models' real specs with these hints.
"""
import dataclasses
import shutil
import threading
import time
import uuid
from types import SimpleNamespace

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import np_to_triton_dtype

from tritonize.models import ServingHints, get_spec
from tritonize.serving.server import TritonServer

# Requests sent within this window of the first one reach the model in one `execute` call (unless
# max_batch_size rows arrive first); long enough for a loaded 2-core machine to send a few requests.
WINDOW_US = 200_000
MAX_BATCH = 8
MLP_QUEUE = 4  # mlp's queue bound: more requests than this waiting are refused
HINTS = {
    "mlp": ServingHints(max_batch_size=MAX_BATCH, max_queue_delay_us=WINDOW_US, queue_policy=True,
                        max_queue_size=MLP_QUEUE),
    "minilm": ServingHints(max_batch_size=MAX_BATCH, max_queue_delay_us=WINDOW_US),
}
CALL_TIMEOUT_S = 60  # no answer by then fails the test instead of hanging it


@pytest.fixture(scope="session")
def guarded(artifacts, tmp_path_factory):
    """The server, its repository and the test hints."""
    from tritonize.model_repository.writer import build_repository

    repository = tmp_path_factory.mktemp("guarded") / "model_repository"
    # minilm without its text front end, which is not served here.
    specs = [dataclasses.replace(get_spec(n), serving=h, text=None) for n, h in HINTS.items()]
    build_repository(specs, artifacts, repository, "cpu")
    with TritonServer(repository, sorted(HINTS)) as server:
        yield SimpleNamespace(server=server, url=server.grpc_url, repository=repository, hints=HINTS,
                              window_s=WINDOW_US / 1e6, mlp_queue=MLP_QUEUE)


@pytest.fixture
def raw_client(guarded):
    client = grpcclient.InferenceServerClient(guarded.url)
    yield client
    client.close()


def _infer_inputs(arrays):
    out = []
    for name, array in arrays.items():
        tensor = grpcclient.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


@pytest.fixture
def send_together(raw_client):
    """send_together(model, [(arrays, infer kwargs), ...]) -> [(InferResult or exception, seconds)]:
    every request sent at once (async, one client), each answer with its time since the first send."""

    def send(model, requests):
        done = [threading.Event() for _ in requests]
        answers = [None] * len(requests)
        start = time.monotonic()
        for i, (arrays, kwargs) in enumerate(requests):
            def callback(result, error, i=i):
                answers[i] = (error if error is not None else result, time.monotonic() - start)
                done[i].set()
            raw_client.async_infer(model, _infer_inputs(arrays), callback, **kwargs)
        for event in done:
            assert event.wait(CALL_TIMEOUT_S), f"a {model} request got no answer within {CALL_TIMEOUT_S} s"
        return answers

    return send


@pytest.fixture
def model_stats(guarded, raw_client):
    """model_stats(model) -> the server's statistics of `model` (execution_count: `execute` calls;
    inference_count: rows executed). Sends the admin key where the server restricts statistics."""
    key = getattr(guarded.server, "admin_key", None)
    headers = None
    if key is not None:  # a server that restricts its admin APIs (serving/admin.py) has a key
        from tritonize.serving.admin import admin_headers

        headers = admin_headers(key)

    def stats(model):
        return raw_client.get_inference_statistics(model, headers=headers).model_stats[0]

    return stats


# The store's tests (test_store.py, test_store_faults.py): one MLP repository, published in many ways.
@pytest.fixture(scope="session")
def mlp_repository(tmp_path_factory):
    """A CPU repository of the MLP alone, from a real export (legacy exporter and the fp32 variant: fast)."""
    from tritonize.export.optimize import optimize_model
    from tritonize.export.stage import export_model
    from tritonize.model_repository.writer import build_repository

    root = tmp_path_factory.mktemp("store")
    spec = get_spec("mlp")
    export_model(spec, root / "artifacts", exporter="legacy")
    optimize_model(spec, root / "artifacts", variants=("fp32",), latency_iters=5, agreement_rows=16)
    build_repository([spec], root / "artifacts", root / "repo", "cpu")
    return root / "repo"


@pytest.fixture
def repo(mlp_repository, tmp_path):
    """A copy of the MLP repository this test may change."""
    return shutil.copytree(mlp_repository, tmp_path / "repo")


@pytest.fixture
def url(s3_env):
    return f"s3://{s3_env.bucket}/t-{uuid.uuid4().hex[:8]}/models"  # a prefix of its own per test


@pytest.fixture
def change_model_file():
    """change_model_file(repo, model="mlp"): same graph, other bytes (the ONNX model's doc string), so the
    changed version still serves."""
    import onnx

    def change(repo, model="mlp"):
        path = repo / model / "1" / "model.onnx"
        onnx_model = onnx.load(path)
        onnx_model.doc_string = f"changed {uuid.uuid4()}"
        onnx.save(onnx_model, path)

    return change
