"""The asyncio client: same surface and results as the blocking one, many requests in flight."""
import asyncio
import time

import numpy as np
import pytest

from tritonize.client import (
    AsyncTritonClient,
    InferTimeoutError,
    NotReadyError,
    RequestError,
    RetryPolicy,
    TritonClient,
)
from tritonize.models import get_spec
from tritonize.serving.server import free_port

pytestmark = pytest.mark.server


def test_32_requests_in_flight_all_correct(server, assert_rows_match):
    rng = np.random.default_rng(11)
    spec = get_spec("transformer")
    requests = [("mlp", {"x": rng.standard_normal((1 + i % 4, 784)).astype(np.float32)}) if i % 2 else
                ("transformer", spec.example_inputs(1 + i % 3, 9, rng)) for i in range(32)]
    with TritonClient(server.grpc_url) as sync_client:
        expected = [sync_client.infer(model, inputs)["logits"] for model, inputs in requests]

    async def run():
        async with AsyncTritonClient(server.grpc_url) as client:
            await client.wait_ready(10)
            started = time.perf_counter()
            results = await asyncio.gather(*[client.infer(model, inputs) for model, inputs in requests])
            return results, time.perf_counter() - started

    results, elapsed = asyncio.run(run())
    assert len(results) == 32
    for model in ("mlp", "transformer"):
        mine = [i for i, (m, _) in enumerate(requests) if m == model]
        assert [results[i]["logits"].shape for i in mine] == [expected[i].shape for i in mine]
        assert_rows_match(model, [results[i]["logits"] for i in mine], [expected[i] for i in mine],
                          own_rows=model == "mlp")
    assert elapsed < 10


def test_async_surface_matches_the_sync_one(server):
    x = np.random.default_rng(2).standard_normal((2, 784)).astype(np.float32)

    async def run():
        async with AsyncTritonClient(server.grpc_url) as client:
            info = await client.model_info("mlp")
            assert info is await client.model_info("mlp")
            out = await client.infer("mlp", x, outputs=["logits"], timeout_s=10)
            with pytest.raises(RequestError, match="model mlp input 'x': expected FP32"):
                await client.infer("mlp", x.astype(np.float64))
            return info, out

    info, out = asyncio.run(run())
    with TritonClient(server.grpc_url) as client:
        assert client.model_info("mlp") == info
        np.testing.assert_array_equal(out["logits"], client.infer("mlp", x)["logits"])


def test_async_timeout_is_a_clear_error_and_not_retried(server):
    x = np.random.default_rng(0).standard_normal((64, 3, 24, 24)).astype(np.float32)

    async def run():
        async with AsyncTritonClient(server.grpc_url, retry=RetryPolicy(initial_backoff_s=5.0)) as client:
            await client.model_info("cnn")
            started = time.monotonic()
            with pytest.raises(InferTimeoutError, match="model cnn: no response within the 1 ms timeout") as e:
                await client.infer("cnn", x, timeout_s=0.001)
            return e.value, time.monotonic() - started

    error, elapsed = asyncio.run(run())
    assert error.status() == "StatusCode.DEADLINE_EXCEEDED" and isinstance(error, TimeoutError)
    assert elapsed < 1.0  # a retry would have waited the 5 s backoff first


def test_async_wait_ready_gives_up_in_time():
    async def run():
        async with AsyncTritonClient(f"127.0.0.1:{free_port()}") as client:
            with pytest.raises(NotReadyError):
                await client.wait_ready(0.3)

    started = time.monotonic()
    asyncio.run(run())
    assert time.monotonic() - started < 3


def test_concurrent_first_calls_share_one_metadata_fetch(server):
    async def run():
        async with AsyncTritonClient(server.grpc_url) as client:
            return await asyncio.gather(*[client.model_info("cnn") for _ in range(8)])

    infos = asyncio.run(run())
    assert all(info is infos[0] for info in infos)  # one fetch: one object, not eight equal ones
