"""`tritonize infer`, through the `register(subparsers)` hook the main CLI calls."""
import argparse

import numpy as np
import pytest

from tritonize.client import RequestError
from tritonize.client.examples import random_inputs
from tritonize.cli.infer import register
from tritonize.client.model_info import ModelInfo, TensorInfo

pytestmark = pytest.mark.server


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="tritonize")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_random_input_prints_outputs_and_latency(server, capsys):
    assert run_cli(["infer", "mlp", "--url", server.grpc_url, "--batch", "3"]) == 0
    text = capsys.readouterr().out
    assert f"model mlp (version 1, max batch 64) at {server.grpc_url}" in text
    assert "input  x                float32 [3,784]" in text
    assert "output logits           float32 [3,10] [" in text
    assert "latency" in text and "ms" in text


def test_registry_model_with_seq_and_repeat(server, capsys):
    assert run_cli(["infer", "transformer", "--url", server.grpc_url, "--seq", "9", "--repeat", "5"]) == 0
    text = capsys.readouterr().out
    assert "input  input_ids        int64 [1,9]" in text and "input  attention_mask   int64 [1,9]" in text
    assert "output logits           float32 [1,2]" in text and "over 5 requests" in text


def test_npy_input_file(server, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((2, 3, 24, 24)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert run_cli(["infer", "cnn", "--url", server.grpc_url, "--input", str(tmp_path / "x.npy")]) == 0
    assert "output logits           float32 [2,10]" in capsys.readouterr().out


def test_user_errors_say_what_was_expected(server, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 32, 32), np.float32))
    with pytest.raises(RequestError, match=r"model cnn input 'x': expected FP32 \[-1,3,24,24\] \(max batch 64\), "
                                           r"got float32 \[2,3,32,32\]"):
        run_cli(["infer", "cnn", "--url", server.grpc_url, "--input", str(tmp_path / "wrong.npy")])
    with pytest.raises(ValueError, match="no such file"):
        run_cli(["infer", "cnn", "--url", server.grpc_url, "--input", str(tmp_path / "missing.npy")])
    with pytest.raises(ValueError, match="model transformer has 2 inputs .*NAME=FILE.npy"):
        run_cli(["infer", "transformer", "--url", server.grpc_url, "--input", str(tmp_path / "wrong.npy")])
    with pytest.raises(ValueError, match="sequence length must be in"):
        run_cli(["infer", "transformer", "--url", server.grpc_url, "--seq", "5000"])


@pytest.mark.parametrize("flags, message", [
    (["--batch", "0"], "--batch must be at least 1, got 0"),
    (["--seq", "-3"], "--seq must be at least 1, got -3"),
    (["--repeat", "0"], "--repeat must be at least 1, got 0"),
    (["--text", "hi", "--input", "x.npy"], "--text and --input cannot be combined"),
])
def test_bad_flags_fail_before_any_connection(flags, message):
    # port 1 refuses connections: a check made after connecting would fail with UNAVAILABLE instead
    with pytest.raises(ValueError) as e:
        run_cli(["infer", "mlp", "--url", "127.0.0.1:1", *flags])
    assert str(e.value) == message


def test_bytes_model_outside_the_registry_gets_inputs_from_metadata(text_server, capsys):
    assert run_cli(["infer", "text_stats", "--url", text_server.grpc_url, "--batch", "2"]) == 0
    text = capsys.readouterr().out
    assert "input  text             object [2,1]" in text
    assert "output length           int32 [2,1]" in text and "output upper            object [2,1] [b'" in text


def test_random_inputs_from_metadata_follow_the_names():
    info = ModelInfo("not_in_registry", "1", 8, (
        TensorInfo("token_ids", "INT64", (-1, -1)), TensorInfo("attention_mask", "INT64", (-1, -1)),
        TensorInfo("features", "FP16", (-1, 4)), TensorInfo("flags", "BOOL", (-1, 2))), ())
    x = random_inputs(info, batch=3, seq=7, rng=np.random.default_rng(0))
    assert {k: (v.dtype.name, v.shape) for k, v in x.items()} == {
        "token_ids": ("int64", (3, 7)), "attention_mask": ("int64", (3, 7)), "features": ("float16", (3, 4)),
        "flags": ("bool", (3, 2))}
    assert x["token_ids"].min() >= 0 and x["token_ids"].max() < 100
    assert (x["attention_mask"] == 1).all() and x["flags"].all()


def test_a_seq_for_a_model_without_a_variable_axis_is_refused():
    fixed = ModelInfo("fixed", "1", 8, (TensorInfo("x", "FP32", (-1, 4)),), ())
    with pytest.raises(ValueError, match=r"seq 5 given, but model fixed has no variable axis besides the batch to set "
                                         r"\(x \[-1, 4\]\)"):
        random_inputs(fixed, batch=2, seq=5)
    assert random_inputs(fixed, batch=2)["x"].shape == (2, 4)
    unbatched = ModelInfo("unbatched", "1", 0, (TensorInfo("x", "FP32", (-1, 4)),), ())
    assert random_inputs(unbatched, seq=5)["x"].shape == (5, 4)  # without batching, the first axis is variable
