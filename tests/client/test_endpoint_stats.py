"""Per-endpoint statistics (#25): what each endpoint of a client has seen, in Python and in `tritonize infer`.

The counts are checked against the servers' own statistics; the latency percentiles against numpy on
the same samples.
"""
import argparse
import json
import threading

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tritonize.cli.infer import register
from tritonize.client import AdminKeyError, EndpointStats, FailureCounts, InferTimeoutError, TritonClient
from tritonize.client.errors import GRPC_ADMIN_KEY_HEADER
from tritonize.client.stats import Counters, classify

X = np.arange(8, dtype=np.float32).reshape(2, 4)


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="tritonize")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_failures_are_booked_by_kind():
    def error(status, message):
        return InferenceServerException(message, status=status)

    cases = [(error("StatusCode.UNAVAILABLE", "failed to connect to all addresses; Connection refused"), "unavailable"),
             (error("StatusCode.RESOURCE_EXHAUSTED", "Exceeds maximum queue size"), "overloaded"),
             (error("StatusCode.INTERNAL", "Stub process 'affine_0_0' is not healthy."), "model_unhealthy"),
             (error("StatusCode.NOT_FOUND", "Request for unknown model: 'm' has no available versions"),
              "model_unloading"),
             (error("StatusCode.NOT_FOUND", "Request for unknown model: 'm' is not found"), "model_missing"),
             (error("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded"), "timeout"),
             (InferTimeoutError("model m: no response within the 5 ms timeout"), "timeout"),
             (error("StatusCode.UNAVAILABLE", "Request timeout expired"), "timeout"),
             (error("StatusCode.INVALID_ARGUMENT", "x holds NaN"), "invalid"),
             (error("StatusCode.INTERNAL", "model raised: index out of bounds"), "model_error"),
             (error("StatusCode.UNAVAILABLE", f"This protocol is restricted, expecting header "
                                              f"'{GRPC_ADMIN_KEY_HEADER}'"), "refused"),
             (AdminKeyError("127.0.0.1:1 refused shared memory registration"), "refused"),
             (ValueError("cannot reshape the response"), "other")]
    assert [classify(e) for e, _ in cases] == [kind for _, kind in cases]
    counters = Counters()
    for e, _ in cases:
        counters.failed(e)
    failures = counters.failures()
    assert isinstance(failures, FailureCounts) and failures.total == len(cases)
    assert (failures.timeout, failures.refused, failures.unavailable) == (3, 2, 1)
    assert failures.nonzero().startswith("unavailable 1, overloaded 1, model_unhealthy 1")


def test_latency_percentiles_come_from_a_small_histogram_within_five_percent():
    counters = Counters()
    assert counters.latency().count == 0 and counters.latency().p50_s is None
    samples = np.random.default_rng(0).lognormal(np.log(8e-4), 0.6, 5000)  # ~0.8 ms, a tail to ~5 ms
    for s in samples:
        counters.succeeded(float(s))
    latency = counters.latency()
    assert latency.count == 5000 and latency.max_s == samples.max()
    assert latency.mean_s == pytest.approx(samples.mean(), rel=1e-9)
    for got, q in [(latency.p50_s, 50), (latency.p90_s, 90), (latency.p99_s, 99)]:
        assert got == pytest.approx(np.percentile(samples, q), rel=0.05), q
    assert latency.p50_s <= latency.p90_s <= latency.p99_s <= latency.max_s


@pytest.mark.server
def test_counts_match_what_each_server_answered(affine_trio, served_requests):
    a, b, _ = affine_trio
    before = [served_requests(s, "affine") for s in (a, b)]
    errors = []
    with TritonClient([a.grpc_url, b.grpc_url]) as client:
        client.model_info("affine")  # metadata reads are not inference requests: not counted

        def send(n: int) -> None:
            for _ in range(n):
                try:
                    client.infer("affine", X)
                except Exception as e:
                    errors.append(repr(e))

        threads = [threading.Thread(target=send, args=(40,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        bad = X.copy()
        bad[0, 0] = np.nan  # the model refuses it (INVALID_ARG): booked, not retried, not an ejection
        with pytest.raises(InferenceServerException, match="x holds NaN"):
            client.infer("affine", bad)
        stats = client.endpoint_stats()
    assert errors == []
    assert all(isinstance(s, EndpointStats) for s in stats) and [s.url for s in stats] == [a.grpc_url, b.grpc_url]
    assert sum(s.requests for s in stats) == 161 and sum(s.successes for s in stats) == 160
    assert sum(s.failures.invalid for s in stats) == 1 and sum(s.failures.total for s in stats) == 1
    assert min(s.requests for s in stats) >= 60  # round-robin over both
    for server, s, was in zip((a, b), stats, before):
        assert served_requests(server, "affine", at_least=was + s.requests) - was == s.requests
        assert not s.ejected and s.retried_elsewhere == 0 and s.in_flight == 0 and not s.removed
        assert s.latency.count == s.successes and 0 < s.latency.p50_s <= s.latency.p90_s <= s.latency.p99_s < 5


@pytest.mark.server
def test_infer_shows_a_table_per_endpoint(affine_trio, fake_dns, tmp_path, capsys):
    a, b, _ = affine_trio
    assert run_cli(["infer", "affine", "--url", a.grpc_url, b.grpc_url, "--repeat", "6"]) == 0
    out = capsys.readouterr().out
    assert f"model affine (version 1, max batch 16) at {a.grpc_url}, {b.grpc_url}\n" in out
    table = out[out.index("endpoint "):].splitlines()
    assert table[0].split() == ["endpoint", "requests", "ok", "failed", "retried", "elsewhere", "p50", "ms", "p90",
                                "ms", "p99", "ms", "state"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert list(rows) == [a.grpc_url, b.grpc_url]
    assert all(row[1:5] == ["3", "3", "0", "0"] and row[-1] == "up" for row in rows.values())

    path = tmp_path / "endpoints.json"
    path.write_text(json.dumps([{"grpc": a.grpc_url}, {"grpc": b.grpc_url}]))
    assert run_cli(["infer", "affine", "--url", f"file:{path}", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert f"at file:{path} ({a.grpc_url}, {b.grpc_url})" in out and "retried elsewhere" in out

    assert run_cli(["infer", "affine", "--url", a.grpc_url, "--repeat", "2"]) == 0
    assert "retried elsewhere" not in capsys.readouterr().out  # one endpoint: the summary says it all
    fake_dns["replicas.test"] = [("127.0.0.1", a.grpc_port), ("127.0.0.1", b.grpc_port)]
    assert run_cli(["infer", "affine", "--url", f"dns:///replicas.test:{a.grpc_port}", "--repeat", "2"]) == 0
    assert f"at dns:///replicas.test:{a.grpc_port} ({a.grpc_url}, {b.grpc_url})" in capsys.readouterr().out
    with pytest.raises(ValueError, match="the name 'nowhere.test' does not resolve"):  # the CLI: exit 2, this message
        run_cli(["infer", "affine", "--url", "dns:///nowhere.test:8001"])
