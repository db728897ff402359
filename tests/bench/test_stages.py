"""The per-stage breakdown (bench/suite/stages.py, #26): Triton's trace, the stub's timings and the client's
clock joined per request; the stages add up to each request's round trip, and the server's stages to
what Triton's own statistics count for the same requests."""
import dataclasses
import json
import time

import numpy as np
import pytest

from tritonize.bench.load.served import LEAN_HTTP, PROTOCOLS, model_statistics, sender_factory, settled_statistics
from tritonize.bench.suite import stages
from tritonize.cli import stages as cli_stages
from tritonize.cli.main import main
from tritonize.models import get_spec
from tritonize.serving.server import TritonServer

# One HTTP request's events as tritonserver 2.51 writes them (triton mode, level TIMESTAMPS): several
# entries per trace id, COMPUTE_END and REQUEST_END after the response was sent.
HTTP_EVENTS = ["HTTP_RECV_START", "HTTP_RECV_END", "REQUEST_START", "QUEUE_START", "COMPUTE_START",
               "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START", "INFER_RESPONSE_COMPLETE", "HTTP_SEND_START",
               "HTTP_SEND_END", "COMPUTE_END", "REQUEST_END"]


def _trace_entries(trace_id, start_ns, step_ns=1000):
    entries = [{"id": trace_id, "model_name": "mlp", "model_version": 1}]
    entries += [{"id": trace_id, "timestamps": [{"name": name, "ns": start_ns + i * step_ns}]}
                for i, name in enumerate(HTTP_EVENTS)]
    return entries


def _stub_call(trace_start_ns, step_ns=1000):
    """A stub call between COMPUTE_INPUT_END (index 5) and COMPUTE_OUTPUT_START (index 6)."""
    start = trace_start_ns + 5 * step_ns + 100
    return [1, start, start + 100, start + 200, start + 300, start + 400]


def test_a_trace_file_is_read_per_request_and_joined_with_the_client_and_the_stub(tmp_path):
    entries = _trace_entries(1, 10_000) + _trace_entries(2, 50_000)
    entries.append({"id": 3, "timestamps": [{"name": "HTTP_RECV_START", "ns": 1}]})  # no model: not a request
    (tmp_path / "trace.json.0").write_text(json.dumps(entries))
    (tmp_path / "stub.json").write_text(json.dumps({"calls": [_stub_call(10_000), _stub_call(50_000),
                                                              [2, 0, None, None, None, 5]]}))
    traces = stages.read_trace([tmp_path / "trace.json.0"])
    assert sorted(traces) == [1, 2] and traces[1]["HTTP_RECV_START"] == 10_000
    stub = stages.read_stub_timings(tmp_path / "stub.json")
    assert len(stub) == 2  # the call of two requests has no steps
    client = [(9_000, 30_000), (49_500, 70_000), (90_000, 95_000)]  # the third has no trace
    joined = stages.join_requests(traces, client, stub, LEAN_HTTP)
    assert [r[stages.CLIENT_SEND] for r in joined] == [9_000, 49_500]
    assert joined[1]["STUB_START"] == _stub_call(50_000)[1]
    result = stages.breakdown(joined, LEAN_HTTP, True, [20_000], model="mlp", date="", command="", server_args=[])
    names = [(s.start, s.end) for s in result.stages]
    assert names[0] == ("CLIENT_SEND", "HTTP_RECV_START") and names[-1] == ("HTTP_SEND_END", "CLIENT_RECV")
    assert ("COMPUTE_INPUT_END", "STUB_START") in names and ("STUB_END", "COMPUTE_OUTPUT_START") in names
    assert result.sum_of_p50s_us == pytest.approx((21_000 + 20_500) / 2 / 1e3)
    assert [s.end for s in result.after_send] == ["COMPUTE_END", "REQUEST_END"]
    assert stages.StageBreakdown.from_json(result.to_json()) == result


def test_a_request_whose_stub_call_is_missing_is_left_out():
    traces = {1: {name: 10_000 + i * 1000 for i, name in enumerate(HTTP_EVENTS)}}
    assert stages.join_requests(traces, [(9_000, 30_000)], [], LEAN_HTTP) == []
    assert len(stages.join_requests(traces, [(9_000, 30_000)], None, LEAN_HTTP)) == 1


def test_grpc_starts_at_the_end_of_the_read_and_ends_at_the_start_of_the_send():
    events = stages.chain("grpc", False)
    assert events[1] == "GRPC_WAITREAD_END" and events[-2] == "GRPC_SEND_START"
    assert "GRPC_WAITREAD_START" not in events  # that is the server's idle wait for the client's next request


@pytest.mark.server
def test_a_real_trace_adds_up_per_request_and_matches_tritons_statistics(artifacts, tmp_path):
    n, model = 40, "mlp"
    timings = tmp_path / "stub.json"
    stages.build_traced_repository(model, artifacts, tmp_path / "repo", timings)
    client = []
    with TritonServer(tmp_path / "repo", [model], extra_args=stages.trace_args(tmp_path / "trace.json", n)) as server:
        send = sender_factory(LEAN_HTTP, server.http_url, model, get_spec(model))()
        before = model_statistics(server.grpc_url, model, server.admin_key)
        for _ in range(n):
            sent = time.monotonic_ns()
            send()
            client.append((sent, time.monotonic_ns()))
        after = settled_statistics(server.grpc_url, model, before.success_count + n, admin_key=server.admin_key)
    traces = stages.read_trace(sorted(tmp_path.glob("trace.json*")))
    joined = stages.join_requests(traces, client, stages.read_stub_timings(timings), LEAN_HTTP)
    assert len(joined) == n  # every request traced, and its stub call found inside its compute span
    for r in joined:
        # The stages reported for one request cover its round trip, no gap and no overlap.
        parts = stages.stages([r], LEAN_HTTP, True)
        assert sum(s.p50_us for s in parts) == pytest.approx((r["CLIENT_RECV"] - r["CLIENT_SEND"]) / 1e3)
        assert {s.start for s in parts} >= {"HTTP_RECV_START", "QUEUE_START", "STUB_START", "INFER_RESPONSE_COMPLETE"}
        # Causal order, one process handing to the next: the stub runs inside the backend's compute span.
        assert r["COMPUTE_INPUT_END"] <= r["STUB_START"] <= r["STUB_END"] <= r["COMPUTE_OUTPUT_START"]
        assert r["CLIENT_SEND"] <= r["HTTP_RECV_START"]
    # The server's own statistics count the same stages for the same requests, from the same timestamps.
    for stat, (a, b) in {"queue_ns": ("QUEUE_START", "COMPUTE_START"),
                         "compute_input_ns": ("COMPUTE_START", "COMPUTE_INPUT_END"),
                         "compute_infer_ns": ("COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START")}.items():
        traced = sum(r[b] - r[a] for r in joined)
        counted = getattr(after, stat) - getattr(before, stat)
        assert traced == pytest.approx(counted, rel=0.02, abs=2_000 * n), stat


def test_the_command_offers_the_protocols_bench_knows_and_refuses_bad_counts(capsys):
    assert cli_stages.PROTOCOLS == PROTOCOLS  # its choices, kept in the command so that --help loads no stage
    assert main(["stages", "mlp", "--requests", "0"]) == 2
    assert "expected --requests >= 1 and --warmup >= 0, got 0 and 100" in capsys.readouterr().err


@pytest.mark.server
def test_the_command_writes_its_tables_and_leaves_the_stub_timings_off_when_asked(artifacts, tmp_path):
    out = tmp_path / "out"
    assert main(["stages", "mlp", "--requests", "30", "--warmup", "5", "--artifacts", str(artifacts),
                 "--out", str(out), "--no-stub-timings"]) == 0
    result = stages.StageBreakdown.from_json(json.loads((out / "stages-mlp-http-lean.json").read_text()))
    assert result.requests == 30 and not result.stub_timings
    assert not any(s.start.startswith("STUB") or s.end.startswith("STUB") for s in result.stages)
    assert "COMPUTE_INPUT_END | COMPUTE_OUTPUT_START" in (out / "stages-mlp-http-lean.md").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["stages-mlp-http-lean.json", "stages-mlp-http-lean.md"]
    assert np.isfinite(result.untraced_client_p50_us)


@pytest.mark.server
def test_stub_timings_off_writes_nothing_and_the_answer_is_unchanged(artifacts, tmp_path):
    stages.build_traced_repository("mlp", artifacts, tmp_path / "repo", None)
    assert "stage_timings" not in (tmp_path / "repo" / "mlp" / "config.pbtxt").read_text()
    files = lambda: sorted(p for p in tmp_path.rglob("*") if "__pycache__" not in p.parts)  # noqa: E731
    before = files()
    with TritonServer(tmp_path / "repo", ["mlp"]) as server:
        sender = sender_factory(LEAN_HTTP, server.http_url, "mlp", get_spec("mlp"))()
        answer = sender.infer()
    assert list(answer) == ["logits"]  # nothing returned beside the model's output
    assert files() == before  # nothing written (the stub's bytecode cache aside)


def test_a_lever_setup_edits_every_config_and_replaces_only_the_onnx_runners_files(tmp_path):
    from tritonize.studies import stage_levers

    base = tmp_path / "base"
    for name, files in (("mlp", ("model.onnx", "model.py", "request_batching.py")), ("other", ("model.py",))):
        (base / name / "1").mkdir(parents=True)
        (base / name / "config.pbtxt").write_text(f'name: "{name}"\nmax_batch_size: 8\ndynamic_batching {{ }}\n')
        for f in files:
            (base / name / "1" / f).write_text("ours")
    runner = tmp_path / "runner"
    runner.mkdir()
    (runner / "model.py").write_text("theirs")
    setup = dataclasses.replace(stage_levers.LEVERS["no-batcher"](), backend=runner)
    out = stage_levers.build_setup_repository(setup, base, tmp_path / "out")
    for name in ("mlp", "other"):
        assert "dynamic_batching" not in (out / name / "config.pbtxt").read_text()
    assert (out / "mlp" / "1" / "model.py").read_text() == "theirs"
    assert (out / "mlp" / "1" / "request_batching.py").read_text() == "ours"  # the folder gave no such file
    assert (out / "other" / "1" / "model.py").read_text() == "ours"  # not an ONNX Runtime runner
    assert "dynamic_batching" in (base / "mlp" / "config.pbtxt").read_text()  # the base is left as it was


def test_lever_ratios_are_the_median_of_the_rounds_ratios():
    from tritonize.studies import stage_levers

    nan = float("nan")
    runs = {(0, "mlp", "c1"): [(1.0, nan), (2.0, nan), (1.0, nan)],
            (1, "mlp", "c1"): [(0.5, nan), (3.0, nan), (0.9, nan)],  # per round 0.5, 1.5, 0.9
            (0, "mlp", "c8"): [(2.0, 100.0)] * 3,
            (1, "mlp", "c8"): [(4.0, 50.0), (4.0, 60.0), (2.0, 200.0)]}
    c1, c8 = stage_levers.ratios(runs, ["mlp"])
    assert c1.p50_ratio == pytest.approx(0.9) and np.isnan(c1.throughput_ratio)
    assert c8.p50_ratio == pytest.approx(2.0) and c8.throughput_ratio == pytest.approx(0.6)
