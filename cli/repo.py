"""`tritonize repo`: a Triton model repository (config.pbtxt and versioned files) from the artifacts."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..artifacts import DEFAULT_REPOSITORY, DEFAULT_ROOT
from .common import CliError, console, out
from .common import specs as models


def register(sub) -> None:
    p = sub.add_parser("repo", help="a Triton model repository (config.pbtxt + versioned files) from the artifacts")
    p.add_argument("models", nargs="*", metavar="MODEL", help="models (default: all, kernel models included)")
    p.add_argument("--target", choices=["cpu", "gpu"], default="cpu",
                   help="cpu: Python backend + ONNX Runtime (what the bundled server runs); gpu: NVIDIA's container")
    p.add_argument("--artifacts", type=Path, default=DEFAULT_ROOT, help="artifact root (default: %(default)s)")
    p.add_argument("--out", type=Path, default=DEFAULT_REPOSITORY, help="repository folder (default: %(default)s)")
    p.add_argument("--variant", action="append", metavar="MODEL=VARIANT",
                   help="serve this ONNX variant instead of optimize's pick (e.g. minilm=fp32)")
    p.add_argument("--tune", nargs="?", type=Path, const=True, metavar="FILE",
                   help="use the batching settings the sweep measured (`tritonize bench --sweep MODEL`) for the "
                        "models it tuned (default FILE: <artifacts>/tuning.json)")
    p.add_argument("--queue-policy", action="store_true",
                   help="bound each model's queue and drop requests that waited past their deadline (off by "
                        "default: on the bundled Triton 2.51 a queue policy turns off the batcher's prefetch, "
                        "and some requests then stall ~0.5 s; see docs/design.md)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..artifacts import TUNING_FILE
    from ..model_repository.tuning import read_tunings
    from ..model_repository.writer import build_repository
    from .tables import Col, FitTable

    specs = models(args.models, runtime=None)
    if args.queue_policy:
        specs = [dataclasses.replace(s, serving=dataclasses.replace(s.serving, queue_policy=True)) for s in specs]
    tunings = {}
    if args.tune is not None:
        tunings = read_tunings(args.artifacts / TUNING_FILE if args.tune is True else args.tune)
        if not any(s.name in tunings for s in specs):
            raise CliError(f"--tune: the tuning file has no model of this repository (it tuned "
                           f"{', '.join(sorted(tunings)) or 'none'}; this repository holds "
                           f"{', '.join(s.name for s in specs)})")
    overrides = {}
    for item in args.variant or []:
        model, sep, variant = item.partition("=")
        if not sep:
            raise CliError(f"--variant takes MODEL=VARIANT (e.g. minilm=fp32), got {item!r}")
        overrides[model] = variant
    with console.status(f"building the {args.target} repository"):
        index = build_repository(specs, args.artifacts, args.out, args.target, variants=overrides, tunings=tunings)
    table = FitTable(Col("model", key=True), Col("runner", priority=1), Col("variant", key=True),
                     Col("batching", priority=2), title=f"Triton model repository ({args.target}) -> {args.out}")
    for name, info in index["models"].items():
        table.add_row(name, info["runner"], info["variant"], "tuned" if "tuning" in info else "spec")
    out.print(table)
    return 0
