"""Client-side checks: each wrong request fails with a message naming what was expected and what was
given, before anything reaches the server."""
import numpy as np
import pytest

from tritonize.client import RequestError, TritonClient

pytestmark = pytest.mark.server

CNN = "model cnn input 'x': expected FP32 [-1,3,24,24] (max batch 64), got "


def f32(*shape):
    return np.zeros(shape, np.float32)


def i64(*shape):
    return np.zeros(shape, np.int64)


CASES = {
    "dtype and shape": ("cnn", np.zeros((2, 3, 32, 32)),
                        CNN + "float64 [2,3,32,32] (dtype float64 is not FP32 (float32); convert it with "
                              ".astype(np.float32); axis 2 is 32, not 24; axis 3 is 32, not 24)"),
    "dtype": ("cnn", np.zeros((2, 3, 24, 24), np.float16),
              CNN + "float16 [2,3,24,24] (dtype float16 is not FP32 (float32)"),
    "fixed dim": ("cnn", f32(2, 1, 24, 24), CNN + "float32 [2,1,24,24] (axis 1 is 1, not 3)"),
    "rank": ("cnn", f32(3, 24, 24), CNN + "float32 [3,24,24] (3 dims where 4 are expected)"),
    "unknown name": ("mlp", {"x": f32(1, 784), "y": f32(1, 784)},
                     "model mlp has no input 'y'; its inputs are: x FP32 [-1,784]"),
    "missing input": ("transformer", {"input_ids": i64(1, 5)},
                      "model transformer: missing input 'attention_mask' (INT64 [-1,-1] (max batch 32)); "
                      "given: input_ids"),
    "bare array for two inputs": ("transformer", i64(1, 5),
                                  "model transformer has 2 inputs (input_ids INT64 [-1,-1], attention_mask INT64 "
                                  "[-1,-1]): pass a dict of input name -> array, not one array"),
    "batch sizes differ": ("transformer", {"input_ids": i64(2, 5), "attention_mask": i64(3, 5)},
                           "model transformer: every input needs the same batch size (axis 0), got input_ids 2 rows, "
                           "attention_mask 3 rows"),
    "empty batch": ("mlp", f32(0, 784), "model mlp: batch size must be at least 1, got 0 rows"),
    "not an array": ("mlp", {"x": [[0.0] * 784]},
                     "model mlp input 'x': expected a numpy array FP32 [-1,784] (max batch 64), got list"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_wrong_requests_fail_on_the_client_with_a_clear_message(server, requests_seen, raw, case):
    model, inputs, message = CASES[case]
    with TritonClient(server.grpc_url) as client:
        client.model_info(model)
        before = requests_seen(raw, model)
        with pytest.raises(RequestError) as error:
            client.infer(model, inputs)
        assert str(error.value).startswith(message)
        assert isinstance(error.value, ValueError)
        assert requests_seen(raw, model) == before


def test_unknown_output_and_batch_over_the_max_when_splitting_is_off(server):
    with TritonClient(server.grpc_url, split_batches=False) as client:
        with pytest.raises(RequestError, match="model mlp has no output 'probs'; its outputs are: logits FP32 "
                                               r"\[-1,10\]"):
            client.infer("mlp", f32(1, 784), outputs=["probs"])
        with pytest.raises(RequestError, match="model mlp: batch of 65 rows exceeds the model's max batch 64 and "
                                               "batch splitting is off"):
            client.infer("mlp", f32(65, 784))


def test_numbers_for_a_bytes_input_are_refused(text_server):
    with TritonClient(text_server.grpc_url) as client:
        with pytest.raises(RequestError, match=r"model text_stats input 'text': expected BYTES \[-1,1\] \(max batch "
                                               r"8\), got int64 \[2,1\] \(int64 is not BYTES"):
            client.infer("text_stats", np.zeros((2, 1), np.int64))


def test_a_per_row_value_given_as_batch_is_sent_as_triton_dims_1_and_only_then():
    from tritonize.client.model_info import ModelInfo, TensorInfo
    from tritonize.client.request import prepare

    info = ModelInfo("scaled", "1", 64, (TensorInfo("x", "FP32", (-1, 4)), TensorInfo("scale", "FP32", (-1, 1))),
                     (TensorInfo("y", "FP32", (-1, 4)),))
    request = prepare(info, {"x": f32(3, 4), "scale": f32(3)})
    assert request.arrays["scale"].shape == (3, 1) and request.batch == 3
    with pytest.raises(RequestError, match=r"input 'x': expected FP32 \[-1,4\] .*got float32 \[3\]"):
        prepare(info, {"x": f32(3), "scale": f32(3)})  # a wider row is never guessed
    unbatched = ModelInfo("plain", "1", 0, (TensorInfo("scale", "FP32", (-1, 1)),), (TensorInfo("y", "FP32", (-1,)),))
    with pytest.raises(RequestError, match=r"1 dims where 2 are expected"):
        prepare(unbatched, f32(3))
