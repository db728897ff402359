"""A batch larger than the model's max batch size is split, sent in chunks, and joined in order."""
import asyncio

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tritonize.client import AsyncTritonClient, TritonClient
from tritonize.models import get_spec

pytestmark = pytest.mark.server


def raw_logits(raw, model, x):
    t = grpcclient.InferInput("x", list(x.shape), "FP32")
    t.set_data_from_numpy(x)
    return raw.infer(model, [t]).as_numpy("logits")


@pytest.fixture(scope="module")
def rows():
    return np.random.default_rng(3).standard_normal((150, 784)).astype(np.float32)


def test_150_rows_through_mlp_max_64_equal_the_chunks_and_the_rows(server, raw, rows, requests_seen,
                                                                   assert_rows_match):
    before = requests_seen(raw, "mlp")
    with TritonClient(server.grpc_url) as client:
        got = client.infer("mlp", rows)["logits"]
    assert requests_seen(raw, "mlp", at_least=before + 3) - before == 3  # 64 + 64 + 22 rows
    assert got.shape == (150, 10)
    chunks = np.concatenate([raw_logits(raw, "mlp", rows[i:i + 64]) for i in range(0, 150, 64)])
    np.testing.assert_array_equal(got, chunks)
    assert_rows_match("mlp", [got], [raw_logits(raw, "mlp", rows[i:i + 1]) for i in range(150)])


def test_async_sends_the_chunks_together_and_keeps_the_order(server, raw, rows, assert_rows_match):
    async def run():
        async with AsyncTritonClient(server.grpc_url) as client:
            return (await client.infer("mlp", rows))["logits"]

    got = asyncio.run(run())
    assert got.shape == (150, 10)
    assert_rows_match("mlp", [got], [raw_logits(raw, "mlp", rows[i:i + 1]) for i in range(150)])


def test_multi_input_model_is_split_on_every_input(server, raw):
    spec = get_spec("transformer")  # max batch 32
    inputs = spec.example_inputs(70, 17, np.random.default_rng(5))
    with TritonClient(server.grpc_url) as client:
        got = client.infer("transformer", inputs)["logits"]
        parts = [client.infer("transformer", {k: v[i:i + 32] for k, v in inputs.items()})["logits"]
                 for i in range(0, 70, 32)]
    assert got.shape == (70, 2)
    np.testing.assert_array_equal(got, np.concatenate(parts))
