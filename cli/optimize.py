"""`tritonize optimize`: ONNX Runtime-optimized and INT8 CPU variants of the exported models, each
checked against PyTorch and timed, the fastest passing one picked; TensorRT engines on a GPU."""
from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from ..artifacts import VARIANTS
from .common import CliError, add_artifacts_argument, add_data_argument, add_models_argument, artifact_root
from .common import for_each_model, input_rows_by_model, out
from .common import specs as models


def register(sub) -> None:
    p = sub.add_parser("optimize", help="ORT-optimized and INT8 CPU variants, checked, timed, one picked")
    add_models_argument(p)
    add_artifacts_argument(p, old_out=True)
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--calibration", type=Path, metavar="PATH",
                   help="representative rows for int8_static's activation ranges: an .npz of the model's inputs "
                        "(np.savez, arrays named like the inputs), or a folder of <model>.npz "
                        "(default: the spec's random example inputs)")
    add_data_argument(p, "parity and accuracy (top-1 or cosine) of every variant are judged on")
    p.add_argument("--objective", default="latency", metavar="latency|throughput|latency-budget=MS",
                   help="what the pick optimizes: p50 at batch 1 (latency, the default: a served model at low load "
                        "runs one request at a time), rows/s at the max batch (throughput), or the most rows/s at "
                        "a batch size whose p50 is within MS milliseconds")
    p.add_argument("--accuracy", action="append", default=[], metavar="BUDGET",
                   help="allow a lossy variant (INT8) within this budget, repeatable: top1>=F (classifiers), "
                        "cosine>=F (embeddings) or max_abs<=E, against PyTorch FP32 on --data (default: none; only "
                        "variants within FP32 tolerance are picked)")
    p.add_argument("--accuracy-on-random-rows", action="store_true",
                   help="judge an --accuracy budget on random rows when you have no --data (labelled so in "
                        "choice.json and here)")
    p.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (needs TensorRT and an NVIDIA GPU)")
    p.add_argument("--trt-precision", choices=["fp32", "fp16", "bf16"], default="fp16", help="engine precision (default: %(default)s)")
    p.set_defaults(func=run)


def _calibrations(chosen, path: Path | None, variants: list[str]) -> dict:
    """Each model's calibration rows from `--calibration`; models without a file are calibrated on
    example inputs."""
    if path is not None and "int8_static" not in variants:
        raise CliError(f"--calibration sets the int8_static variant's activation ranges, but --variants leaves it "
                       f"out (got {' '.join(variants)})")
    return input_rows_by_model(chosen, path, "--calibration", "calibration data")


def _threads(profile: dict | None) -> str:
    """The thread profile's column: "2 from 16" or "-" (measured, never paid) or "" (not measured)."""
    if not profile:
        return ""
    return f"{profile['threads']} from {profile['from_rows']}" if profile["from_rows"] else "-"


def variants_table(specs, choices: list[dict]):
    """Every variant of every model; at 80 columns the least telling numbers give way to the name,
    the parity verdict and the speed-up."""
    from rich import box

    from ..export.choice import fp32_exact
    from .tables import Col, FitTable

    table = FitTable(Col("model", key=True), Col("variant", key=True), Col("parity", key=True), Col("err", priority=4),
                     Col("top1/cos", priority=3), Col("b=1", priority=5), Col("b=max", priority=2),
                     Col("vs fp32", key=True), Col("threads", priority=1),
                     title="CPU variants (ONNX Runtime, in-process)", box=box.SIMPLE_HEAD, pad_edge=False,
                     padding=(0, 1), collapse_padding=True,
                     caption="parity: exact (within FP32 tolerance), lossy (within its precision's own), fail; "
                             "err: max abs error vs PyTorch; top1/cos: top-1 agreement (classifiers) or min cosine; "
                             "b=1, b=max: p50 ms at batch 1 and the max batch; vs fp32: under the objective; threads: from which batch size the "
                             "served model runs on more ONNX Runtime threads (-: never, they did not pay); * the pick")
    for spec, choice in zip(specs, choices):
        for name, r in choice["variants"].items():
            if not r.get("built"):
                table.add_row(spec.name, name, "[red]build failed", "", "", "", "", "", "")
                continue
            lat = list(r["latency"].values())
            top1 = (f"{r['top1_agreement']:.3f}" if r["top1_agreement"] is not None
                    else f"{r['min_cosine']:.4f}" if r.get("min_cosine") is not None else "")
            parity = "exact" if fp32_exact(r) else "[yellow]lossy" if r["parity_ok"] else "[red]fail"
            table.add_row(spec.name, name + (" [bold green]*" if name == choice["chosen"] else ""),
                          parity, f"{r['max_abs_err']:.1e}",
                          top1, f"{lat[0]['p50_ms']:.3f}", f"{lat[-1]['p50_ms']:.3f}",
                          f"{choice['speedup_vs_fp32'][name]:.2f}x" if name in choice["speedup_vs_fp32"] else "-",
                          _threads(r.get("threads")))
    return table


def engines_table(specs, engines: list[dict]):
    from .tables import Col, FitTable

    table = FitTable(Col("model", key=True), Col("precision", key=True), Col("TensorRT", priority=1),
                     Col("GPU", priority=2), Col("max |err| vs ORT", key=True), title="TensorRT engines")
    for spec, info in zip(specs, engines):
        table.add_row(spec.name, info["precision"], info["tensorrt"], info["gpu"],
                      f"{info['parity']['max_abs_err']:.2e}")
    return table


def run(args) -> int:
    from ..export.choice import AccuracyBudget, Objective
    from ..export.optimize import check_accuracy_options, optimize_model

    root = artifact_root(args, "optimize")
    specs = models(args.models)
    objective = Objective.parse(args.objective)
    accuracy = tuple(AccuracyBudget.parse(b) for b in args.accuracy)
    calibrations = _calibrations(specs, args.calibration, args.variants)
    data = input_rows_by_model(specs, args.data, "--data", "data")
    for spec in specs:  # every model's options before any model's work
        check_accuracy_options(spec, accuracy, spec.name in data, args.accuracy_on_random_rows)
    if args.tensorrt:
        from ..export.tensorrt import build_engine, require_tensorrt

        require_tensorrt()  # before any work: one clear message when TensorRT or a GPU is missing
    choices = for_each_model(specs, "optimizing", lambda s, step: optimize_model(
        s, root, tuple(args.variants), step, calibration=calibrations.get(s.name), data=data.get(s.name),
        objective=objective, accuracy=accuracy, accuracy_on_random_rows=args.accuracy_on_random_rows))
    out.print(variants_table(specs, choices))
    for spec, choice in zip(specs, choices):
        out.print(f"{spec.name}: {escape(choice['why'])}", highlight=False, soft_wrap=True)
        for name, why in choice["rejected"].items():
            if choice["variants"].get(name, {}).get("built"):  # a failed build is printed below, with its error
                out.print(f"{spec.name}: {name} not picked: {escape(why)}", highlight=False, soft_wrap=True)
        if choice["accuracy"]["lossy_pick"] and choice["accuracy"]["judged_on"] == "random rows":
            out.print(f"{spec.name}: [yellow]{choice['chosen']} is lossy and its accuracy was judged on random rows "
                      f"(--accuracy-on-random-rows), not on your inputs", highlight=False, soft_wrap=True)
        for name, r in choice["variants"].items():
            if not r.get("built"):
                out.print(f"{spec.name}: {name} [red]build failed[/]: {escape(r['error'])}", highlight=False,
                          soft_wrap=True)
        judged = choice["data"]
        if "sha256" in judged:  # the user's rows
            out.print(f"{spec.name}: variants judged on {escape(judged['data'])} ({judged['rows']} rows, SHA-256 "
                      f"{judged['sha256'][:12]}); picked {choice['chosen']}", highlight=False, soft_wrap=True)
        if "calibration" in choice:
            source = choice["calibration"]
            seqs = f", sequence lengths {', '.join(map(str, source['seq_lens']))}" if source["seq_lens"] else ""
            out.print(f"{spec.name}: int8_static calibrated on {escape(source['data'])} ({source['rows']} rows{seqs})",
                      highlight=False, soft_wrap=True)
    if args.tensorrt:
        engines = for_each_model(specs, "TensorRT", lambda s, step: build_engine(s, root, args.trt_precision, step))
        out.print(engines_table(specs, engines))
    return 0
