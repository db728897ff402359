"""Old defaults (memory bound on; mlp and cnn with preferred sizes (8, 32)) against the new ones, every
built-in ONNX model, side by side in turns, wrk, c1/c8/c32."""
import dataclasses, json, statistics, sys
from pathlib import Path
from tritonize.models import get_spec
from tritonize.model_repository.writer import build_repository
from tritonize.serving.server import TritonServer
from tritonize.bench.load.served import WRK_HTTP
from tritonize.studies.turns import servers_in_turns
models = ["mlp", "cnn", "lstm", "transformer", "minilm"]
rounds = int(sys.argv[1])
new = [get_spec(m) for m in models]
old = [dataclasses.replace(s, serving=dataclasses.replace(s.serving, preferred_batch_sizes=(8, 32))) if s.name in ("mlp", "cnn") else s for s in new]
art = Path("/tmp/sw/art")
build_repository(old, art, Path("/tmp/ba/old"), "cpu")
build_repository(new, art, Path("/tmp/ba/new"), "cpu")
servers = {"before": TritonServer(Path("/tmp/ba/old"), models, memory_bound=True).start(),
           "after": TritonServer(Path("/tmp/ba/new"), models).start()}
try:  # the turns loop now lives in studies/turns.py (servers_in_turns); same order, same runs
    served = servers_in_turns(servers, models, (1, 8, 32), rounds, 2.0, WRK_HTTP, lambda line: print(line, flush=True))
    rows = {key: [(r.throughput_rps, r.p50_ms, r.server.mean_batch, r.errors) for r in runs]
            for key, runs in served.items()}
finally:
    for s in servers.values(): s.stop()
out = []
print("| model | clients | before req/s (mean batch) | after req/s (mean batch) | after / before | before p50 ms | after p50 ms |")
print("|---|---:|---:|---:|---:|---:|---:|")
for m in models:
    for level in (1, 8, 32):
        b, a = rows[(m, level, "before")], rows[(m, level, "after")]
        ratios = [x[0] / y[0] for x, y in zip(a, b)]
        med = lambda v, i: statistics.median(x[i] for x in v)
        print(f"| {m} | {level} | {med(b,0):.0f} ({med(b,2):.1f}) | {med(a,0):.0f} ({med(a,2):.1f}) | {statistics.median(ratios):.2f} | {med(b,1):.3f} | {med(a,1):.3f} |")
        out.append(dict(model=m, level=level, before=b, after=a, ratio_median=statistics.median(ratios)))
Path("/tmp/ba/before_after.json").write_text(json.dumps(out, indent=1))
