"""What tritonize's client adds to a round trip, against raw tritonclient (pytest-benchmark).

One server of the mlp (plain FP32 export, so results do not depend on the batch) on loopback; every
path does a whole round trip per call: numpy in, request built, sent, numpy out.

    raw_grpc / raw_http   tritonclient.grpc / .http, InferInput built per call, as in its examples
    raw_grpc_shm          tritonclient.grpc with one system shared memory region registered up front
    client_grpc           tritonize.client.TritonClient
    client_grpc_shm       TritonClient(use_shared_memory=True) (pooled region)

at batch 1 and 64. pytest-benchmark's table has the medians; each row's extra_info carries p50/p99
in ms, and `test_overhead_interleaved` times raw_grpc and client_grpc call by call in alternation, so
machine noise (runs on a shared box differ from one another) hits both alike, and reports the ratio of
their p50s. At the end of the module a summary table is written to the terminal.

    .venv/bin/pytest studies/test_client_overhead.py --benchmark-only -q -p no:cacheprovider

A study of the project's, run by hand from a checkout (studies/ is not installed), not one of its tests.
"""
from __future__ import annotations

import contextlib
import itertools
import statistics
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm

from tritonize.client import TritonClient
from tritonize.export.stage import export_model
from tritonize.model_repository.writer import build_repository
from tritonize.models import get_spec
from tritonize.serving.admin import admin_headers
from tritonize.serving.server import TritonServer

MODEL = "mlp"
ROW_COUNTS = [1, 64]
PATHS = ["raw_grpc", "raw_http", "raw_grpc_shm", "client_grpc", "client_grpc_shm"]
ROUNDS = {1: 1500, 64: 500}
WARMUP_ROUNDS = 100


@pytest.fixture(scope="module")
def mlp_server(tmp_path_factory):
    """A server of the mlp, from artifacts exported into a temporary folder."""
    root = tmp_path_factory.mktemp("client_overhead")
    spec = get_spec(MODEL)
    export_model(spec, root / "artifacts")
    build_repository([spec], root / "artifacts", root / "model_repository", "cpu")
    with TritonServer(root / "model_repository", [MODEL]) as server:
        yield server


@pytest.fixture(scope="module")
def summary(request):
    """Rows collected by the tests, printed as one table when the module is done."""
    rows: dict[tuple[str, int], dict] = {}
    yield rows
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not rows:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        _write_summary(reporter.write_line, rows)


def _write_summary(write, rows: dict[tuple[str, int], dict]) -> None:
    write("")
    write(f"client overhead, {MODEL}, round trip in ms; ratio = p50 / raw_grpc p50 "
          "(interleaved rows: / interleaved raw p50)")
    write(f"{'path':<20}{'rows':>5}{'p50':>10}{'p99':>10}{'vs raw_grpc':>13}")
    for (path, row_count), r in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        base = rows.get(("interleaved raw" if path.startswith("interleaved") else "raw_grpc", row_count))
        ratio = f"{r['p50_ms'] / base['p50_ms']:.3f}" if base else ""
        write(f"{path:<20}{row_count:>5}{r['p50_ms']:>10.3f}{r['p99_ms']:>10.3f}{ratio:>13}")


def _raw_sender(module, url: str, x: np.ndarray):
    client = module.InferenceServerClient(url)

    def send():
        tensor = module.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        return client.infer(MODEL, [tensor]).as_numpy("logits")

    return send, client.close


def _raw_shm_sender(url: str, x: np.ndarray, admin_key: str):
    """The raw tritonclient way: one region for input and output, registered once (with the server's
    admin key: registration is a restricted call), reused."""
    client = grpcclient.InferenceServerClient(url)
    headers = admin_headers(admin_key)
    out_bytes = x.shape[0] * 10 * 4
    name = f"bench_raw_{x.shape[0]}"
    handle = shm.create_shared_memory_region(name, f"/{name}", x.nbytes + out_bytes)
    client.register_system_shared_memory(name, f"/{name}", x.nbytes + out_bytes, headers=headers)

    def send():
        shm.set_shared_memory_region(handle, [x])
        tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
        tensor.set_shared_memory(name, x.nbytes)
        output = grpcclient.InferRequestedOutput("logits")
        output.set_shared_memory(name, out_bytes, offset=x.nbytes)
        result = client.infer(MODEL, [tensor], outputs=[output])
        shape = list(result.get_output("logits").shape)
        return np.array(shm.get_contents_as_numpy(handle, np.float32, shape, offset=x.nbytes))

    def close():
        try:
            client.unregister_system_shared_memory(name, headers=headers)
        finally:
            shm.destroy_shared_memory_region(handle)
            client.close()

    return send, close


def _client_sender(url: str, x: np.ndarray, use_shared_memory: bool, admin_key: str):
    client = TritonClient(url, use_shared_memory=use_shared_memory, admin_key=admin_key)
    return (lambda: client.infer(MODEL, x)["logits"]), client.close


def make_sender(path: str, server: TritonServer, x: np.ndarray):
    if path == "raw_grpc":
        return _raw_sender(grpcclient, server.grpc_url, x)
    if path == "raw_http":
        return _raw_sender(httpclient, server.http_url, x)
    if path == "raw_grpc_shm":
        return _raw_shm_sender(server.grpc_url, x, server.admin_key)
    return _client_sender(server.grpc_url, x, use_shared_memory=path == "client_grpc_shm", admin_key=server.admin_key)


def _percentiles_ms(samples: list[float]) -> dict[str, float]:
    ms = np.asarray(samples) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


@pytest.mark.parametrize("row_count", ROW_COUNTS)
@pytest.mark.parametrize("path", PATHS)
def test_round_trip(benchmark, mlp_server, summary, path, row_count):
    x = np.random.default_rng(0).standard_normal((row_count, 784)).astype(np.float32)
    reference, close_reference = _raw_sender(grpcclient, mlp_server.grpc_url, x)
    expected = reference()
    close_reference()
    send, close = make_sender(path, mlp_server, x)
    try:
        np.testing.assert_array_equal(send(), expected)  # every path computes the same thing
        benchmark.group = f"{MODEL} batch {row_count}"
        benchmark.extra_info.update(model=MODEL, rows=row_count, path=path)
        benchmark.pedantic(send, rounds=ROUNDS[row_count], iterations=1, warmup_rounds=WARMUP_ROUNDS)
    finally:
        close()
    if benchmark.stats is not None:  # None under --benchmark-disable
        result = _percentiles_ms(benchmark.stats.stats.data)
        benchmark.extra_info.update(result)
        summary[(path, row_count)] = result


@pytest.mark.parametrize("row_count", ROW_COUNTS)
def test_overhead_interleaved(benchmark, mlp_server, summary, row_count):
    """raw_grpc and client_grpc alternately, call by call; extra_info holds both p50s and their ratio.
    The benchmark's own row times the pair."""
    x = np.random.default_rng(1).standard_normal((row_count, 784)).astype(np.float32)
    raw_send, raw_close = make_sender("raw_grpc", mlp_server, x)
    client_send, client_close = make_sender("client_grpc", mlp_server, x)
    timings = {"raw": [], "client": []}
    orders = itertools.cycle([(("raw", raw_send), ("client", client_send)),
                              (("client", client_send), ("raw", raw_send))])

    def pair():
        for name, send in next(orders):  # who goes first alternates, so neither always follows the other
            start = time.perf_counter()
            send()
            timings[name].append(time.perf_counter() - start)

    try:
        for _ in range(WARMUP_ROUNDS):
            pair()
        timings = {"raw": [], "client": []}
        benchmark.group = f"{MODEL} batch {row_count} interleaved"
        benchmark.pedantic(pair, rounds=ROUNDS[row_count], iterations=1)
    finally:
        raw_close()
        client_close()
    raw_p50, client_p50 = statistics.median(timings["raw"]), statistics.median(timings["client"])
    benchmark.extra_info.update(model=MODEL, rows=row_count, raw_p50_ms=raw_p50 * 1e3, client_p50_ms=client_p50 * 1e3,
                                overhead_ratio=client_p50 / raw_p50)
    summary[("interleaved raw", row_count)] = _percentiles_ms(timings["raw"])
    summary[("interleaved client", row_count)] = _percentiles_ms(timings["client"])
