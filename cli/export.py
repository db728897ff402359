"""`tritonize export`: PyTorch -> ONNX with dynamic axes, checked against PyTorch."""
from __future__ import annotations

from pathlib import Path

from ..artifacts import DEFAULT_ROOT
from .common import add_data_argument, add_models_argument, for_each_model, input_rows_by_model, out, specs


def register(sub) -> None:
    p = sub.add_parser("export", help="PyTorch -> ONNX with dynamic axes, checked against PyTorch")
    add_models_argument(p)
    p.add_argument("--out", type=Path, default=DEFAULT_ROOT, help="artifact root (default: %(default)s)")
    p.add_argument("--exporter", choices=["auto", "dynamo", "legacy"], default="auto",
                   help="torch.onnx exporter; auto tries dynamo, then legacy (default: %(default)s)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    add_data_argument(p, "parity with PyTorch is judged on besides random inputs")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from ..export.stage import export_model

    chosen = specs(args.models)
    data = input_rows_by_model(chosen, args.data, "--data", "data")
    manifests = for_each_model(chosen, "exporting", lambda s, step: export_model(s, args.out, args.exporter, args.opset,
                                                                                   step, data=data.get(s.name)))
    table = Table("model", "exporter", "opset", "max |err| vs PyTorch", "cases", title=f"ONNX export -> {args.out}")
    for m in manifests:
        table.add_row(m["model"], m["export"]["exporter"], str(m["export"]["opset"]),
                      f"{m['parity']['max_abs_err']:.2e}", str(m["parity"]["cases"]))
    out.print(table)
    return 0
