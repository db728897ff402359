"""The `tritonize` command line: one subcommand per stage, and `run` to chain them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tritonize.artifacts import DEFAULT_ROOT
from tritonize.models import UnknownModelError, get_spec, model_names

console = Console(stderr=True)
out = Console()


class CliError(Exception):
    """An error the user can fix; printed without a traceback, exit code 2."""


def _specs(names: list[str], runtime: str | None = "onnx"):
    return [get_spec(n) for n in (names or model_names(runtime))]


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[model]:<12}"), BarColumn(),
                    TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=False)


def for_each_model(specs, title: str, work: Callable) -> list:
    """Run `work(spec, step)` per model under a progress bar; `step(msg)` updates the bar's text."""
    results = []
    with _progress() as progress:
        for spec in specs:
            task = progress.add_task(title, total=None, model=spec.name)
            results.append(work(spec, lambda msg, t=task: progress.update(t, description=msg)))
            progress.update(task, description="[green]done", total=1, completed=1)
    return results


def cmd_export(args) -> int:
    from tritonize.export.stage import export_model

    specs = _specs(args.models)
    manifests = for_each_model(specs, "exporting", lambda s, step: export_model(s, args.out, args.exporter, args.opset, step))
    table = Table("model", "exporter", "opset", "max |err| vs PyTorch", "cases", title=f"ONNX export -> {args.out}")
    for m in manifests:
        table.add_row(m["model"], m["export"]["exporter"], str(m["export"]["opset"]),
                      f"{m['parity']['max_abs_err']:.2e}", str(m["parity"]["cases"]))
    out.print(table)
    return 0


def cmd_optimize(args) -> int:
    from tritonize.export.optimize import optimize_model

    specs = _specs(args.models)
    choices = for_each_model(specs, "optimizing", lambda s, step: optimize_model(s, args.out, tuple(args.variants), step))
    table = Table("model", "variant", "parity", "max |err|", "top-1", "p50 batch 1 (ms)", "p50 max batch (ms)",
                  "speed-up", title="CPU variants (ONNX Runtime, in-process)")
    for spec, choice in zip(specs, choices):
        for name, r in choice["variants"].items():
            if not r.get("built"):
                table.add_row(spec.name, name, "[red]build failed", r["error"][:60], "", "", "", "")
                continue
            lat = list(r["latency"].values())
            mark = " [bold green]<- chosen" if name == choice["chosen"] else ""
            top1 = "" if r["top1_agreement"] is None else f"{r['top1_agreement']:.3f}"
            table.add_row(spec.name, name + mark, "ok" if r["parity_ok"] else "[red]fail", f"{r['max_abs_err']:.2e}",
                          top1, f"{lat[0]['p50_ms']:.3f}", f"{lat[-1]['p50_ms']:.3f}",
                          f"{choice['speedup_vs_fp32'].get(name, float('nan')):.2f}x")
    out.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritonize", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_models(p, help_text="models (default: all exportable)"):
        p.add_argument("models", nargs="*", metavar="MODEL", help=help_text)
        p.add_argument("--out", type=Path, default=DEFAULT_ROOT, help="artifact root (default: %(default)s)")
        return p

    p = with_models(sub.add_parser("export", help="PyTorch -> ONNX with dynamic axes, checked against PyTorch"))
    p.add_argument("--exporter", choices=["auto", "dynamo", "legacy"], default="auto",
                   help="torch.onnx exporter; auto tries dynamo, then legacy (default: %(default)s)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.set_defaults(func=cmd_export)

    from tritonize.export.optimize import VARIANTS

    p = with_models(sub.add_parser("optimize", help="ORT-optimized and INT8 CPU variants, checked, timed, one picked"))
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.set_defaults(func=cmd_optimize)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tritonize.artifacts import ArtifactError
    from tritonize.export.onnx_export import ExportError
    from tritonize.export.parity import ParityError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UnknownModelError, ArtifactError, ExportError, ParityError, CliError, ValueError) as e:
        console.print(f"[bold red]error:[/] {e}", soft_wrap=True, highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
