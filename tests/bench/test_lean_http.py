"""The lean HTTP sender against the real server: same answers as tritonclient, errors named, and a
load run through it counted like any other."""
import socket
import threading

import numpy as np
import pytest
import tritonclient.http as httpclient

from tritonize.bench.load.lean_http import LeanHttpError, LeanHttpSender, tensor_bytes, tensor_from_bytes
from tritonize.bench.load.served import LEAN_HTTP, infer_inputs, run_load, text_inputs
from tritonize.model_repository.config import TEXT_SUFFIX
from tritonize.models import get_spec


def _lean_inputs(spec, inputs, tensors=None):
    return [(t.name, inputs[t.name], t.wire_dtype) for t in (tensors or spec.inputs)]


def _tritonclient_answer(url, model, spec, inputs, tensors=None):
    return httpclient.InferenceServerClient(url).infer(model, infer_inputs(httpclient, tensors or spec.inputs, inputs))


@pytest.mark.parametrize("wire, array", [
    ("FP32", np.random.default_rng().standard_normal((2, 3)).astype(np.float32)),
    ("INT64", np.arange(-3, 3, dtype=np.int64).reshape(3, 2)),
    ("BYTES", np.array([["héllo".encode()], [b""], ["日本".encode()]], dtype=object)),
    ("BYTES", np.empty((0, 1), dtype=object)),
])
def test_tensors_survive_the_binary_format(wire, array):
    back = tensor_from_bytes(tensor_bytes(array, wire), wire, array.shape)
    assert back.shape == array.shape and back.tolist() == array.tolist()


def test_bytes_elements_are_length_prefixed():
    assert tensor_bytes(np.array([b"ab", b""], dtype=object), "BYTES") == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"


def test_a_mismatched_dtype_or_url_is_refused_with_what_was_expected():
    with pytest.raises(ValueError, match="FP32 input needs a float32 array, got float64"):
        tensor_bytes(np.zeros(2), "FP32")
    with pytest.raises(ValueError, match="got 'FP8'"):
        tensor_bytes(np.zeros(2, np.float32), "FP8")
    with pytest.raises(ValueError, match="http://host:port URL, got 'grpc://localhost'"):
        LeanHttpSender("grpc://localhost", "m", [], [])


def test_a_connection_closed_before_the_answer_is_an_error_not_a_hang():
    listener = socket.create_server(("127.0.0.1", 0))

    def accept_and_close():
        for _ in range(2):
            conn, _ = listener.accept()
            conn.recv(65536)
            conn.close()

    threading.Thread(target=accept_and_close, daemon=True).start()
    sender = LeanHttpSender(f"127.0.0.1:{listener.getsockname()[1]}", "m", [], ["y"], timeout_s=5)
    for _ in range(2):  # the second call reconnects after the first one broke off
        with pytest.raises((LeanHttpError, ConnectionError), match="closed|reset"):
            sender()
    listener.close()


@pytest.mark.server
@pytest.mark.parametrize("name", ["mlp", "cnn", "lstm", "transformer"])
def test_answers_match_tritonclient(server, name):
    spec = get_spec(name)
    inputs = spec.example_inputs(2, spec.default_seq(), np.random.default_rng())
    lean = LeanHttpSender(server.http_url, name, _lean_inputs(spec, inputs), spec.output_names)
    ours = lean.infer()
    theirs = _tritonclient_answer(server.http_url, name, spec, inputs)
    for out in spec.output_names:
        np.testing.assert_array_equal(ours[out], theirs.as_numpy(out))
    lean.close()


@pytest.mark.server
def test_text_goes_over_as_bytes_and_matches_tritonclient(server):
    spec = get_spec("minilm")
    inputs = text_inputs(spec, 3)
    model = "minilm" + TEXT_SUFFIX
    lean = LeanHttpSender(server.http_url, model, _lean_inputs(spec, inputs, [spec.text.input]), spec.output_names)
    ours = lean.infer()
    theirs = _tritonclient_answer(server.http_url, model, spec, inputs, [spec.text.input])
    for out in spec.output_names:
        np.testing.assert_allclose(ours[out], theirs.as_numpy(out), rtol=1e-5, atol=1e-6)


@pytest.mark.server
def test_server_errors_are_named_and_the_connection_stays_usable(server):
    spec = get_spec("cnn")
    good = spec.example_inputs(1)
    bad = LeanHttpSender(server.http_url, "cnn", [("x", np.zeros((1, 3, 32, 32), np.float32), "FP32")], ["logits"])
    for _ in range(2):  # the second answer comes on the same kept-alive connection
        with pytest.raises(LeanHttpError, match="HTTP 400: .*shape"):
            bad()
    assert bad.sock is not None
    with pytest.raises(LeanHttpError, match="HTTP 404: .*unknown model.*no_such_model"):
        LeanHttpSender(server.http_url, "no_such_model", _lean_inputs(spec, good), ["logits"])()


@pytest.mark.server
def test_a_lean_load_run_is_counted_by_the_server_too(server):
    spec = get_spec("mlp")
    r = run_load(server.grpc_url, server.http_url, LEAN_HTTP, "mlp", spec, level=2, duration_s=0.3,
                 admin_key=server.admin_key)  # the server's statistics need its admin key
    assert r.protocol == LEAN_HTTP and r.errors == 0 and r.ok == r.sent > 10
    assert r.server.requests == r.sent + 5 * 2  # + the warm-up requests
