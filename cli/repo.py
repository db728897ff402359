"""`tritonize repo`: a Triton model repository (config.pbtxt and versioned files) from the artifacts."""
from __future__ import annotations

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
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from ..model_repository.writer import build_repository

    specs = models(args.models, runtime=None)
    overrides = {}
    for item in args.variant or []:
        model, sep, variant = item.partition("=")
        if not sep:
            raise CliError(f"--variant takes MODEL=VARIANT (e.g. minilm=fp32), got {item!r}")
        overrides[model] = variant
    with console.status(f"building the {args.target} repository"):
        index = build_repository(specs, args.artifacts, args.out, args.target, variants=overrides)
    table = Table("model", "runner", "variant", title=f"Triton model repository ({args.target}) -> {args.out}")
    for name, info in index["models"].items():
        table.add_row(name, info["runner"], info["variant"])
    out.print(table)
    return 0
