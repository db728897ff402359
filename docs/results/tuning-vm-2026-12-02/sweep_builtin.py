import sys, time, json
from pathlib import Path
from tritonize.models import get_spec
from tritonize.model_repository.writer import build_repository
from tritonize.serving.server import TritonServer
from tritonize.bench.suite.sweep import batching_sweep, SweepGrid, DEFAULT_GRID
from tritonize.bench.report.report import sweep_section
models = sys.argv[1].split(",")
quick = len(sys.argv) > 2 and sys.argv[2] == "quick"
grid = SweepGrid(max_queue_delay_us=(0,), instance_count=(1,), preferred_batch_sizes=((), (4,)), max_batch_size=(64,), levels=(1, 8), finalists=1) if quick else DEFAULT_GRID
specs = [get_spec(m) for m in models]
repo = Path(f"/tmp/sw/repo-{'-'.join(models)}")
build_repository(specs, Path("/tmp/sw/art"), repo, "cpu")
with TritonServer(repo, models) as server:
    for spec in specs:
        t = time.time()
        r = batching_sweep(server, repo, spec, duration_s=0.5 if quick else 2.0, grid=grid, p99_budget_ms=300.0 if spec.name == "minilm" else 20.0,
                           measured=lambda c, run: print(f"  {c.settings()} c{run.level} {run.throughput_rps:.0f} p99 {run.p99_ms:.2f} mb {run.mean_batch:.2f}", flush=True))
        print("\n\n".join(sweep_section(r)))
        print(f"{spec.name}: {time.time()-t:.0f} s")
        Path(f"/tmp/sw/sweep-{spec.name}.json").write_text(json.dumps(r.to_json(), indent=1))
