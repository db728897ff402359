import csv
import json

import pytest

from tritonize.bench.report import PERF_ANALYZER_COLUMNS
from tritonize.bench.suite import SuiteOptions, run_suite, targets
from tritonize.placement import available_cpus

pytestmark = pytest.mark.server


def test_a_tiny_suite_run_writes_every_report_file(artifacts, tmp_path):
    opts = SuiteOptions(models=["mlp"], artifacts=artifacts, results_root=tmp_path, quick=True,
                        grpc_levels=(1, 2), http_levels=(1,), lean_levels=(1,), duration_s=0.3, floor_rounds=1)
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
    if len(available_cpus()) >= 2:  # the placed server's floor, and the unplaced one measured beside it
        assert results["placement"].startswith("server and clients on CPU")
        floors = results["floor_by_placement"]
        assert set(floors) == {"split", "none"} and floors["split"] == results["floor"]
        for f in floors.values():
            assert len(f["rounds"]["mlp"]) == len(f["rounds"]["mlp_noop"]) == opts.floor_rounds
            assert f["ratio"] == pytest.approx(f["p50_ms"] / f["noop_p50_ms"])
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
                        protocols=("grpc",), grpc_levels=(1,), duration_s=0.2, floor_rounds=1, placement=False)
    results = json.loads((run_suite(opts) / "results.json").read_text())
    assert results["placement"].startswith("none") and "floor_by_placement" not in results
    assert results["floor"]["placement"] == "none" and results["served"][0]["errors"] == 0


def _cnn_row(protocol, level, infer_per_s):
    return {"model": "cnn", "protocol": protocol, "mode": "closed", "level": level, "infer_per_s": infer_per_s,
            "mean_batch": 4.0}


def test_the_cnn_scaling_target_is_judged_per_load_generator():
    served = [_cnn_row("http-lean", 1, 4000), _cnn_row("http-lean", 8, 13000),
              _cnn_row("grpc", 1, 2000), _cnn_row("grpc", 8, 5000), _cnn_row("http", 8, 99999)]
    rows = {t["name"].rsplit(", ", 1)[1]: t for t in targets({"served": served})}
    assert set(rows) == {"lean HTTP load generator", "tritonclient gRPC load generator"}
    assert rows["lean HTTP load generator"]["measured"].startswith("3.25x") and rows["lean HTTP load generator"]["met"]
    assert rows["tritonclient gRPC load generator"]["measured"].startswith("2.50x")
    assert not rows["tritonclient gRPC load generator"]["met"]
