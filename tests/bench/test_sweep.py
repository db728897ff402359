"""The dynamic-batching sweep on the real server: every config of the grid is loaded and measured at
the top level and for a lone client, the finalists side by side at every level, a config that makes a
lone client wait is refused however well it batches, the served config is put back, and write-back
lands the winner."""
import dataclasses
import shutil

import pytest
import tritonclient.grpc as grpcclient

from tritonize.bench.load.served import LEAN_HTTP
from tritonize.bench.suite.sweep import BatchingSettings, SweepGrid, batching_sweep, grid_size, write_back
from tritonize.model_repository.config import parse_pbtxt
from tritonize.model_repository.writer import build_repository
from tritonize.models import get_spec

pytestmark = pytest.mark.server

# A 3 ms window with no preferred sizes holds every lone request for the whole window.
GRID = SweepGrid(max_queue_delay_us=(0, 3000), instance_count=(1,), preferred_batch_sizes=((),),
                 max_batch_size=(64,), levels=(1, 2), finalists=2, rounds=1)


@pytest.fixture(scope="module")
def mlp_server(artifacts, tmp_path_factory):
    from tritonize.serving.server import TritonServer

    repo = tmp_path_factory.mktemp("sweep") / "model_repository"
    spec = get_spec("mlp")  # served with a preferred size the grid below does not try, whatever the defaults
    build_repository([dataclasses.replace(spec, serving=dataclasses.replace(spec.serving, preferred_batch_sizes=(4,)))],
                     artifacts, repo, "cpu")
    with TritonServer(repo, ["mlp"]) as server:
        yield server, repo


def _served_batching(server):
    config = grpcclient.InferenceServerClient(server.grpc_url).get_model_config("mlp").config
    return (config.dynamic_batching.max_queue_delay_microseconds, list(config.dynamic_batching.preferred_batch_size),
            config.max_batch_size)


def test_the_grid_leaves_out_what_the_model_cannot_take():
    served = BatchingSettings(0, 1, (8, 32), 32)
    grid = SweepGrid(max_queue_delay_us=(0,), instance_count=(1,), preferred_batch_sizes=((), (8, 32)),
                     max_batch_size=(16, 32, 64), levels=(1, 8), finalists=1, rounds=1)
    # The served config first and once; no max batch above the served one, no preferred size above a max batch.
    assert grid.settings(served) == [served, BatchingSettings(0, 1, (), 16), BatchingSettings(0, 1, (), 32)]
    with pytest.raises(ValueError, match=r"the sweep's instance_count expects integers >= 1, got \(0,\)"):
        SweepGrid(instance_count=(0,))
    with pytest.raises(ValueError, match="finalists, rounds and max_groups expect at least 1, got 3, 0 and 2"):
        SweepGrid(rounds=0)
    with pytest.raises(ValueError, match="preferred_batch_sizes expects a tuple of integers"):
        BatchingSettings(0, 1, (128,), 64)


def test_a_config_that_makes_a_lone_client_wait_loses_and_the_served_config_is_put_back(mlp_server):
    server, repo = mlp_server
    before = _served_batching(server)
    measured = []
    result = batching_sweep(server, repo, get_spec("mlp"), duration_s=0.4, grid=GRID, protocol=LEAN_HTTP,
                            measured=lambda c, r: measured.append((c.max_queue_delay_us, r.level)))
    served, no_wait, window = result.configs
    assert served.served and (no_wait.max_queue_delay_us, window.max_queue_delay_us) == (0, 3000)
    # Phase 1: each config at the top level, then at 1 client; phase 2: the finalists level by level.
    assert measured == [(0, 2), (0, 1), (0, 2), (0, 1), (3000, 2), (3000, 1), (0, 1), (0, 1), (0, 2), (0, 2)]
    assert len(measured) <= grid_size(GRID, BatchingSettings(0, 1, (4,), 64))
    assert len(served.runs) == len(no_wait.runs) == 4 and len(window.runs) == 2
    # A lone client waits out the window: about 3 ms a request, against well under 1 ms without it.
    assert window.throughput_at(1) < 0.5 * served.throughput_at(1)
    assert window.verdict.startswith("not a finalist: c1:") and "under 75% of the served config's" in window.verdict
    assert all(r.errors == 0 for c in result.configs for r in c.runs)
    assert result.best is not None and result.best.max_queue_delay_us == 0 and result.best.verdict == "winner"
    assert result.protocol == LEAN_HTTP and result.levels == [1, 2]
    assert _served_batching(server) == before  # the repository's config is served again


def test_a_budget_nothing_meets_picks_nothing(mlp_server):
    server, repo = mlp_server
    grid = SweepGrid(max_queue_delay_us=(0,), instance_count=(1,), preferred_batch_sizes=((),), max_batch_size=(64,),
                     levels=(1,), finalists=1, rounds=1)
    result = batching_sweep(server, repo, get_spec("mlp"), duration_s=0.2, grid=grid, p99_budget_ms=1e-6,
                            protocol=LEAN_HTTP)
    assert result.best is None and not any(c.within_budget for c in result.configs)
    assert result.baseline.verdict.startswith("c1: 0 failed, p99")


def test_write_back_puts_the_best_settings_in_the_config(mlp_server, tmp_path):
    _, repo = mlp_server
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    path = write_back(copy, "mlp", BatchingSettings(max_queue_delay_us=300, instance_count=2, preferred_batch_sizes=(4, 8),
                                                    max_batch_size=16))
    config = parse_pbtxt(path.read_text())
    assert config.dynamic_batching.max_queue_delay_microseconds == 300 and config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8] and config.instance_group[0].count == 2
    assert config.name == "mlp" and [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


def test_the_suite_records_the_winner_for_repo_tune_and_writes_it_back(mlp_server, artifacts, tmp_path):
    from tritonize.bench.report.provenance import IdlePolicy, Machine
    from tritonize.bench.report.results import SuiteResults
    from tritonize.bench.suite.served_runs import sweep
    from tritonize.bench.suite.options import SuiteOptions
    from tritonize.model_repository.tuning import read_tunings

    server, repo = mlp_server
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy)
    root = tmp_path / "artifacts"  # the tuning file goes beside the models' folders
    opts = SuiteOptions(models=["mlp"], artifacts=root, sweep_model="mlp", sweep_write_back=copy, duration_s=0.3)
    machine = Machine(host="h", platform="p", cpu="c", cores=2, memory_gb=1.0, gpu="none",
                      cpuidle=IdlePolicy(driver="d", governor="g", states=[]))
    results = SuiteResults(started="s", date="d", machine=machine, versions={}, git_commit="g", options=opts)
    messages = []

    class Progress:
        def stage(self, name, total):
            messages.append(name)

        def advance(self, message):
            messages.append(message)

    sweep(server, repo, opts, Progress(), results, grid=dataclasses.replace(GRID, levels=(1,), finalists=1))
    best = results.sweep.best
    assert best is not None and results.sweep.tuning_file == str(root / "tuning.json")
    [tuning] = read_tunings(root / "tuning.json").values()
    assert tuning.model == "mlp" and tuning.settings == best.settings()
    assert tuning.measured.startswith(f"concurrency 1 over {results.sweep.protocol}; p99 budget 20 ms; ")
    config = parse_pbtxt((copy / "mlp" / "config.pbtxt").read_text())
    assert config.dynamic_batching.max_queue_delay_microseconds == best.max_queue_delay_us
    assert messages[0] == "dynamic-batching sweep of mlp" and messages[1].startswith("c1: delay ")
