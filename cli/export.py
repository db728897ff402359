"""`tritonize export`: PyTorch -> ONNX with dynamic axes, checked against PyTorch."""
from __future__ import annotations

from pathlib import Path

from .common import add_artifacts_argument, add_data_argument, add_models_argument, artifact_root, for_each_model
from .common import input_rows_by_model, out, specs


def register(sub) -> None:
    p = sub.add_parser("export", help="PyTorch -> ONNX with dynamic axes, checked against PyTorch")
    add_models_argument(p)
    add_artifacts_argument(p, old_out=True)
    p.add_argument("--exporter", choices=["auto", "dynamo", "legacy"], default="auto",
                   help="torch.onnx exporter; auto tries dynamo, then legacy (default: %(default)s)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    add_data_argument(p, "parity with PyTorch is judged on besides random inputs")
    p.set_defaults(func=run)


def export_table(exported: list, root: Path):
    from .tables import Col, FitTable

    table = FitTable(Col("model", key=True), Col("exporter", priority=1), Col("opset"),
                     Col("max |err| vs PyTorch", key=True), Col("cases", priority=2), title=f"ONNX export -> {root}")
    for artifacts in exported:  # model_artifacts.ModelArtifacts
        export = artifacts.manifest.export
        table.add_row(artifacts.spec.name, export.exporter, str(export.opset), f"{export.max_abs_err:.2e}",
                      str(export.cases))
    return table


def run(args) -> int:
    from ..export.stage import export_model

    root = artifact_root(args, "export")
    chosen = specs(args.models)
    data = input_rows_by_model(chosen, args.data, "--data", "data")
    exported = for_each_model(chosen, "exporting", lambda s, step: export_model(s, root, args.exporter, args.opset,
                                                                                  step, data=data.get(s.name)))
    out.print(export_table(exported, root))
    return 0
