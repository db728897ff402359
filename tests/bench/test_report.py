"""The suite end to end on the real server (short runs), and its report: files, typed results read back,
the user's SLOs judged, no project targets in a user's run, the project's records read back and
rendered, readable plots, and an in-process runner that prints nothing. The project's own runs are
tests/studies/test_project.py's."""
import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tritonize.bench.load.perf_analyzer import COLUMNS as PERF_ANALYZER_COLUMNS
from tritonize.bench.report.plots import inprocess_figure, served_figure
from tritonize.bench.report.project import ProjectResults, Target
from tritonize.bench.report.provenance import IdlePolicy, Machine
from tritonize.bench.report.report import markdown
from tritonize.bench.report.results import SuiteResults
from tritonize.bench.suite.options import Slo, SuiteOptions, parse_slo
from tritonize.bench.suite.run import run_suite
from tritonize.bench.suite.inprocess import expected_tests
from tritonize.bench.suite.slo import judge
from tritonize.bench.suite.sweep import LevelRun, SweepConfig, SweepResult
from tritonize.serving.placement import available_cpus

# Every row meets the latency bound and none the throughput bound: both halves of a verdict show.
LOOSE_SLOS = (parse_slo("p99_ms=1000"), parse_slo("min_throughput=1e9"))


class Recording:
    """A Progress that keeps what it was told: [(stage, total, [messages])]."""

    def __init__(self):
        self.stages = []

    def stage(self, name, total):
        self.stages.append((name, total, []))

    def advance(self, message):
        self.stages[-1][2].append(message)


@pytest.fixture(scope="module")
def tiny_run(artifacts, tmp_path_factory):
    """A user's quick run of the mlp: in-process, three protocols, the SLOs above, no project."""
    root = tmp_path_factory.mktemp("results")
    progress = Recording()
    opts = SuiteOptions(models=["mlp"], artifacts=artifacts, results_root=root, quick=True, grpc_levels=(1, 2),
                        http_levels=(1,), lean_levels=(1,), duration_s=0.3, slos=LOOSE_SLOS)
    folder = run_suite(opts, progress)
    return folder, SuiteResults.read(folder), progress


@pytest.mark.server
def test_a_tiny_suite_run_writes_every_report_file(tiny_run):
    folder, results, _ = tiny_run
    assert folder.name.endswith("-quick")  # beside the day's full report, never over it
    names = {p.name for p in folder.iterdir()}
    assert names == {"results.json", "summary.md", "served_perf_analyzer.csv", "served.png", "inprocess.png",
                     "variants.png"}
    # optimize's variants beside each other, as it recorded them: the pick within FP32 tolerance (no budget)
    mlp = {v.variant: v for v in results.variants if v.model == "mlp"}
    assert set(mlp) == {"fp32", "ort_opt", "int8", "int8_static"} and sum(v.picked for v in mlp.values()) == 1
    picked = next(v for v in mlp.values() if v.picked)
    assert picked.exact and picked.objective == "latency" and picked.agreement_kind == "top-1"
    assert [b for b, _ in picked.p50_ms] == [1, 64]
    summary = (folder / "summary.md").read_text()
    assert "## Optimize's variants: speed and accuracy against FP32" in summary and f"| {picked.variant} * |" in summary
    assert results.machine.cores and results.versions["onnxruntime"] and results.git_commit
    assert results.options.slos == LOOSE_SLOS and results.options.models == ["mlp"]
    assert {"torch_eager", "ort_fp32", "ort_ort_opt", "ort_int8"} <= {r.backend for r in results.inprocess}
    served = results.served
    assert {(r.protocol, r.mode, r.level) for r in served} >= {("grpc", "closed", 1), ("grpc", "closed", 2),
                                                               ("http", "closed", 1), ("http-lean", "closed", 1)}
    assert any(r.mode == "open" for r in served)
    for r in served:
        assert r.errors == 0 and r.ok == r.sent > 0
        assert r.server.requests == r.sent + (5 * r.level if r.mode == "closed" else 0)  # + warm-up
        assert r.server.compute_infer_us > 0
        assert 0 < max(r.cores_busy.values()) <= 1  # the server answered on some core
    if len(available_cpus()) >= 2:
        assert results.placement.startswith("server and clients on CPU")
    assert results.machine.cpuidle.driver
    assert "torch.compile" in " ".join(results.skipped.values())
    if shutil.which("perf_analyzer") is None:  # said, not silently left out
        assert results.skipped["perf_analyzer beside our load generator"].startswith("no perf_analyzer on PATH")
        assert results.perf_analyzer is None
    with open(folder / "served_perf_analyzer.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(PERF_ANALYZER_COLUMNS) <= set(rows[0]) and len(rows) == 4
    summary = (folder / "summary.md").read_text()
    assert "## SLOs" in summary and "## Served" in summary and "## Not run, and why" in summary
    assert f"Placement: {results.placement}." in summary
    assert (folder / "served.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.server
def test_a_users_run_has_no_project_targets_or_studies(tiny_run):
    folder, results, progress = tiny_run
    assert results.project is None
    summary = (folder / "summary.md").read_text()
    for section in ("Project targets", "Host setup", "Scaling with dynamic batching", "do-nothing"):
        assert section not in summary
    assert not any("project" in name for name, _, _ in progress.stages)
    assert not any("mlp_noop" in r.model for r in results.served)


@pytest.mark.server
def test_the_slos_are_judged_on_the_served_rows(tiny_run):
    folder, results, _ = tiny_run
    verdicts = {(v.model, v.protocol): v for v in results.slos}
    assert set(verdicts) == {("mlp", "grpc"), ("mlp", "http"), ("mlp", "http-lean")}
    for (model, protocol), v in verdicts.items():
        closed = [r for r in results.served if (r.model, r.protocol, r.mode) == (model, protocol, "closed")]
        best = max(closed, key=lambda r: r.infer_per_s)  # every row is within 1 s at p99
        assert v.within_latency and v.levels_within_latency == sorted(int(r.level) for r in closed)
        assert (v.level, v.infer_per_s, v.p99_ms) == (best.level, best.infer_per_s, best.p99_ms)
        assert not v.met and v.missed == [f"infer/s {best.infer_per_s:.0f} < 1e+09"]
    summary = (folder / "summary.md").read_text()
    assert "Given: p99 <= 1000 ms, infer/s >= 1e+09." in summary
    grpc = verdicts["mlp", "grpc"]
    assert f"| mlp | grpc | **misses** | {grpc.level} | {grpc.infer_per_s:.0f} |" in summary
    # the same real rows against a bound none of them meets: the closest level, and what it missed
    [tight] = [v for v in judge(results.served, (Slo("p50_ms", 1e-6),)) if v.protocol == "grpc"]
    closest = min((r for r in results.served if r.protocol == "grpc" and r.mode == "closed"), key=lambda r: r.p50_ms)
    assert not tight.met and not tight.within_latency and tight.levels_within_latency == []
    assert tight.level == closest.level and tight.missed == [f"p50 {closest.p50_ms:.3f} ms > 1e-06 ms"]
    # and one that all meet: the best level meets every SLO
    [loose] = [v for v in judge(results.served, (Slo("p90_ms", 1e3), Slo("min_throughput", 1.0)))
               if v.protocol == "http-lean"]
    assert loose.met and loose.missed == []


def test_without_slos_the_report_says_how_to_give_them():
    results = _results(SuiteOptions(models=["mlp"], artifacts=Path("unused")))
    assert judge([], ()) == []
    summary = markdown(results)
    assert "## SLOs\n\nNo SLOs were given" in summary and "`tritonize bench --slo p99_ms=5" in summary


@pytest.mark.server
def test_the_results_read_back_as_they_were_written(tiny_run):
    folder, results, _ = tiny_run
    data = json.loads((folder / "results.json").read_text())
    # NaN (a core whose clock did not tick) is not equal to itself, so the JSON text is compared
    assert json.dumps(SuiteResults.from_json(data).to_json()) == json.dumps(data)
    assert isinstance(results.options.artifacts, Path) and isinstance(results.options.slos[0], Slo)


def test_every_part_of_the_results_survives_the_round_trip(project_records):
    opts = SuiteOptions(models=["mlp", "cnn"], artifacts=Path("a"), slos=(Slo("p99_ms", 2.0),), project=True,
                        sweep_model="cnn", sweep_write_back=Path("repo"))
    config = SweepConfig(max_queue_delay_us=200, instance_count=2, preferred_batch_sizes=[4, 8], max_batch_size=32,
                         served=True, runs=[LevelRun(level=8, throughput_rps=900.0, p50_ms=1.0, p99_ms=3.5, errors=0,
                                                     mean_batch=3.9)], within_budget=True, verdict="winner")
    results = _results(opts, sweep=SweepResult(model="cnn", protocol="http-lean", levels=[8], p99_budget_ms=2.0,
                                               configs=[config], best=config, written_to="repo/cnn/config.pbtxt",
                                               tuning_file="a/tuning.json"),
                       project=ProjectResults(floors=[project_records.floor("split", "default", 0.4, 0.35)],
                                              scaling=[project_records.scaling("grpc", "default", 2000, 6200)]),
                       skipped={"dynamic-batching sweep": "why"})
    results.project.targets = [Target(name="served mlp p50 / do-nothing p50", measured="1.143x", goal="<= 1.10x",
                                      met=False)]
    back = SuiteResults.from_json(json.loads(json.dumps(results.to_json())))
    assert back == results
    assert back.project.floors[0].server["mlp"].compute_infer_us == 60.0 and back.sweep.best == config


def test_a_results_file_with_a_wrong_value_names_where():
    data = _results(SuiteOptions(models=["mlp"], artifacts=Path("a"))).to_json()
    data["machine"]["cores"] = "two"
    with pytest.raises(ValueError, match=r"results.json.machine.cores: Input should be a valid integer, got 'two'"):
        SuiteResults.from_json(data, where="results.json")
    data["machine"]["cores"], data["machine"]["cpus"] = 2, 2
    with pytest.raises(ValueError, match=r"SuiteResults.machine.cpus: Unexpected keyword argument, got 2"):
        SuiteResults.from_json(data)


@pytest.mark.server
def test_each_stage_reports_its_steps(tiny_run):
    _, results, progress = tiny_run
    assert [name for name, _, _ in progress.stages] == ["in-process latency", "served: concurrency sweeps", "report"]
    (_, inprocess, steps), (_, served, runs), _ = progress.stages
    assert inprocess == len(steps) == expected_tests(results.options)  # each row ran or was skipped
    assert served == len(runs) == len(results.served) == 5 and runs[0].startswith("mlp grpc concurrency 1: ")


@pytest.mark.server
def test_the_served_plot_has_one_row_of_panels_per_model_and_draws_the_slos(tiny_run):
    _, results, _ = tiny_run
    closed = [r for r in results.served if r.mode == "closed"]
    bound = max(r.p99_ms for r in closed)  # within the axis: drawn as a line
    fig = served_figure(replace(results, options=replace(results.options, slos=(Slo("p99_ms", bound),))))
    assert [ax.get_title() for ax in fig.axes] == ["mlp: latency", "mlp: throughput"]
    latency, throughput = fig.axes
    assert [tick.get_text() for tick in latency.get_xticklabels()] == ["1", "2"]
    assert any(list(line.get_ydata()) == [bound, bound] for line in latency.get_lines())
    assert not any(list(line.get_ydata()) == [bound, bound] for line in throughput.get_lines())
    colours = {line.get_color() for line in throughput.get_lines()}
    assert len(colours) == 3  # one per protocol
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["grpc", "http", "http-lean", "p50", "p99", f"SLO p99 <= {bound:g} ms"]
    # two models: two rows of two panels, one legend for all
    other = [replace(r, model="cnn") for r in results.served]
    fig = served_figure(replace(results, served=results.served + other))
    assert [ax.get_title() for ax in fig.axes] == ["mlp: latency", "mlp: throughput", "cnn: latency", "cnn: throughput"]
    assert len(fig.legends) == 1
    # in-process: one panel per model, one colour per backend in every panel
    rows = results.inprocess + [replace(r, model="cnn") for r in results.inprocess]
    fig = inprocess_figure(replace(results, inprocess=rows))
    assert [ax.get_title() for ax in fig.axes] == ["mlp", "cnn"]
    backends = {r.backend for r in results.inprocess}
    for ax in fig.axes:
        assert len({bar.get_facecolor() for bar in ax.patches}) == len(backends)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == sorted(backends)


def _results(opts, **kw):
    machine = Machine(host="h", platform="p", cpu="c", cores=2, memory_gb=1.0, gpu="none",
                      cpuidle=IdlePolicy(driver="d", governor="g", states=["POLL (0 us)"]))
    return SuiteResults(started="s", date="d", machine=machine, versions={"torch": "2"}, git_commit="g", options=opts,
                        **kw)


def test_the_project_sections_render_the_project_records(project_records):
    """The report renders a project's results whoever measured them: the records and their sections are
    the report's (bench/report/project.py); the block size is the one the run recorded."""
    opts = SuiteOptions(models=["mlp"], artifacts=Path("a"), project=True)
    floor = project_records.floor
    floors = [floor("split", "default", 0.40, 0.35), replace(floor("none", "default", 0.5, 0.4), block_requests=7)]
    project = ProjectResults(floors=floors, scaling=[project_records.scaling("grpc", "default", 2000, 6200)])
    summary = markdown(_results(opts, project=project))
    assert "## Project targets" in summary and "No target could be judged" in summary
    assert "take turns in blocks of 100 requests" in summary  # the first floor's
    assert "## Scaling with dynamic batching (served cnn, concurrency 1 and 8 taking turns)" in summary
    assert "| split | grpc | 3 | 2000 | 6200 | 4.00 | 3.10x |" in summary
