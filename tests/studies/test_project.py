"""The project's own benchmark (studies/project.py, `tritonize bench --project`) around the suite's
measurements: its floors and scaling measured taking turns on the real server (short runs), and its
targets judged."""
from pathlib import Path

import pytest

from tritonize.bench.report.project import ProjectResults
from tritonize.bench.report.provenance import IdlePolicy, Machine
from tritonize.bench.report.report import markdown
from tritonize.bench.report.results import SuiteResults
from tritonize.bench.suite.options import SuiteOptions
from tritonize.bench.suite.run import run_suite
from tritonize.serving.idle import poll_idle_unavailable
from tritonize.serving.placement import available_cpus
from tritonize.studies.project import ProjectBenchmark, targets
from tritonize.studies.turns import FLOOR_BLOCK


class Recording:
    """A Progress that keeps what it was told: [(stage, total, [messages])]."""

    def __init__(self):
        self.stages = []

    def stage(self, name, total):
        self.stages.append((name, total, []))

    def advance(self, message):
        self.stages[-1][2].append(message)


def _results(opts, **kw):
    machine = Machine(host="h", platform="p", cpu="c", cores=2, memory_gb=1.0, gpu="none",
                      cpuidle=IdlePolicy(driver="d", governor="g", states=["POLL (0 us)"]))
    return SuiteResults(started="s", date="d", machine=machine, versions={"torch": "2"}, git_commit="g", options=opts,
                        **kw)


def test_the_projects_run_needs_its_studies_passed(tmp_path):
    opts = SuiteOptions(models=["mlp"], artifacts=Path("a"), results_root=tmp_path, inprocess=False, project=True)
    with pytest.raises(ValueError, match=r"project=True runs the project's own studies, which the caller passes as "
                                         r"`studies` \(tritonize\.studies\.project\.ProjectBenchmark"):
        run_suite(opts)
    assert list(tmp_path.iterdir()) == []  # refused before anything was measured or written


@pytest.mark.server
def test_the_projects_run_measures_its_floors_and_judges_its_targets(artifacts, tmp_path):
    opts = SuiteOptions(models=["mlp"], artifacts=artifacts, results_root=tmp_path, quick=True, inprocess=False,
                        protocols=("grpc",), grpc_levels=(1,), duration_s=0.2, floor_seconds=1.0, project=True)
    progress = Recording()
    folder = run_suite(opts, progress, studies=ProjectBenchmark)
    results = SuiteResults.read(folder)
    project = results.project
    main = project.floors[0]
    assert main.ratio > 0 and main.idle == "default" and project.targets[0].name.startswith("served mlp")
    assert "project: mlp vs its do-nothing twin" in [name for name, _, _ in progress.stages]
    assert results.skipped["the project's cnn scaling"].startswith("needs cnn among the served models")
    polling = poll_idle_unavailable() is None
    floors = {f.setup: f for f in project.floors}
    if len(available_cpus()) >= 2:  # the placed server's floor, and the two measured beside it
        polled = {"split, poll idle", "stubs alone, poll idle"} if polling else set()
        assert set(floors) == {"split", "none", "stubs alone"} | polled
        assert floors["stubs alone"].where.endswith("model stubs alone on CPU " + str(max(available_cpus())))
        assert main.setup == "split"
    for f in floors.values():
        assert f.requests == {"mlp": f.blocks * FLOOR_BLOCK, "mlp_noop": f.blocks * FLOOR_BLOCK}
        q25, median, q75 = f.block_ratio_quartiles
        assert f.blocks >= 1 and q25 <= median <= q75
        assert f.ratio == pytest.approx(f.p50_ms / f.noop_p50_ms)
        # each setup's own requests, also where two setups are one server (polling or not)
        for name, count in f.requests.items():
            assert f.server[name].requests == count and f.server[name].mean_batch == 1
            assert f.server[name].compute_infer_us > 0
    if polling:  # measured with no core halting, after everything measured with the host's own idle policy
        assert floors[f"{main.setup}, poll idle"].resting_idle_entries_per_request == {"mlp": 0, "mlp_noop": 0}
        default = [f for f in project.floors if f.idle == "default"]
        polled_floors = [f for f in project.floors if f.idle == "poll"]
        assert max(f.measured_s[1] for f in default) <= min(f.measured_s[0] for f in polled_floors)
        assert [t.name for t in project.targets].count(
            "served mlp batch-1 gRPC p50 / do-nothing model p50, idle cores polling") == 1
    else:
        assert results.skipped["the MLP floor and the CNN scaling with idle cores polling"] == poll_idle_unavailable()
    summary = (folder / "summary.md").read_text()
    assert "## Project targets" in summary and "## SLOs" in summary
    if len(floors) > 1:
        split = floors[main.setup].server
        assert "server compute infer us (mlp / do-nothing)" in summary
        assert f"take turns in blocks of {FLOOR_BLOCK} requests" in summary
        assert f"{split['mlp'].compute_infer_us:.1f} / {split['mlp_noop'].compute_infer_us:.1f}" in summary
        if "stubs alone" in floors:
            assert f"stubs alone: {floors['stubs alone'].where}" in summary


@pytest.mark.server
def test_without_placement_the_os_schedules_everything(artifacts, tmp_path):
    opts = SuiteOptions(models=["mlp"], artifacts=artifacts, results_root=tmp_path, quick=True, inprocess=False,
                        protocols=("grpc",), grpc_levels=(1,), duration_s=0.2, floor_seconds=0.5, placement=False,
                        project=True)
    results = SuiteResults.read(run_suite(opts, studies=ProjectBenchmark))
    assert results.placement.startswith("none")
    assert results.project.floors[0].placement == "none" and results.served[0].errors == 0
    assert {f.setup for f in results.project.floors} <= {"none", "none, poll idle"}


def test_the_cnn_scaling_target_is_judged_per_load_generator_on_the_rows_that_take_turns(project_records):
    project = ProjectResults(scaling=[project_records.scaling("http-lean", "default", 4000, 13000),
                                      project_records.scaling("grpc", "default", 2000, 5000)])
    rows = {t.name.rsplit(", ", 1)[1]: t for t in targets(project)}
    assert set(rows) == {"lean HTTP load generator", "tritonclient gRPC load generator"}
    assert rows["lean HTTP load generator"].measured == "3.25x (per-turn quartiles 2.50 / 2.75 / 3.00; mean batch 4.00)"
    assert rows["lean HTTP load generator"].met
    assert rows["tritonclient gRPC load generator"].measured.startswith("2.50x")
    assert not rows["tritonclient gRPC load generator"].met


def test_a_scaling_run_with_failed_requests_does_not_meet_its_target(project_records):
    row = project_records.scaling("http-lean", "default", 4000, 13000)
    row.levels["c8"].errors = 3
    [target] = targets(ProjectResults(scaling=[row]))
    assert target.measured.endswith("; 3 failed requests)") and not target.met


def test_targets_are_judged_with_the_hosts_idle_policy_and_again_with_idle_cores_polling(project_records):
    floor, scaling = project_records.floor, project_records.scaling
    project = ProjectResults(floors=[floor("split", "default", 0.40, 0.35, FLOOR_BLOCK),
                                     floor("none", "default", 0.5, 0.4, FLOOR_BLOCK),
                                     floor("split", "poll", 0.28, 0.27, FLOOR_BLOCK)],
                             scaling=[scaling("grpc", "default", 2000, 6200), scaling("grpc", "poll", 3000, 6600)])
    got = {t.name: (t.measured.split(" (")[0], t.met) for t in targets(project)}
    assert got == {
        "served mlp batch-1 gRPC p50 / do-nothing model p50": ("1.143x", False),
        "served mlp batch-1 gRPC p50 (absolute)": ("0.400 ms", True),
        "cnn throughput, concurrency 8 / concurrency 1 (dynamic batching), tritonclient gRPC load generator":
            ("3.10x", True),
        "served mlp batch-1 gRPC p50 / do-nothing model p50, idle cores polling": ("1.037x", True),
        "served mlp batch-1 gRPC p50 (absolute), idle cores polling": ("0.280 ms", True),
        "cnn throughput, concurrency 8 / concurrency 1 (dynamic batching), tritonclient gRPC load generator, "
        "idle cores polling": ("2.20x", False)}
    opts = SuiteOptions(models=["mlp"], artifacts=Path("a"))
    project.targets = targets(project)
    assert "## Project targets" in markdown(_results(opts, project=project))
    assert "## Project targets" not in markdown(_results(opts))


@pytest.mark.server
@pytest.mark.parametrize("quick", [True, False])
def test_the_cnn_scaling_takes_turns_between_concurrency_1_and_8(artifacts, tmp_path, quick):
    make = SuiteOptions.quick_defaults if quick else SuiteOptions
    opts = make(models=["cnn"], artifacts=artifacts, results_root=tmp_path, inprocess=False, protocols=("grpc",),
                grpc_levels=(1,), duration_s=0.2, scaling_seconds=1.0, compare_placements=False, project=True)
    results = SuiteResults.read(run_suite(opts, studies=ProjectBenchmark))
    main = "split" if len(available_cpus()) >= 2 else "none"
    polled = not quick and poll_idle_unavailable() is None  # a quick run leaves polling to the full suite
    setups = [main] + ([f"{main}, poll idle"] if polled else [])
    rows = results.project.scaling
    # each setup's load generators take turns; the polled setup comes after, since polling's effect outlasts it
    assert [(r.protocol, r.setup) for r in rows] == [(p, s) for s in setups for p in ("http-lean", "grpc")]
    assert all(a.measured_s[1] <= b.measured_s[0] for a, b in zip(rows, rows[1:]) if a.setup != b.setup)
    for r in rows:
        c1, c8 = r.levels["c1"], r.levels["c8"]
        assert r.turns >= 1 and c1.errors == c8.errors == 0 and c1.requests > 0 and c8.requests > 0
        assert r.ratio == pytest.approx(c8.infer_per_s / c1.infer_per_s)
        assert c1.mean_batch == pytest.approx(1.0) and c8.mean_batch >= 1.0
        assert set(c8.cores_busy) >= {f"cpu{c}" for c in available_cpus()}
        assert all(0 <= f <= 1 for f in c8.cores_busy.values() if f == f)
        q25, median, q75 = r.turn_ratio_quartiles
        assert q25 <= median <= q75
    judged = [t.name for t in results.project.targets if t.name.startswith("cnn throughput")]
    assert len(judged) == len(rows) and sum(name.endswith(", idle cores polling") for name in judged) == polled * 2
    folder, = tmp_path.iterdir()
    assert folder.name.endswith("-quick") == quick
    summary = (folder / "summary.md").read_text()
    assert "## Scaling with dynamic batching (served cnn, concurrency 1 and 8 taking turns)" in summary
    assert f"| {setups[-1]} | grpc | {rows[-1].turns} |" in summary


def test_the_summary_names_the_idle_policy_and_a_latency_bound_held_by_another_process():
    results = _results(SuiteOptions(models=["mlp"], artifacts=Path("a")))
    results.machine.cpuidle = IdlePolicy(driver="intel_idle", governor="menu", states=["POLL (0 us)", "C1 (2 us)"])
    line = "CPU idle policy: driver intel_idle, governor menu, states POLL (0 us), C1 (2 us)"
    assert line + "." in markdown(results)
    results.machine.cpuidle.latency_bound_us = 0
    assert line + ", a PM QoS CPU latency bound of 0 us held when the run started." in markdown(results)
