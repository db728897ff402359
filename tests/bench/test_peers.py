"""The peer comparison (bench/peers/, `tritonize peers`): the raw sender against a real HTTP server,
the peer apps' row encoding on a real ONNX Runtime session, the summary and ratio tables, argument
errors, the constraints that keep torch out of the peers' venvs, the peers' process handling, and that
the peer apps import nothing of tritonize or torch. The real run (venvs from PyPI, real peers) is
opt-in: TRITONIZE_PEERS=1."""
import ast
import importlib.util
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tritonize.bench.load import wrk
from tritonize.bench.load.lean_http import LeanHttpError, RawHttpSender, post_request
from tritonize.bench.load.loadgen import closed_loop
from tritonize.bench.peers.compare import SERVERS, PeersOptions, Turn, check_options, measure, servable_specs
from tritonize.bench.peers.envs import APPS, NO_TORCH, PeerEnv, PeerError, PeerProcess, write_constraints
from tritonize.bench.peers.report import (
    PeerResults,
    PeerRow,
    headlines,
    markdown,
    ratios,
    summarize,
    write_results,
)
from tritonize.bench.report.provenance import machine_info
from tritonize.cli import peers as cli_peers
from tritonize.cli.main import main


def test_the_raw_sender_posts_on_one_kept_alive_connection(reverser):
    sender = RawHttpSender(reverser.url, "/inference", b"\x01\x02\x03", "application/x-test", response_size=3)
    assert [sender.post() for _ in range(3)] == [b"\x03\x02\x01"] * 3
    sender()
    assert len({r.peer for r in reverser.requests}) == 1  # one socket for all four requests
    assert {(r.path, r.content_type) for r in reverser.requests} == {("/inference", "application/x-test")}
    sender.close()


def test_the_raw_sender_names_errors_and_wrong_sizes(reverser):
    with pytest.raises(LeanHttpError, match="HTTP 500: no such luck"):
        RawHttpSender(reverser.url, "/x", b"fail").post()
    with pytest.raises(LeanHttpError, match="expected a 5-byte answer, got 2 bytes"):
        RawHttpSender(reverser.url, "/x", b"ab", response_size=5)()
    with pytest.raises(ValueError, match="starting with '/', got 'inference'"):
        post_request("h", "inference", b"", "application/octet-stream")
    with pytest.raises(ValueError, match="raw HTTP sender needs an http://host:port URL, got 'https://h:1'"):
        RawHttpSender("https://h:1", "/x", b"")


def test_a_load_run_through_the_raw_sender_counts_every_request(reverser):
    result = closed_loop(lambda: RawHttpSender(reverser.url, "/p", b"abcd", response_size=4), 2, 0.3, 10_000)
    assert result.errors == 0 and result.ok == result.sent == len(reverser.requests) > 10


@pytest.mark.skipif(wrk.find_binary() is None, reason=f"no wrk on PATH; {wrk.INSTALL_HINT}")
def test_with_wrk_a_turn_is_warmed_by_its_senders_and_timed_by_wrk(reverser):
    make = lambda: RawHttpSender(reverser.url, "/p", b"abcd", response_size=4)  # noqa: E731
    probe = make()
    probe.close()
    turn = Turn(make, lambda row: row, wrk.from_raw_http(reverser.url, probe.request))
    row = measure(turn, PeersOptions(duration_s=1, load_generator="wrk"), "m", "reverser", 1, 2)
    assert row.errors == 0 and row.ok == row.sent > 0 and row.level == 2 and row.mean_batch is None
    assert len(reverser.requests) >= row.sent + 1  # the warm-up's requests and wrk's all arrived
    assert {r.path for r in reverser.requests} == {"/p"}


def _load_app_module(name: str):
    spec = importlib.util.spec_from_file_location(f"peer_app_{name}", APPS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _linear_onnx(path: Path, in_shape: list, weights: np.ndarray) -> Path:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", weights.shape[1]])],
        [helper.make_tensor("w", TensorProto.FLOAT, list(weights.shape), weights.flatten().tolist())])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_the_peer_apps_rows_go_through_onnx_runtime_as_raw_float32(tmp_path):
    rows_module = _load_app_module("onnx_rows")
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((4, 3)).astype(np.float32)
    model = rows_module.OnnxRows(str(_linear_onnx(tmp_path / "m.onnx", ["batch", 4], weights)))
    assert model.row_shape == (4,) and model.row_bytes == 16
    rows = [model.decode(r.astype("<f4").tobytes()) for r in rng.standard_normal((3, 4))]
    answers = model.run(rows)
    for row, answer in zip(rows, answers):
        np.testing.assert_allclose(np.frombuffer(answer, "<f4"), row @ weights, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match=r"expected 16 bytes \(float32 \[4\]\), got 12"):
        model.decode(b"\0" * 12)
    with pytest.raises(ValueError, match="fixed shape after the batch"):
        rows_module.OnnxRows(str(_linear_onnx(tmp_path / "d.onnx", ["batch", "n"], weights)))
    two = rows_module.OnnxRows(str(tmp_path / "m.onnx"), threads=2)  # --threads of the apps
    assert two.session.get_session_options().intra_op_num_threads == 2
    assert two.run(rows) == answers


def _row(server, level, rnd, rps, p50, batch=None, errors=0):
    return PeerRow(mode="closed", level=float(level), sent=int(rps) + errors, ok=int(rps), errors=errors,
                   duration_s=1.0, first_errors=[], max_lag_ms=0.0, throughput_rps=rps, p50_ms=p50, p90_ms=p50,
                   p95_ms=p50, p99_ms=2 * p50, mean_ms=p50, model="mlp", server=server, round=rnd, mean_batch=batch)


ROWS = [_row("tritonize", 1, 1, 1000, 0.9, 1.0), _row("tritonize", 1, 2, 1200, 0.8, 1.0),
        _row("tritonize", 1, 3, 1100, 1.0, 1.0), _row("tritonize", 32, 1, 4000, 7.0, 20.0),
        _row("mosec-unbatched", 1, 1, 800, 1.2), _row("mosec-unbatched", 1, 2, 900, 1.0, errors=2),
        _row("mosec-batched", 32, 1, 2000, 15.0)]


def test_the_summary_takes_medians_over_rounds_and_the_ratios_divide_by_the_peer():
    summary = {(s.server, s.level): s for s in summarize(ROWS)}
    ours = summary[("tritonize", 1)]
    assert (ours.rounds, ours.throughput_rps, ours.throughput_min, ours.throughput_max, ours.p50_ms) == \
        (3, 1100, 1000, 1200, 0.9)
    assert summary[("mosec-unbatched", 1)].errors == 2 and summary[("mosec-unbatched", 1)].mean_batch is None
    by_peer = {(r.peer, r.level): r for r in ratios(list(summary.values()))}
    assert set(by_peer) == {("mosec-unbatched", 1), ("mosec-batched", 32)}  # only where tritonize ran too
    assert by_peer[("mosec-unbatched", 1)].throughput_ratio == pytest.approx(1100 / 850)
    assert by_peer[("mosec-unbatched", 1)].p50_ratio == pytest.approx(0.9 / 1.1)
    assert by_peer[("mosec-batched", 32)].throughput_ratio == pytest.approx(2.0)
    lines = headlines(list(summary.values()), list(by_peer.values()))
    assert lines == ["mlp, concurrency 32: tritonize 4000 req/s (Triton's mean batch 20.0) vs mosec-batched "
                     "2000 req/s: 2.00x",
                     "mlp, concurrency 1: p50 tritonize 0.900 ms vs mosec-unbatched 1.100 ms: 0.82x"]


def test_the_results_are_written_as_json_and_markdown_and_read_back(tmp_path):
    summary = summarize(ROWS)
    results = PeerResults(started="2026-12-02T00:00:00+00:00", machine=machine_info(), models=["mlp"], levels=[1, 32],
                          rounds=3, duration_s=1.0, servers={s: SERVERS[s].description for s in SERVERS},
                          versions={"mosec": "0.9.8"}, onnx_sha256={"mlp": "ab"}, rows=ROWS, summary=summary,
                          ratios=ratios(summary), threads={"tritonize": "mlp: 1 ONNX Runtime thread", "peers": "2"})
    written = write_results(results, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["peers.json", "peers.md"]  # no temporary left
    assert PeerResults.from_json(json.loads(written[0].read_text())) == results
    text = written[1].read_text()
    assert "| mosec-batched | 32 | 2.00x | 0.47x | 0.47x |" in text and "| tritonize | 32 | 4000 |" in text
    assert "Errors: 2." in text and markdown(results) + "\n" == text
    assert "ONNX Runtime threads: tritonize: mlp: 1 ONNX Runtime thread. peers: 2." in text


@pytest.mark.parametrize("change, message", [
    ({"levels": (1, 0)}, r"concurrency levels >= 1, got \[1, 0\]"),
    ({"rounds": 0}, "rounds >= 1, got 0"),
    ({"duration_s": 0.0}, "duration > 0 seconds, got 0.0"),
    ({"models": ("mlp", "mlp")}, r"distinct models, got \['mlp', 'mlp'\]"),
    ({"servers": ("mosec-batched", "litserve")}, "expected tritonize and one or more peers"),
    ({"servers": ("tritonize", "bentoml")}, r"got \['tritonize', 'bentoml'\]"),
    ({"load_generator": "ab"}, r"a load generator among \['auto', 'wrk', 'python'\], got 'ab'"),
    ({"peer_threads": 0}, "peer threads >= 1, got 0"),
])
def test_options_are_checked_with_what_was_expected(change, message):
    opts = PeersOptions(**change)
    with pytest.raises(ValueError, match=message):
        check_options(opts)


def test_only_models_the_peer_apps_can_serve_are_taken():
    assert [s.name for s in servable_specs(("mlp", "cnn"))] == ["mlp", "cnn"]
    with pytest.raises(ValueError, match=r"'lstm' has inputs \[\('x', 'FP32', \['batch', 'seq', 10\]\)\]"):
        servable_specs(("mlp", "lstm"))
    with pytest.raises(ValueError, match="'minilm' has inputs .*INT64"):
        servable_specs(("minilm",))


def test_the_command_refuses_bad_options_before_building_anything(tmp_path, capsys):
    envs = tmp_path / "envs"
    assert main(["peers", "--levels", "0", "--envs", str(envs), "--out", str(tmp_path / "o")]) == 2
    assert "concurrency levels >= 1, got [0]" in capsys.readouterr().err
    assert not envs.exists() and not (tmp_path / "o").exists()
    assert cli_peers.SERVER_NAMES == tuple(SERVERS)  # the command's choices are the servers bench/peers/compare.py knows


def _fake_torch_wheel(folder: Path) -> None:
    """A wheel named torch 2.0.0 with nothing in it: something for pip to resolve without a network."""
    with zipfile.ZipFile(folder / "torch-2.0.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("torch-2.0.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: torch\nVersion: 2.0.0\n")
        wheel.writestr("torch-2.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                     "Tag: py3-none-any\n")
        wheel.writestr("torch-2.0.0.dist-info/RECORD", "")


def test_the_constraints_make_pip_refuse_torch(tmp_path):
    _fake_torch_wheel(tmp_path)
    constraints = write_constraints(tmp_path / "envs")
    assert NO_TORCH in constraints.read_text()
    # Offline and on this folder only: no pip configuration, no index, the fake wheel as the one candidate.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")} | {"PIP_CONFIG_FILE": os.devnull}
    pip = [sys.executable, "-P", "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index",
           "--find-links", str(tmp_path), "torch"]
    free = subprocess.run(pip, env=env, capture_output=True, text=True, timeout=60)
    assert free.returncode == 0 and "Would install torch-2.0.0" in free.stdout, free.stdout + free.stderr
    blocked = subprocess.run(pip + ["-c", str(constraints)], env=env, capture_output=True, text=True, timeout=60)
    assert blocked.returncode != 0 and NO_TORCH in blocked.stdout + blocked.stderr


def test_the_peer_apps_import_nothing_of_tritonize_or_torch():
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "mosec", "litserve", "onnx_rows"}
    apps = sorted(APPS.glob("*.py"))
    assert {p.name for p in apps} == {"mosec_app.py", "litserve_app.py", "onnx_rows.py"}
    for app in apps:
        imported = set()
        for node in ast.walk(ast.parse(app.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{app.name}: a relative import runs only inside tritonize"
                imported.add(node.module.split(".")[0])
        assert imported <= allowed, f"{app.name} imports {sorted(imported - allowed)}"


def _python_only_env(tmp_path: Path) -> PeerEnv:
    (tmp_path / "env" / "bin").mkdir(parents=True)
    (tmp_path / "env" / "bin" / "python").symlink_to(sys.executable)
    return PeerEnv("mosec", tmp_path / "env")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_peer_process_and_its_children_are_all_stopped(tmp_path):
    app = tmp_path / "app.py"  # a "server" with a worker of its own, which ignores SIGINT like a stuck worker would
    app.write_text("import os, signal, subprocess, sys, time\n"
                   "child = subprocess.Popen([sys.executable, '-c', 'import signal, time; "
                   "signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)'])\n"
                   "open('pids.tmp', 'w').write(f'{os.getpid()} {child.pid}'); os.rename('pids.tmp', 'pids')\n"
                   "time.sleep(600)\n")
    pids_file = tmp_path / "pids"

    def probe():
        if not pids_file.exists():
            raise ConnectionRefusedError("not yet")

    with PeerProcess(_python_only_env(tmp_path), str(app), [], tmp_path / "app.log", probe, stop_timeout_s=1):
        pids = [int(p) for p in pids_file.read_text().split()]
        assert all(_alive(p) for p in pids)
    time.sleep(0.2)
    assert not any(_alive(p) for p in pids)


def test_a_peer_that_exits_is_reported_with_its_log(tmp_path):
    app = tmp_path / "app.py"
    app.write_text("import sys\nprint('no model here', flush=True)\nsys.exit(3)\n")
    process = PeerProcess(_python_only_env(tmp_path), str(app), [], tmp_path / "app.log",
                          lambda: (_ for _ in ()).throw(ConnectionRefusedError()))
    with pytest.raises(PeerError, match="exited with code 3 before answering(.|\n)*no model here"):
        process.start()
    assert process.process is None


@pytest.mark.server
@pytest.mark.skipif(os.environ.get("TRITONIZE_PEERS") != "1",
                    reason="builds the peers' venvs from PyPI and runs real Mosec and LitServe servers: "
                           "set TRITONIZE_PEERS=1 to run it")
def test_a_real_run_serves_the_same_answers_everywhere(tmp_path):
    from tritonize.bench.peers.compare import run_peers

    opts = PeersOptions(models=("mlp",), levels=(1, 4), rounds=1, duration_s=0.5, out=tmp_path / "out",
                        artifacts=tmp_path / "artifacts")
    from tritonize.pipeline.current import current_artifacts

    results = run_peers(opts, progress=lambda _: None, current=lambda specs: current_artifacts(specs, opts.artifacts))
    assert {c.server for c in results.checks} == set(SERVERS) and all(c.ok for c in results.checks)
    assert {(r.server, int(r.level)) for r in results.rows} == {(s, c) for s in SERVERS for c in (1, 4)}
    assert all(r.errors == 0 and r.ok > 0 for r in results.rows)
    assert all((r.mean_batch is not None) == (r.server == "tritonize") for r in results.rows)
    assert (tmp_path / "out" / "peers.md").is_file()
    assert results.threads["peers"] == "1 ONNX Runtime thread(s) at every batch size"
    assert results.threads["tritonize"].startswith("mlp: 1 ONNX Runtime thread")
