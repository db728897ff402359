"""bench/load/perf_analyzer.py. The real perf_analyzer does not run on this project's machines (its wheel
needs glibc 2.38), so the runs below use stand-in executables that answer the way its documentation
says it does (a CSV at the path given to -f, or an error and a non-zero exit); what is tested is our
side: the input data, the command, the parsing, the failure reports and the suite's handling."""
import json
import stat
import sys
import textwrap
from types import SimpleNamespace

import numpy as np
import pytest

from tritonize.bench.load import perf_analyzer as pa
from tritonize.bench.load.served import ServerBreakdown, ServerTimes, ServedRow
from tritonize.bench.report.provenance import Machine
from tritonize.bench.report.report import perf_analyzer_section
from tritonize.bench.report.results import SuiteResults
from tritonize.bench.suite.options import SuiteOptions
from tritonize.bench.suite.progress import NoProgress
from tritonize.bench.suite.served_runs import perf_analyzer_rows
from tritonize.models import get_spec

# The example of perf_analyzer's documentation (rows sorted by throughput, not by concurrency), plus
# the "Avg latency" column that newer versions add.
DOC_CSV = textwrap.dedent("""\
    Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,Avg latency
    1,69.2,225,2148,64,206,11781,19,0,13891,18795,19753,21018,14000
    3,84.2,237,1768,21673,209,11742,17,0,35398,43984,47085,51701,36000
    4,84.2,279,1604,33669,233,11731,18,1,47045,56545,59225,64886,48000
    2,87.2,235,1973,9151,190,11346,17,0,21874,28557,29768,34766,22000
    """)


def _executable(path, body: str):
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize("model", ["mlp", "cnn", "minilm"])
def test_input_data_is_a_valid_request_of_the_model_one_entry_per_row(model):
    spec = get_spec(model)
    data = json.loads(json.dumps(pa.input_data(spec, batch=3, rng=np.random.default_rng(0))))
    assert len(data["data"]) == 3
    expected = spec.example_inputs(3, spec.default_seq(), np.random.default_rng(0))
    for row, entry in enumerate(data["data"]):
        assert set(entry) == set(spec.input_names)
        for name, tensor in entry.items():
            array = np.asarray(tensor["content"], dtype=expected[name].dtype).reshape(tensor["shape"])
            assert tensor["shape"] == list(expected[name].shape[1:])  # without the batch axis
            np.testing.assert_array_equal(array, expected[name][row])
    spec.check_inputs({n: np.stack([np.asarray(e[n]["content"], expected[n].dtype).reshape(e[n]["shape"])
                                    for e in data["data"]]) for n in spec.input_names}, "perf_analyzer input data")


def test_the_command_is_one_bounded_closed_loop_level_with_our_data(tmp_path):
    cmd = pa.command(tmp_path / "perf_analyzer", "mlp", "127.0.0.1:8001", "grpc", 4, tmp_path / "d.json",
                     tmp_path / "c4.csv", duration_s=1.5)
    args = dict(zip(cmd[1::2], cmd[2::2])) if len(cmd) % 2 else None
    assert args == {"-m": "mlp", "-u": "127.0.0.1:8001", "-i": "grpc", "-b": "1", "--concurrency-range": "4:4",
                    "--input-data": str(tmp_path / "d.json"), "--measurement-mode": "time_windows",
                    "--measurement-interval": "500", "--max-trials": "3", "--stability-percentage": "1000",
                    "-f": str(tmp_path / "c4.csv")}
    with pytest.raises(ValueError, match="grpc or http, got 'http-lean'"):
        pa.command(tmp_path, "mlp", "u", "http-lean", 1, tmp_path, tmp_path, 1.0)
    with pytest.raises(ValueError, match="1 or more, got 0"):
        pa.command(tmp_path, "mlp", "u", "grpc", 0, tmp_path, tmp_path, 1.0)


def test_the_documented_csv_parses_in_order_of_concurrency_in_our_units():
    rows = pa.parse_csv(DOC_CSV)
    assert [r.level for r in rows] == [1, 2, 3, 4]
    assert rows[0] == pa.PerfAnalyzerMeasurement(
        mode="closed", level=1.0, infer_per_s=69.2, p50_ms=13.891, p90_ms=18.795, p95_ms=19.753, p99_ms=21.018,
        server=ServerTimes(queue_us=64.0, compute_input_us=206.0, compute_infer_us=11781.0, compute_output_us=19.0))
    rate = pa.parse_csv("Request Rate,Inferences/Second,p50 latency,p90 latency,p95 latency,p99 latency\n"
                        "100,99.5,500,600,700,800\n")
    assert rate == [pa.PerfAnalyzerMeasurement(mode="open", level=100.0, infer_per_s=99.5, p50_ms=0.5, p90_ms=0.6,
                                               p95_ms=0.7, p99_ms=0.8)]  # no server columns in that CSV: none invented


@pytest.mark.parametrize("text, names", [
    ("Concurrency,Inferences/Second,p50 latency\n1,2,3\n", "lacks p90 latency, p95 latency, p99 latency"),
    ("Inferences/Second,p50 latency,p90 latency,p95 latency,p99 latency\n1,2,3,4,5\n", "lacks Concurrency / Request Rate"),
    ("", "its header: none"),
    ("Concurrency,Inferences/Second,p50 latency,p90 latency,p95 latency,p99 latency\n", "no measurement"),
])
def test_a_csv_that_is_not_perf_analyzers_is_refused_by_name(text, names):
    with pytest.raises(ValueError, match=names):
        pa.parse_csv(text)


def test_the_binary_is_the_one_named_else_the_one_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert pa.find_binary() is None
    with pytest.raises(ValueError, match="expects an executable perf_analyzer binary, got .*no such file"):
        pa.find_binary(tmp_path / "nowhere")
    (tmp_path / "plain").write_text("")
    with pytest.raises(ValueError, match="not executable"):
        pa.find_binary(tmp_path / "plain")
    found = _executable(tmp_path / "perf_analyzer", "")
    assert pa.find_binary() == found and pa.find_binary(found) == found


STAND_IN_WRITES_CSV = f"""
    import json, sys
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    json.load(open(args["--input-data"]))  # the data file exists and is JSON when it is called
    level = args["--concurrency-range"].split(":")[0]
    rows = {DOC_CSV!r}.splitlines()
    open(args["-f"], "w").write("\\n".join([rows[0]] + [r for r in rows[1:] if r.split(",")[0] == level]) + "\\n")
"""
STAND_IN_FAILS = """
    import sys
    sys.stderr.write("error: failed to get model metadata: model 'mlp' is not ready\\n")
    sys.exit(1)
"""


def test_a_run_reads_the_csv_of_each_level(tmp_path):
    binary = _executable(tmp_path / "perf_analyzer", STAND_IN_WRITES_CSV)
    rows = pa.run_levels(binary, "127.0.0.1:1", "grpc", get_spec("mlp"), (1, 4), 0.3, tmp_path / "work")
    assert [(r.model, r.protocol, r.client, r.level, r.p50_ms) for r in rows] == [
        ("mlp", "grpc", "perf_analyzer", 1.0, 13.891), ("mlp", "grpc", "perf_analyzer", 4.0, 47.045)]


@pytest.mark.parametrize("body, says", [
    (STAND_IN_FAILS, "exited with 1 on mlp at concurrency 2: error: failed to get model metadata"),
    ("pass\n", "exited with 0 on mlp at concurrency 2 without writing its CSV: no output"),
])
def test_a_failed_run_names_the_level_the_output_and_the_command(tmp_path, body, says):
    binary = _executable(tmp_path / "perf_analyzer", body)
    with pytest.raises(pa.PerfAnalyzerFailed, match=says) as failed:
        pa.run_levels(binary, "127.0.0.1:1", "grpc", get_spec("mlp"), (2,), 0.3, tmp_path / "work")
    assert f"command: {binary} -m mlp" in str(failed.value)


def _results(opts):
    machine = Machine(host="h", platform="p", cpu="c", cores=2, memory_gb=1.0, gpu="none")
    return SuiteResults(started="t", date="d", machine=machine, versions={}, git_commit="g", options=opts)


def _our_row(level, p50_ms, p99_ms, infer_per_s, queue_us, infer_us):
    return ServedRow(mode="closed", level=level, sent=1, ok=1, errors=0, duration_s=1.0, first_errors=[],
                     max_lag_ms=0.0, throughput_rps=infer_per_s, p50_ms=p50_ms, p90_ms=p99_ms, p95_ms=p99_ms,
                     p99_ms=p99_ms, mean_ms=p50_ms, model="mlp", protocol="grpc", batch=1, infer_per_s=infer_per_s,
                     server=ServerBreakdown(queue_us=queue_us, compute_input_us=1.0, compute_infer_us=infer_us,
                                            compute_output_us=1.0, requests=1, executions=1, mean_batch=1.0),
                     cores_busy={})


def test_the_suite_reports_perf_analyzer_beside_ours_or_why_it_did_not(tmp_path, monkeypatch):
    server = SimpleNamespace(grpc_url="127.0.0.1:1")
    monkeypatch.setenv("PATH", str(tmp_path))
    opts = SuiteOptions(models=["mlp"], artifacts=tmp_path, grpc_levels=(1, 4), duration_s=0.3)
    results = _results(opts)
    perf_analyzer_rows(server, ["mlp", "minilm"], opts, tmp_path, NoProgress(), results)
    assert results.perf_analyzer is None and results.skipped["perf_analyzer beside our load generator"].startswith(
        "no perf_analyzer on PATH; get perf_analyzer from NVIDIA's SDK container")

    opts = SuiteOptions(models=["mlp"], artifacts=tmp_path, grpc_levels=(1, 4), duration_s=0.3,
                        perf_analyzer=_executable(tmp_path / "pa_ok", STAND_IN_WRITES_CSV))
    results = _results(opts)
    perf_analyzer_rows(server, ["mlp", "minilm"], opts, tmp_path, NoProgress(), results)
    assert {(r.model, r.level) for r in results.perf_analyzer} == {("mlp", 1), ("mlp", 4)}  # minilm: text rows
    assert results.skipped == {}
    ours = [_our_row(4, p50_ms=0.5, p99_ms=0.9, infer_per_s=7000.0, queue_us=50.0, infer_us=60.0)]
    summary = "\n".join(perf_analyzer_section(results.perf_analyzer, ours))
    assert "| mlp | grpc | 4 | 0.500 / 47.045 | 0.900 / 64.886 | 7000 / 84 | 50 / 33669 | 60 / 11731 |" in summary
    assert "| mlp | grpc | 1 | - / 13.891 |" in summary  # no row of ours at that level
    # results.json keeps perf_analyzer's rows as they were read
    assert SuiteResults.from_json(results.to_json()).perf_analyzer == results.perf_analyzer

    opts.perf_analyzer = _executable(tmp_path / "pa_fails", STAND_IN_FAILS)
    results = _results(opts)
    perf_analyzer_rows(server, ["mlp"], opts, tmp_path, NoProgress(), results)
    assert results.perf_analyzer == []
    assert results.skipped["perf_analyzer on mlp"].startswith("failed: perf_analyzer exited with 1 on mlp at concurrency 1")
