"""Throughput with 1 and with N replicas of a model on this machine, side by side, with each core's busy share.

    python -m tritonize.studies.replicas --repository build/model_repository --model mlp --out docs/results/X

More replicas add throughput only where a resource is left over: on a host whose cores are all busy with
one replica (server threads, model stubs and the load generator sharing them), a second replica shares the
same cores and cannot scale; the busy shares beside each row say which case a run is. The rounds alternate
(1, N, 1, N, ...; bench/rounds.py), so drift of a shared machine falls on both alike. A client of tritonize's own
(`TritonClient`, round-robin over the replicas) sends the load, from `concurrency` threads.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..artifacts import write_json
from ..bench import rounds as alternating
from ..bench.load.host_cpu import busy_fractions, core_times
from ..bench.load.loadgen import closed_loop
from ..client import TritonClient
from ..serving.replicas import Replicas


@dataclass(frozen=True)
class ReplicaRun:
    replicas: int
    round: int
    concurrency: int
    sent: int
    errors: int
    throughput_rps: float
    p50_ms: float
    p99_ms: float
    cores_busy: dict[str, float]  # cpuN -> fraction of the run not idle


def measure(repository: str, model: str, replicas: int, round_: int, concurrency: int, duration_s: float,
            inputs: dict[str, np.ndarray]) -> ReplicaRun:
    with Replicas(repository, replicas, [model], health_interval_s=0) as running:
        client = TritonClient([e.grpc for e in running.endpoints()], timeout_s=30.0)
        try:
            def make_sender():
                return lambda: client.infer(model, inputs)

            closed_loop(make_sender, concurrency, min(2.0, duration_s), 10**7)  # warm every replica
            before = core_times()
            result = closed_loop(make_sender, concurrency, duration_s, 10**7)
            busy = busy_fractions(before, core_times())
        finally:
            client.close()
    summary = result.summary()
    return ReplicaRun(replicas, round_, concurrency, summary.sent, summary.errors, summary.throughput_rps,
                      summary.p50_ms, summary.p99_ms, {k: round(v, 3) for k, v in busy.items()})


def markdown(runs: list[ReplicaRun], model: str) -> str:
    lines = [f"# {model}: 1 replica against more, side by side", "",
             "| replicas | round | concurrency | sent | errors | req/s | p50 ms | p99 ms | cores busy |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        busy = " / ".join(f"{v:.0%}" for v in r.cores_busy.values())
        lines.append(f"| {r.replicas} | {r.round} | {r.concurrency} | {r.sent} | {r.errors} | {r.throughput_rps:.0f} "
                     f"| {r.p50_ms:.3f} | {r.p99_ms:.3f} | {busy} |")
    by_count: dict[int, list[float]] = {}
    for r in runs:
        by_count.setdefault(r.replicas, []).append(r.throughput_rps)
    base = float(np.median(by_count[1]))
    lines += ["", "Median throughput over the rounds, relative to one replica: " + ", ".join(
        f"{n}: {np.median(v) / base:.2f}x" for n, v in sorted(by_count.items())) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tritonize.studies.replicas", description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", required=True, help="a repository folder or s3://BUCKET/PREFIX")
    p.add_argument("--model", default="mlp")
    p.add_argument("--replicas", type=int, default=2, help="compared with 1 (default: %(default)s)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", type=Path, required=True, help="folder for replicas.json and replicas.md")
    args = p.parse_args(argv)
    if args.replicas < 2 or args.rounds < 1:
        p.error(f"expected --replicas >= 2 and --rounds >= 1, got {args.replicas} and {args.rounds}")
    from ..models import get_spec

    inputs = get_spec(args.model).example_inputs(1, None, np.random.default_rng(0))
    runs = []
    for round_, counts in alternating.rounds((1, args.replicas), count=args.rounds):
        for count in counts:
            runs.append(measure(args.repository, args.model, count, round_, args.concurrency, args.duration, inputs))
            print(json.dumps(asdict(runs[-1])), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "replicas.json", {"model": args.model, "runs": [asdict(r) for r in runs]})
    text = markdown(runs, args.model)
    tmp = args.out / ".replicas.md.tmp"
    tmp.write_text(text)
    tmp.replace(args.out / "replicas.md")  # never a half-written report
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
