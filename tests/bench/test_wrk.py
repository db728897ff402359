"""wrk as the load generator (bench/load/wrk.py): the lean sender's request taken apart for wrk, unsafe
headers refused, a missing binary named with how to get it, and, where wrk is installed, a real run
against a small HTTP server on loopback that checks what arrived and counts error answers."""
import dataclasses

import numpy as np
import pytest

from tritonize.bench.load import wrk
from tritonize.bench.load.lean_http import infer_request


def test_the_lean_request_becomes_a_wrk_request():
    x = np.arange(6, dtype=np.float32).reshape(1, 6)
    raw = infer_request("127.0.0.1:8000", "mlp", [("x", x, "FP32")], ["logits"])
    request = wrk.from_raw_http("127.0.0.1:8000", raw)
    assert request.url == "http://127.0.0.1:8000/v2/models/mlp/infer"
    headers = dict(request.headers)
    assert "Host" not in headers and "Content-Length" not in headers  # wrk writes these itself
    assert headers["Content-Type"] == "application/octet-stream"
    header_size = int(headers["Inference-Header-Content-Length"])
    assert request.body.endswith(x.tobytes()) and len(request.body) == header_size + x.nbytes
    assert raw.endswith(request.body)


@pytest.mark.parametrize("kwargs, message", [
    (dict(url="127.0.0.1:80/x"), "needs an http://host:port/path URL"),
    (dict(url="https://h:1/x"), "needs an http://host:port/path URL"),
    (dict(headers=(("X-Evil", 'a"); os.exit()'),)), "headers must be plain tokens"),
])
def test_a_request_wrk_cannot_send_safely_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        wrk.WrkRequest(**{"url": "http://127.0.0.1:1/x", "headers": (), "body": b"", **kwargs})


def test_a_missing_binary_says_how_to_get_one():
    with pytest.raises(wrk.WrkUnavailable, match="no no-such-wrk on PATH; install wrk"):
        wrk.closed_loop(wrk.WrkRequest("http://127.0.0.1:1/x", (), b""), 1, 1, binary="no-such-wrk")


@pytest.mark.skipif(wrk.find_binary() is None, reason=f"no wrk on PATH; {wrk.INSTALL_HINT}")
def test_a_real_run_sends_the_request_and_counts_error_answers(reverser):
    body = bytes(range(256)) * 3  # binary, NULs included
    request = wrk.WrkRequest(reverser.url + "/v2/models/m/infer", (("X-Model", "m"),), body)
    summary = wrk.closed_loop(request, concurrency=2, duration_s=1)
    assert summary.errors == 0 and summary.ok == summary.sent > 0 and summary.throughput_rps > 0
    assert 0 < summary.p50_ms <= summary.p99_ms and summary.level == 2.0
    assert len(reverser.requests) >= summary.sent
    assert all((r.path, r.model, r.body) == ("/v2/models/m/infer", "m", body) for r in reverser.requests)
    failed = wrk.closed_loop(dataclasses.replace(request, body=b"fail"), concurrency=1, duration_s=1)
    assert failed.errors == failed.sent > 0 and failed.ok == 0 and "non-2xx/3xx" in failed.first_errors[0]
