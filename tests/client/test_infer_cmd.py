"""`tritonize infer`, through the `register(subparsers)` hook the main CLI calls."""
import argparse

import numpy as np
import pytest

from tritonize.cli import main
from tritonize.cli.infer import register
from tritonize.client import RequestError
from tritonize.client.examples import random_inputs
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


class _CreatesFile:
    """Unpickling this calls open(path, "w"): the file appears only if someone unpickled it."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("form", ["FILE.npy", "text=FILE.npy", "FILE.npz"])
def test_a_pickled_input_file_is_refused_and_never_unpickled(form, tmp_path, capsys):
    def save(path, marker):
        payload = np.array([[_CreatesFile(marker)]], dtype=object)
        if path.suffix == ".npz":
            np.savez(path, text=payload)
        else:
            np.save(path, payload, allow_pickle=True)
        return path

    suffix = form.rpartition(".")[2]
    control = save(tmp_path / f"control.{suffix}", tmp_path / "control-unpickled")
    loaded = np.load(control, allow_pickle=True)  # what `infer` did before: the payload runs
    (loaded["text"] if suffix == "npz" else loaded)[0, 0].close()
    assert (tmp_path / "control-unpickled").exists()
    evil = save(tmp_path / f"evil.{suffix}", tmp_path / "unpickled")
    source = form.replace(f"FILE.{suffix}", str(evil))
    # port 1 refuses connections: the file is refused before any connection is tried
    assert main(["infer", "text_stats", "--url", "127.0.0.1:1", "--input", source]) == 2
    err = capsys.readouterr().err
    assert "got an object array (dtype object, shape [1,1])" in err and "np.array([...], dtype=str)" in err
    assert str(evil) in err and "Traceback" not in err
    assert not (tmp_path / "unpickled").exists()


def test_a_file_that_is_not_an_npy_array_is_refused(tmp_path, capsys):
    (tmp_path / "pickle.npy").write_bytes(b"\x80\x04N.")  # a pickle of None, named .npy
    assert main(["infer", "mlp", "--url", "127.0.0.1:1", "--input", str(tmp_path / "pickle.npy")]) == 2
    err = capsys.readouterr().err
    assert f"--input {tmp_path / 'pickle.npy'}: expected an array saved with np.save" in err


def test_string_arrays_are_sent_as_utf8_bytes(text_server, tmp_path, capsys):
    np.save(tmp_path / "text.npy", np.array([["hi"], ["héllo"]], dtype=str))  # <U5: no pickle needed
    assert main(["infer", "text_stats", "--url", text_server.grpc_url, "--input", str(tmp_path / "text.npy")]) == 0
    out = capsys.readouterr().out
    assert "input  text             object [2,1]" in out
    assert "output length           int32 [2,1] [2, 6]" in out  # UTF-8 bytes: é is two
    assert "output upper            object [2,1] [b'HI', b'H\\xc3\\xa9LLO']" in out
    np.savez(tmp_path / "text.npz", text=np.array([[b"abc"]]))  # bytes (S3), in an archive
    assert main(["infer", "text_stats", "--url", text_server.grpc_url, "--input", str(tmp_path / "text.npz")]) == 0
    assert "output length           int32 [1,1] [3]" in capsys.readouterr().out


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
