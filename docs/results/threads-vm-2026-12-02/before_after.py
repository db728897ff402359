"""Large batches on more ONNX Runtime threads (#26), against the defaults before it: one thread at
every batch size (the same specs with large_batch_threads=1, so `tritonize repo` passes no threshold).
Every built-in ONNX model, its optimize pick, both servers up at once, wrk, c1/c8/c32, taking turns
(the order reversed every other round); medians, and the median of the per-round ratios.

    python before_after.py ARTIFACTS ROUNDS OUT_DIR
"""
import dataclasses
import json
import statistics
import sys
from pathlib import Path

from tritonize.bench.load.served import WRK_HTTP
from tritonize.studies.turns import servers_in_turns
from tritonize.model_repository.writer import build_repository
from tritonize.models import get_spec
from tritonize.serving.server import TritonServer

models = ["mlp", "cnn", "lstm", "transformer", "minilm"]
artifacts, rounds, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
after = [get_spec(m) for m in models]
before = [dataclasses.replace(s, serving=dataclasses.replace(s.serving, large_batch_threads=1)) for s in after]
work = out / "repositories"
index_before = build_repository(before, artifacts, work / "before", "cpu")
index_after = build_repository(after, artifacts, work / "after", "cpu")
servers = {"before": TritonServer(work / "before", models).start(), "after": TritonServer(work / "after", models).start()}
try:
    served = servers_in_turns(servers, models, (1, 8, 32), rounds, 2.0, WRK_HTTP, lambda line: print(line, flush=True))
    rows = {key: [(r.throughput_rps, r.p50_ms, r.server.mean_batch, r.errors) for r in runs]
            for key, runs in served.items()}
finally:
    for s in servers.values():
        s.stop()
lines = ["| model (variant; large batches) | clients | before req/s (mean batch) | after req/s (mean batch) | "
         "after / before | before p50 ms | after p50 ms |", "|---|---:|---:|---:|---:|---:|---:|"]
report = []
for m in models:
    info = index_after["models"][m]
    for level in (1, 8, 32):
        b, a = rows[(m, level, "before")], rows[(m, level, "after")]
        ratio = statistics.median(x[0] / y[0] for x, y in zip(a, b))
        med = lambda v, i: statistics.median(x[i] for x in v)  # noqa: E731
        lines.append(f"| {m} ({info['variant']}; {info.get('large_batches', 'one thread')}) | {level} | "
                     f"{med(b, 0):.0f} ({med(b, 2):.1f}) | {med(a, 0):.0f} ({med(a, 2):.1f}) | {ratio:.2f} | "
                     f"{med(b, 1):.3f} | {med(a, 1):.3f} |")
        report.append(dict(model=m, level=level, before=b, after=a, ratio_median=ratio))
print("\n".join(lines))
(out / "before_after.json").write_text(json.dumps(report, indent=1) + "\n")
(out / "before_after_table.md").write_text("\n".join(lines) + "\n")
