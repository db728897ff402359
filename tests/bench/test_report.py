import csv
import json
import shutil
import subprocess

import pytest

from tritonize.bench.report import PERF_ANALYZER_COLUMNS, markdown
from tritonize.bench.suite import FLOOR_BLOCK, SuiteOptions, git_commit, run_suite, targets
from tritonize.serving.idle import poll_idle_unavailable
from tritonize.serving.placement import available_cpus

pytestmark = pytest.mark.server


def test_a_tiny_suite_run_writes_every_report_file(artifacts, tmp_path):
    opts = SuiteOptions(models=["mlp"], artifacts=artifacts, results_root=tmp_path, quick=True,
                        grpc_levels=(1, 2), http_levels=(1,), lean_levels=(1,), duration_s=0.3, floor_seconds=1.0)
    folder = run_suite(opts)
    assert folder.parent == tmp_path and folder.name.endswith("-quick")  # beside the day's full report, never over it
    names = {p.name for p in folder.iterdir()}
    assert names == {"results.json", "summary.md", "served_perf_analyzer.csv", "served.png", "inprocess.png"}
    results = json.loads((folder / "results.json").read_text())
    assert results["machine"]["cores"] and results["versions"]["onnxruntime"] and results["git_commit"]
    backends = {r["backend"] for r in results["inprocess"]}
    assert {"torch_eager", "ort_fp32", "ort_ort_opt", "ort_int8"} <= backends
    served = results["served"]
    assert {(r["protocol"], r["mode"], r["level"]) for r in served} >= {("grpc", "closed", 1), ("grpc", "closed", 2),
                                                                        ("http", "closed", 1),
                                                                        ("http-lean", "closed", 1)}
    assert any(r["mode"] == "open" for r in served)
    for r in served:
        assert r["errors"] == 0 and r["ok"] == r["sent"] > 0
        assert r["server_requests"] == r["sent"] + (5 * r["level"] if r["mode"] == "closed" else 0)  # + warm-up
        assert r["server_compute_infer_us"] > 0
        assert 0 < max(r["cores_busy"].values()) <= 1  # the server answered on some core
    assert results["floor"]["ratio"] > 0 and results["targets"][0]["name"].startswith("served mlp")
    polling = poll_idle_unavailable() is None
    if len(available_cpus()) >= 2:  # the placed server's floor, and the two measured beside it
        assert results["placement"].startswith("server and clients on CPU")
        floors = results["floor_by_setup"]
        polled = {"split, poll idle", "stubs alone, poll idle"} if polling else set()
        assert set(floors) == {"split", "none", "stubs alone"} | polled
        assert floors["stubs alone"]["where"].endswith("model stubs alone on CPU " + str(max(available_cpus())))
        assert floors["split"] == results["floor"] and results["floor"]["idle"] == "default"
        for f in floors.values():
            assert f["requests"] == {"mlp": f["blocks"] * FLOOR_BLOCK, "mlp_noop": f["blocks"] * FLOOR_BLOCK}
            q25, median, q75 = f["block_ratio_quartiles"]
            assert f["blocks"] >= 1 and q25 <= median <= q75
            assert f["ratio"] == pytest.approx(f["p50_ms"] / f["noop_p50_ms"])
            # each setup's own requests, also where two setups are one server (polling or not)
            for name, count in f["requests"].items():
                assert f["server"][name]["server_requests"] == count and f["server"][name]["mean_batch"] == 1
                assert f["server"][name]["server_compute_infer_us"] > 0
        if polling:  # measured with no core halting: the host-wide count of halts stayed at zero
            assert floors["split, poll idle"]["resting_idle_entries_per_request"] == {"mlp": 0, "mlp_noop": 0}
            # ... and after everything measured with the host's own idle policy, which polling would speed up
            default = [r for r in [*floors.values(), *results.get("scaling", [])] if r["idle"] == "default"]
            polled = [r for r in [*floors.values(), *results.get("scaling", [])] if r["idle"] == "poll"]
            assert max(r["measured_s"][1] for r in default) <= min(r["measured_s"][0] for r in polled)
            assert [t["name"] for t in results["targets"]].count(
                "served mlp batch-1 gRPC p50 / do-nothing model p50, idle cores polling") == 1
    if not polling:
        assert results["skipped"]["the MLP floor and the CNN scaling with idle cores polling"] == poll_idle_unavailable()
    assert results["machine"]["cpuidle"]["driver"]
    assert "torch.compile" in " ".join(results["skipped"].values())
    if shutil.which("perf_analyzer") is None:  # said, not silently left out
        assert results["skipped"]["perf_analyzer beside our load generator"].startswith("no perf_analyzer on PATH")
        assert "perf_analyzer" not in results
    with open(folder / "served_perf_analyzer.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(PERF_ANALYZER_COLUMNS) <= set(rows[0]) and len(rows) == 4
    summary = (folder / "summary.md").read_text()
    assert "## Targets" in summary and "## Served" in summary and "## Not run, and why" in summary
    assert f"Placement: {results['placement']}." in summary
    if len(available_cpus()) >= 2:
        split = results["floor_by_setup"]["split"]["server"]
        assert "server compute infer us (mlp / do-nothing)" in summary
        assert f"take turns in blocks of {FLOOR_BLOCK} requests" in summary
        assert f"stubs alone: {results['floor_by_setup']['stubs alone']['where']}" in summary
        assert f"{split['mlp']['server_compute_infer_us']:.1f} / {split['mlp_noop']['server_compute_infer_us']:.1f}" in summary
    assert (folder / "served.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_placement_the_os_schedules_everything(artifacts, tmp_path):
    opts = SuiteOptions(models=["mlp"], artifacts=artifacts, results_root=tmp_path, quick=True, inprocess=False,
                        protocols=("grpc",), grpc_levels=(1,), duration_s=0.2, floor_seconds=0.5, placement=False)
    results = json.loads((run_suite(opts) / "results.json").read_text())
    assert results["placement"].startswith("none")
    assert results["floor"]["placement"] == "none" and results["served"][0]["errors"] == 0
    assert set(results.get("floor_by_setup", {})) <= {"none", "none, poll idle"}


def _scaling(protocol, idle, c1, c8):
    return {"model": "cnn", "protocol": protocol, "setup": "split", "idle": idle, "ratio": c8 / c1,
            "turn_ratio_quartiles": [2.5, 2.75, 3.0],
            "levels": {"c1": {"infer_per_s": c1, "mean_batch": 1.0, "errors": 0},
                       "c8": {"infer_per_s": c8, "mean_batch": 4.0, "errors": 0}}}


def _floor(placement, idle, p50_ms, noop_p50_ms):
    return {"placement": placement, "idle": idle, "p50_ms": p50_ms, "noop_p50_ms": noop_p50_ms,
            "ratio": p50_ms / noop_p50_ms}


def test_the_cnn_scaling_target_is_judged_per_load_generator_on_the_rows_that_take_turns():
    results = {"scaling": [_scaling("http-lean", "default", 4000, 13000), _scaling("grpc", "default", 2000, 5000)],
               # the concurrency sweep's own rows of the same model do not judge it
               "served": [{"model": "cnn", "protocol": "grpc", "mode": "closed", "level": 8, "infer_per_s": 9e9}]}
    rows = {t["name"].rsplit(", ", 1)[1]: t for t in targets(results)}
    assert set(rows) == {"lean HTTP load generator", "tritonclient gRPC load generator"}
    assert rows["lean HTTP load generator"]["measured"] == "3.25x (per-turn quartiles 2.50 / 2.75 / 3.00; mean batch 4.00)"
    assert rows["lean HTTP load generator"]["met"]
    assert rows["tritonclient gRPC load generator"]["measured"].startswith("2.50x")
    assert not rows["tritonclient gRPC load generator"]["met"]


def test_a_scaling_run_with_failed_requests_does_not_meet_its_target():
    row = _scaling("http-lean", "default", 4000, 13000)
    row["levels"]["c8"]["errors"] = 3
    [target] = targets({"scaling": [row]})
    assert target["measured"].endswith("; 3 failed requests)") and not target["met"]


def test_targets_are_judged_with_the_hosts_idle_policy_and_again_with_idle_cores_polling():
    main = _floor("split", "default", 0.40, 0.35)
    results = {"floor": main, "floor_by_setup": {"split": main, "split, poll idle": _floor("split", "poll", 0.28, 0.27),
                                                 "none": _floor("none", "default", 0.5, 0.4)},
               "scaling": [_scaling("grpc", "default", 2000, 6200), _scaling("grpc", "poll", 3000, 6600)]}
    got = {t["name"]: (t["measured"].split(" (")[0], t["met"]) for t in targets(results)}
    assert got == {
        "served mlp batch-1 gRPC p50 / do-nothing model p50": ("1.143x", False),
        "served mlp batch-1 gRPC p50 (absolute)": ("0.400 ms", True),
        "cnn throughput, concurrency 8 / concurrency 1 (dynamic batching), tritonclient gRPC load generator":
            ("3.10x", True),
        "served mlp batch-1 gRPC p50 / do-nothing model p50, idle cores polling": ("1.037x", True),
        "served mlp batch-1 gRPC p50 (absolute), idle cores polling": ("0.280 ms", True),
        "cnn throughput, concurrency 8 / concurrency 1 (dynamic batching), tritonclient gRPC load generator, "
        "idle cores polling": ("2.20x", False)}


@pytest.mark.parametrize("quick", [True, False])
def test_the_cnn_scaling_takes_turns_between_concurrency_1_and_8(artifacts, tmp_path, quick):
    make = SuiteOptions.quick_defaults if quick else SuiteOptions
    opts = make(models=["cnn"], artifacts=artifacts, results_root=tmp_path, inprocess=False, protocols=("grpc",),
                grpc_levels=(1,), duration_s=0.2, scaling_seconds=1.0, compare_placements=False)
    results = json.loads((run_suite(opts) / "results.json").read_text())
    main = "split" if len(available_cpus()) >= 2 else "none"
    polled = not quick and poll_idle_unavailable() is None  # a quick run leaves polling to the full suite
    setups = [main] + ([f"{main}, poll idle"] if polled else [])
    rows = results["scaling"]
    # each setup's load generators take turns; the polled setup comes after, since polling's effect outlasts it
    assert [(r["protocol"], r["setup"]) for r in rows] == [(p, s) for s in setups for p in ("http-lean", "grpc")]
    assert all(a["measured_s"][1] <= b["measured_s"][0] for a, b in zip(rows, rows[1:]) if a["setup"] != b["setup"])
    for r in rows:
        c1, c8 = r["levels"]["c1"], r["levels"]["c8"]
        assert r["turns"] >= 1 and c1["errors"] == c8["errors"] == 0 and c1["requests"] > 0 and c8["requests"] > 0
        assert r["ratio"] == pytest.approx(c8["infer_per_s"] / c1["infer_per_s"])
        assert c1["mean_batch"] == pytest.approx(1.0) and c8["mean_batch"] >= 1.0
        assert set(c8["cores_busy"]) >= {f"cpu{c}" for c in available_cpus()}
        assert all(0 <= f <= 1 for f in c8["cores_busy"].values() if f == f)
        q25, median, q75 = r["turn_ratio_quartiles"]
        assert q25 <= median <= q75
    judged = [t["name"] for t in results["targets"] if t["name"].startswith("cnn throughput")]
    assert len(judged) == len(rows) and sum(name.endswith(", idle cores polling") for name in judged) == polled * 2
    folder, = tmp_path.iterdir()
    assert folder.name.endswith("-quick") == quick
    summary = (folder / "summary.md").read_text()
    assert "## Scaling with dynamic batching (served cnn, concurrency 1 and 8 taking turns)" in summary
    assert f"| {setups[-1]} | grpc | {rows[-1]['turns']} |" in summary


def test_the_summary_names_the_idle_policy_and_a_latency_bound_held_by_another_process():
    idle = {"driver": "intel_idle", "governor": "menu", "states": ["POLL (0 us)", "C1 (2 us)"]}
    results = {"machine": {"host": "h", "cpu": "c", "cores": 2, "memory_gb": 1, "gpu": "none", "cpuidle": idle},
               "date": "d", "git_commit": "g", "versions": {}}
    line = "CPU idle policy: driver intel_idle, governor menu, states POLL (0 us), C1 (2 us)"
    assert line + "." in markdown(results)
    idle["latency_bound_us"] = 0
    assert line + ", a PM QoS CPU latency bound of 0 us held when the run started." in markdown(results)


def test_the_commit_is_marked_dirty_when_code_outside_the_results_differs_from_it(tmp_path):
    assert git_commit(tmp_path) == "unknown"  # not a git checkout
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "bench" / "results" / "summary.md").write_text("old\n")

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=tmp_path,
                              check=True, capture_output=True, text=True).stdout.strip()

    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    head = git("rev-parse", "--short", "HEAD")
    (tmp_path / "bench" / "results" / "summary.md").write_text("a new report\n")
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert git_commit(tmp_path / "bench") == head
    (tmp_path / "code.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "bench") == head + "-dirty"
