"""Tensors through system shared memory: same outputs, regions registered while the client lives,
and nothing left in /dev/shm or on the server afterwards, failures included."""
import asyncio
import os

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tritonize.client import AsyncTritonClient, InferTimeoutError, TritonClient
from tritonize.models import get_spec

pytestmark = pytest.mark.server


def shm_listing():
    return set(os.listdir("/dev/shm"))


def key(server):
    """The server's admin key, if it has one: shared memory registration is a restricted call."""
    return getattr(server, "admin_key", None)


def server_regions(raw):
    return {r.name for r in raw.get_system_shared_memory_status().regions.values()}


@pytest.mark.parametrize("name, batch", [("mlp", 64), ("cnn", 8), ("lstm", 3), ("transformer", 4)])
def test_shared_memory_gives_the_same_outputs(server, raw, our_segments, name, batch):
    spec = get_spec(name)
    inputs = spec.example_inputs(batch, spec.default_seq(), np.random.default_rng(4))
    before = our_segments()
    with TritonClient(server.grpc_url) as plain, \
            TritonClient(server.grpc_url, use_shared_memory=True, admin_key=key(server)) as shared:
        expected = plain.infer(name, inputs)
        for _ in range(3):  # the second and third calls reuse the pooled region
            got = shared.infer(name, inputs)
            assert got.keys() == expected.keys()
            for out in expected:
                np.testing.assert_array_equal(got[out], expected[out])
        assert len(our_segments()) == 1  # the pooled region, while the client lives
        assert len(server_regions(raw)) == 1
    assert before == our_segments() == []
    assert server_regions(raw) == set()


def test_a_failing_request_leaves_nothing_behind(server, raw, our_segments):
    listing = shm_listing()
    big = np.random.default_rng(0).standard_normal((64, 3, 24, 24)).astype(np.float32)
    ids = get_spec("transformer").example_inputs(2, 8)
    ids["input_ids"][:] = 5000  # out of the vocabulary: the model itself fails
    with TritonClient(server.grpc_url, use_shared_memory=True, admin_key=key(server)) as client:
        client.model_info("cnn")
        with pytest.raises(InferTimeoutError):
            client.infer("cnn", big, timeout_s=0.001)
        assert our_segments() == []  # destroyed at once, though the server may still hold it
        # The runner refuses the ids (INVALID_ARG); before it checked them, ONNX Runtime failed on them.
        with pytest.raises(InferenceServerException, match="token id 5000|out of data bounds"):
            client.infer("transformer", ids)
        assert our_segments() == []
        assert client.infer("cnn", big)["logits"].shape == (64, 10)  # a fresh region works
    assert our_segments() == []
    assert server_regions(raw) == set()
    assert not {p for p in shm_listing() - listing if p.startswith("tritonize")}


def test_a_byte_threshold_sends_only_large_requests_through_shared_memory(server, raw, our_segments):
    small = np.zeros((1, 784), np.float32)  # 3 KB
    large = np.zeros((64, 784), np.float32)  # 200 KB
    with TritonClient(server.grpc_url, use_shared_memory=100_000, admin_key=key(server)) as client:
        client.infer("mlp", small)
        assert our_segments() == [] and server_regions(raw) == set()
        client.infer("mlp", large)
        assert len(our_segments()) == 1 and len(server_regions(raw)) == 1
    assert our_segments() == [] and server_regions(raw) == set()


def test_async_shared_memory_with_many_requests_in_flight(server, raw, our_segments, assert_rows_match):
    rng = np.random.default_rng(9)
    batches = [rng.standard_normal((1 + i % 8, 784)).astype(np.float32) for i in range(32)]
    with TritonClient(server.grpc_url) as plain:
        expected = [plain.infer("mlp", x)["logits"] for x in batches]

    async def run():
        async with AsyncTritonClient(server.grpc_url, use_shared_memory=True, admin_key=key(server)) as client:
            results = await asyncio.gather(*[client.infer("mlp", x) for x in batches])
            assert 1 <= len(our_segments()) <= 4  # idle regions beyond the pool's cap were released
            return results

    results = asyncio.run(run())
    assert_rows_match("mlp", [r["logits"] for r in results], expected)
    assert our_segments() == []
    assert server_regions(raw) == set()
