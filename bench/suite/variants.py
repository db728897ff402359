"""Optimize's variants side by side in the benchmark's report (#34): each one's speed and accuracy against
FP32, what optimize picked and why, read from the artifacts optimize recorded (it measured them; the
benchmark does not measure them again)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...artifacts import ArtifactError
from ...export.choice import fp32_exact
from ...model_artifacts import ModelArtifacts
from ...models import get_spec
from ..record import Record


@dataclass
class VariantRow(Record):
    model: str
    variant: str
    picked: bool
    exact: bool  # within the spec's FP32 tolerance of PyTorch: pickable without an accuracy budget
    max_abs_err: float  # against PyTorch FP32
    agreement: float | None  # top-1 agreement (classifiers) or the lowest cosine (embeddings)
    agreement_kind: str  # "top-1", "cosine" or "" (neither measured)
    p50_ms: list[tuple[int, float]]  # (batch size, p50 ms) ascending: in-process ONNX Runtime, as optimize timed it
    vs_fp32: float | None  # under the objective: >1 is better than FP32; None where optimize gave none
    objective: str  # what optimize's pick optimized ("" from an optimize before objectives)
    judged_on: str  # the rows accuracy was judged on


def variant_rows(models: list[str], root: Path) -> tuple[list[VariantRow], dict[str, str]]:
    """Every built variant of each ONNX model under `root`, and what could not be read, and why."""
    rows, skipped = [], {}
    for name in models:
        spec = get_spec(name)
        if spec.runtime != "onnx":
            continue
        try:
            optimize = ModelArtifacts.load(root, spec).manifest.optimize
        except ArtifactError as e:
            skipped[f"variants of {spec.name}"] = e.problem
            continue
        if optimize is None:
            skipped[f"variants of {spec.name}"] = f"not optimized (run `tritonize optimize {spec.reference}`)"
            continue
        raw = optimize.raw
        judged_on = raw.get("data", {}).get("data", "random example inputs")
        for variant, report in optimize.variants.items():
            if not report.built:
                continue
            r = report.raw
            top1, cosine = r.get("top1_agreement"), r.get("min_cosine")
            rows.append(VariantRow(
                model=spec.name, variant=variant, picked=variant == optimize.chosen,
                exact=fp32_exact(r),
                max_abs_err=float(r["max_abs_err"]), agreement=top1 if top1 is not None else cosine,
                agreement_kind="top-1" if top1 is not None else "cosine" if cosine is not None else "",
                p50_ms=sorted((int(k[len("batch"):]), float(v["p50_ms"])) for k, v in r["latency"].items()),
                vs_fp32=raw.get("speedup_vs_fp32", {}).get(variant), objective=raw.get("objective", {}).get("name", ""),
                judged_on=judged_on))
    return rows, skipped
