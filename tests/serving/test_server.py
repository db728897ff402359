import shutil
import signal
import socket

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tritonize.export.runtime import ort_session, run_ort
from tritonize.models import get_spec, model_names
from tritonize.serving.server import ServerError, TritonServer, load_failures

pytestmark = pytest.mark.server
MODELS = model_names("onnx")


def _request(module, spec, inputs):
    tensors = []
    for t in spec.inputs:
        x = inputs[t.name]
        tensor = module.InferInput(t.name, list(x.shape), t.wire_dtype)
        tensor.set_data_from_numpy(x)
        tensors.append(tensor)
    return tensors


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("name", MODELS)
def test_served_outputs_match_in_process_onnxruntime(server, cpu_repository, name, protocol):
    spec = get_spec(name)
    module = grpcclient if protocol == "grpc" else httpclient
    client = module.InferenceServerClient(server.grpc_url if protocol == "grpc" else server.http_url)
    assert client.is_model_ready(name)
    session = ort_session(cpu_repository / name / "1" / "model.onnx", threads=1)
    rng = np.random.default_rng()
    for batch in (1, spec.serving.max_batch_size):
        inputs = spec.example_inputs(batch, spec.default_seq(), rng)
        result = client.infer(name, _request(module, spec, inputs))
        expected = run_ort(session, spec, inputs)
        for out in spec.output_names:
            np.testing.assert_allclose(result.as_numpy(out), expected[out], rtol=1e-5, atol=1e-6)


def test_wrong_shape_and_dtype_get_invalid_arg_and_the_server_stays_healthy(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    spec = get_spec("cnn")
    bad_shape = grpcclient.InferInput("x", [1, 3, 32, 32], "FP32")
    bad_shape.set_data_from_numpy(np.zeros((1, 3, 32, 32), np.float32))
    bad_dtype = grpcclient.InferInput("x", [1, 3, 24, 24], "FP64")
    bad_dtype.set_data_from_numpy(np.zeros((1, 3, 24, 24), np.float64))
    for bad in (bad_shape, bad_dtype):
        with pytest.raises(InferenceServerException) as e:
            client.infer("cnn", [bad])
        assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.is_server_live() and client.is_server_ready()
    good = client.infer("cnn", _request(grpcclient, spec, spec.example_inputs(2)))
    assert good.as_numpy("logits").shape == (2, 10)


def test_a_model_that_fails_to_load_is_named_with_the_reason(cpu_repository, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(cpu_repository, broken, symlinks=True)
    (broken / "mlp" / "1" / "model.onnx").unlink()
    with pytest.raises(ServerError) as e:
        TritonServer(broken, ["mlp", "lstm"], ready_timeout_s=60).start()
    message = str(e.value)
    assert "model 'mlp' failed to load" in message and "model.onnx" in message


def test_load_failures_are_read_from_the_log():
    line = "E1123 model_lifecycle.cc:654] failed to load 'cnn' version 1: Internal: boom happened"
    assert load_failures(line) == {"cnn": "Internal: boom happened"}


def test_load_failure_reason_is_not_taken_from_the_next_line():
    # The shape of a real 2.51 log: the reason (escaped newlines, closing quote), then a bare line.
    log = ("E1124 23:36:37.708843 15892 model_lifecycle.cc:642] \"failed to load 'mlp' version 1: Invalid argument: "
           "failed to run warmup sample 'zeros_batch1': message: ValueError: boom\\n\\nAt:\\n  model.py(33): execute\\n; \"\n"
           "I1124 23:36:37.708857 15892 model_lifecycle.cc:777] \"failed to load 'mlp'\"\n"
           "I1124 23:36:37.708951 15892 server.cc:604]\n")
    reason = load_failures(log)["mlp"]
    assert reason.startswith("Invalid argument: failed to run warmup sample") and "ValueError: boom" in reason
    assert "model.py(33): execute" in reason.splitlines()[-1] and "server.cc" not in reason


def test_missing_binary_says_how_to_get_one(cpu_repository):
    with pytest.raises(ServerError, match="no executable tritonserver at /nonexistent.*nvidia-pytriton"):
        TritonServer(cpu_repository, binary="/nonexistent/tritonserver")


def test_port_in_use_is_reported_not_hung_on(cpu_repository):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServerError, match=f"grpc port {port} on 127.0.0.1 is in use"):
            TritonServer(cpu_repository, grpc_port=port)


def test_missing_repository_is_reported(tmp_path):
    with pytest.raises(ServerError, match="no model repository at .*tritonize repo"):
        TritonServer(tmp_path / "nothing")


def test_cli_serve_prints_endpoints_and_stops_on_ctrl_c(serve_cli):
    with serve_cli("--models", "mlp") as (proc, lines):
        text = "".join(lines)
        assert "ready" in text and "gRPC    127.0.0.1:" in text, text
        grpc_url = next(l.split()[1] for l in lines if l.strip().startswith("gRPC"))
        assert grpcclient.InferenceServerClient(grpc_url).is_model_ready("mlp")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0


@pytest.mark.parametrize("name", model_names("torch"))
def test_kernel_variants_are_served_and_match_the_plain_model(server, artifacts, name):
    from tritonize.export.runtime import run_torch
    from tritonize.export.stage import load_module

    spec = get_spec(name)
    base = get_spec(spec.base_model)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = spec.example_inputs(2, spec.default_seq())
    out = spec.output_names[0]
    served = client.infer(name, _request(grpcclient, spec, inputs)).as_numpy(out)
    expected = run_torch(load_module(base, artifacts / base.name), base, inputs)[out]
    np.testing.assert_allclose(served, expected, atol=1e-4, rtol=1e-4)
