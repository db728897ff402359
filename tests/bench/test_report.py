import csv
import json

import pytest

from tritonize.bench.report import PERF_ANALYZER_COLUMNS, markdown
from tritonize.bench.suite import FLOOR_BLOCK, SuiteOptions, run_suite, targets
from tritonize.idle import poll_idle_unavailable
from tritonize.placement import available_cpus

pytestmark = pytest.mark.server


def test_a_tiny_suite_run_writes_every_report_file(artifacts, tmp_path):
    opts = SuiteOptions(models=["mlp"], artifacts=artifacts, results_root=tmp_path, quick=True,
                        grpc_levels=(1, 2), http_levels=(1,), lean_levels=(1,), duration_s=0.3, floor_seconds=1.0)
    folder = run_suite(opts)
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
    assert results["floor"]["ratio"] > 0 and results["targets"][0]["name"].startswith("served mlp")
    polling = poll_idle_unavailable() is None
    if len(available_cpus()) >= 2:  # the placed server's floor, and the unplaced one measured beside it
        assert results["placement"].startswith("server and clients on CPU")
        floors = results["floor_by_setup"]
        assert set(floors) == {"split", "none"} | ({"split, poll idle"} if polling else set())
        assert floors["split"] == results["floor"] and results["floor"]["idle"] == "default"
        for f in floors.values():
            assert f["requests"] == {"mlp": f["blocks"] * FLOOR_BLOCK, "mlp_noop": f["blocks"] * FLOOR_BLOCK}
            q25, median, q75 = f["block_ratio_quartiles"]
            assert f["blocks"] >= 1 and q25 <= median <= q75
            assert f["ratio"] == pytest.approx(f["p50_ms"] / f["noop_p50_ms"])
        if polling:  # measured with no core halting: the host-wide count of halts stayed at zero
            assert floors["split, poll idle"]["resting_idle_entries_per_request"] == {"mlp": 0, "mlp_noop": 0}
            assert [t["name"] for t in results["targets"]].count(
                "served mlp batch-1 gRPC p50 / do-nothing model p50, idle cores polling") == 1
    if not polling:
        assert results["skipped"]["the MLP floor and the CNN scaling with idle cores polling"] == poll_idle_unavailable()
    assert results["machine"]["cpuidle"]["driver"]
    assert "torch.compile" in " ".join(results["skipped"].values())
    with open(folder / "served_perf_analyzer.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(PERF_ANALYZER_COLUMNS) <= set(rows[0]) and len(rows) == 4
    summary = (folder / "summary.md").read_text()
    assert "## Targets" in summary and "## Served" in summary and "## Not run, and why" in summary
    assert f"Placement: {results['placement']}." in summary
    assert (folder / "served.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_placement_the_os_schedules_everything(artifacts, tmp_path):
    opts = SuiteOptions(models=["mlp"], artifacts=artifacts, results_root=tmp_path, quick=True, inprocess=False,
                        protocols=("grpc",), grpc_levels=(1,), duration_s=0.2, floor_seconds=0.5, placement=False)
    results = json.loads((run_suite(opts) / "results.json").read_text())
    assert results["placement"].startswith("none")
    assert results["floor"]["placement"] == "none" and results["served"][0]["errors"] == 0
    assert set(results.get("floor_by_setup", {})) <= {"none", "none, poll idle"}


def _cnn_row(protocol, level, infer_per_s):
    return {"model": "cnn", "protocol": protocol, "mode": "closed", "level": level, "infer_per_s": infer_per_s,
            "mean_batch": 4.0}


def _floor(placement, idle, p50_ms, noop_p50_ms):
    return {"placement": placement, "idle": idle, "p50_ms": p50_ms, "noop_p50_ms": noop_p50_ms,
            "ratio": p50_ms / noop_p50_ms}


def test_the_cnn_scaling_target_is_judged_per_load_generator():
    served = [_cnn_row("http-lean", 1, 4000), _cnn_row("http-lean", 8, 13000),
              _cnn_row("grpc", 1, 2000), _cnn_row("grpc", 8, 5000), _cnn_row("http", 8, 99999)]
    rows = {t["name"].rsplit(", ", 1)[1]: t for t in targets({"served": served})}
    assert set(rows) == {"lean HTTP load generator", "tritonclient gRPC load generator"}
    assert rows["lean HTTP load generator"]["measured"].startswith("3.25x") and rows["lean HTTP load generator"]["met"]
    assert rows["tritonclient gRPC load generator"]["measured"].startswith("2.50x")
    assert not rows["tritonclient gRPC load generator"]["met"]


def test_targets_are_judged_with_the_hosts_idle_policy_and_again_with_idle_cores_polling():
    main = _floor("split", "default", 0.40, 0.35)
    results = {"floor": main, "floor_by_setup": {"split": main, "split, poll idle": _floor("split", "poll", 0.28, 0.27),
                                                 "none": _floor("none", "default", 0.5, 0.4)},
               "served": [_cnn_row("grpc", 1, 2000), _cnn_row("grpc", 8, 6200)],
               "scaling_by_idle": [{**_cnn_row("grpc", 1, 1900), "idle": "default"},
                                   {**_cnn_row("grpc", 8, 6300), "idle": "default"},
                                   {**_cnn_row("grpc", 1, 3000), "idle": "poll"},
                                   {**_cnn_row("grpc", 8, 6600), "idle": "poll"}]}
    got = {t["name"]: (t["measured"], t["met"]) for t in targets(results)}
    assert got == {
        "served mlp batch-1 gRPC p50 / do-nothing model p50": ("1.143x", False),
        "served mlp batch-1 gRPC p50 (absolute)": ("0.400 ms", True),
        "cnn throughput, concurrency 8 / concurrency 1 (dynamic batching), tritonclient gRPC load generator":
            ("3.10x (mean batch 4.00)", True),
        "served mlp batch-1 gRPC p50 / do-nothing model p50, idle cores polling": ("1.037x", True),
        "served mlp batch-1 gRPC p50 (absolute), idle cores polling": ("0.280 ms", True),
        "cnn throughput, concurrency 8 / concurrency 1 (dynamic batching), tritonclient gRPC load generator, "
        "idle cores polling": ("2.20x (mean batch 4.00)", False)}


def test_the_cnn_scaling_is_measured_under_both_idle_policies_taking_turns(artifacts, tmp_path):
    opts = SuiteOptions(models=["cnn"], artifacts=artifacts, results_root=tmp_path, inprocess=False,
                        protocols=("grpc",), grpc_levels=(1,), duration_s=0.2, compare_unplaced=False)
    results = json.loads((run_suite(opts) / "results.json").read_text())
    if poll_idle_unavailable() is not None:
        assert "scaling_by_idle" not in results
        return
    rows = results["scaling_by_idle"]
    main = "split" if len(available_cpus()) >= 2 else "none"
    assert [(r["protocol"], r["setup"], r["level"]) for r in rows] == [
        (protocol, setup, level) for protocol in ("http-lean", "grpc") for setup in (main, f"{main}, poll idle")
        for level in (1, 8)]
    assert all(r["errors"] == 0 and r["ok"] > 0 and r["model"] == "cnn" for r in rows)
    polled = [t for t in results["targets"] if t["name"].endswith(", idle cores polling")]
    assert len(polled) == 2 and all(t["name"].startswith("cnn throughput") for t in polled)
    summary = (next(tmp_path.iterdir()) / "summary.md").read_text()
    assert "## Scaling by idle policy" in summary and f"| {main}, poll idle | grpc | 8 |" in summary


def test_the_summary_names_the_idle_policy_and_a_latency_bound_held_by_another_process():
    idle = {"driver": "intel_idle", "governor": "menu", "states": ["POLL (0 us)", "C1 (2 us)"]}
    results = {"machine": {"host": "h", "cpu": "c", "cores": 2, "memory_gb": 1, "gpu": "none", "cpuidle": idle},
               "date": "d", "git_commit": "g", "versions": {}}
    line = "CPU idle policy: driver intel_idle, governor menu, states POLL (0 us), C1 (2 us)"
    assert line + "." in markdown(results)
    idle["latency_bound_us"] = 0
    assert line + ", a PM QoS CPU latency bound of 0 us held when the run started." in markdown(results)
