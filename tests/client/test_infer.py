"""The blocking client against the real server: same results as raw tritonclient, metadata from the
server, BYTES tensors, readiness."""
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tritonize.client import NotReadyError, TritonClient
from tritonize.models import get_spec
from tritonize.serving.server import free_port

pytestmark = pytest.mark.server
MODELS = ["mlp", "cnn", "lstm", "transformer"]


def raw_infer(raw, model, inputs):
    """The reference: a hand-built tritonclient request, as in tritonclient's own examples."""
    tensors = []
    for name, x in inputs.items():
        t = grpcclient.InferInput(name, list(x.shape), {np.float32: "FP32", np.int64: "INT64"}[x.dtype.type])
        t.set_data_from_numpy(x)
        tensors.append(t)
    result = raw.infer(model, tensors)
    return {o.name: result.as_numpy(o.name) for o in result.get_response().outputs}


@pytest.mark.parametrize("name", MODELS)
def test_outputs_equal_a_raw_tritonclient_call_exactly(server, raw, name):
    spec = get_spec(name)
    rng = np.random.default_rng(7)
    with TritonClient(server.grpc_url) as client:
        for batch in (1, 5, spec.serving.max_batch_size):
            inputs = spec.example_inputs(batch, spec.default_seq(), rng)
            got = client.infer(name, inputs)
            expected = raw_infer(raw, name, inputs)
            assert got.keys() == expected.keys() == set(spec.output_names)
            for out in expected:
                assert got[out].dtype == expected[out].dtype
                np.testing.assert_array_equal(got[out], expected[out])


def test_a_one_input_model_takes_a_bare_array_and_outputs_can_be_chosen(server, raw):
    x = np.random.default_rng(1).standard_normal((3, 784)).astype(np.float32)
    with TritonClient(server.grpc_url) as client:
        bare = client.infer("mlp", x)
        named = client.infer("mlp", {"x": x}, outputs=["logits"])
    np.testing.assert_array_equal(bare["logits"], named["logits"])
    np.testing.assert_array_equal(bare["logits"], raw_infer(raw, "mlp", {"x": x})["logits"])


def test_model_info_comes_from_the_server_and_is_read_once(server):
    with TritonClient(server.grpc_url) as client:
        info = client.model_info("transformer")
        assert client.model_info("transformer") is info
        assert info.max_batch_size == 32 and info.batching
        assert [(t.name, t.datatype, t.shape) for t in info.inputs] == [
            ("input_ids", "INT64", (-1, -1)), ("attention_mask", "INT64", (-1, -1))]
        assert [(t.name, t.datatype, t.shape) for t in info.outputs] == [("logits", "FP32", (-1, 2))]
        assert client.model_info("transformer", refresh=True) is not info


def test_one_channel_per_endpoint_reused_by_every_call(server):
    with TritonClient(server.grpc_url) as client:
        (endpoint,) = client._ring.endpoints
        channel = endpoint.client._channel
        for _ in range(5):
            client.infer("mlp", np.zeros((1, 784), np.float32))
        assert client._ring.endpoints == [endpoint] and endpoint.client._channel is channel


@pytest.mark.parametrize("use_shared_memory", [False, True], ids=["grpc", "shm"])
def test_bytes_tensors_in_and_out(text_server, use_shared_memory, our_segments):
    texts = np.array([["héllo"], ["ab"], [""]])  # numpy str: sent as UTF-8
    with TritonClient(text_server.grpc_url, use_shared_memory=use_shared_memory,
                      admin_key=getattr(text_server, "admin_key", None)) as client:
        info = client.model_info("text_stats")
        assert info.inputs[0].datatype == "BYTES"
        for given in (texts, texts.astype(np.object_), np.array([[s.encode()] for s in texts[:, 0]], dtype=object)):
            out = client.infer("text_stats", given)
            np.testing.assert_array_equal(out["length"], [[6], [2], [0]])
            assert out["upper"].tolist() == [["HéLLO".encode()], [b"AB"], [b""]]
    assert our_segments() == []


def test_wait_ready_returns_the_ready_urls_and_fails_in_time_on_a_dead_port(server):
    with TritonClient(server.grpc_url) as client:
        assert client.wait_ready(10, model="mlp") == [server.grpc_url]
    dead = f"127.0.0.1:{free_port()}"
    with TritonClient(dead) as client:
        start = time.monotonic()
        with pytest.raises(NotReadyError, match=f"not ready within 0.5 s: {dead}"):
            client.wait_ready(0.5)
        assert time.monotonic() - start < 3
    with TritonClient([dead, server.grpc_url]) as client:
        assert client.wait_ready(10) == [server.grpc_url]
        with pytest.raises(NotReadyError):
            client.wait_ready(0.3, every=True)


def test_a_closed_client_says_so(server):
    client = TritonClient(server.grpc_url)
    client.close()
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.infer("mlp", np.zeros((1, 784), np.float32))


def test_threads_share_the_client_and_one_metadata_fetch(server):
    from concurrent.futures import ThreadPoolExecutor

    x = np.random.default_rng(8).standard_normal((1, 784)).astype(np.float32)
    with TritonClient(server.grpc_url) as client, ThreadPoolExecutor(4) as pool:
        infos = list(pool.map(lambda _: client.model_info("lstm"), range(8)))
        outputs = list(pool.map(lambda _: client.infer("mlp", x)["logits"], range(16)))
    assert all(info is infos[0] for info in infos)
    assert all(out.shape == (1, 10) for out in outputs)
