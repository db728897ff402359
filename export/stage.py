"""`tritonize export`: weights + ONNX + checks + parity into one artifact folder per model."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..artifacts import MANIFEST, ONNX_FILE, PARITY_FILE, WEIGHTS_FILE, atomic_dir, model_dir, new_manifest, write_json
from ..models.spec import ModelSpec
from .onnx_export import export_onnx
from .parity import ParityError, check_parity
from .runtime import ort_session, run_ort, run_torch

Step = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def load_module(spec: ModelSpec, folder: Path) -> torch.nn.Module:
    """The spec's module with the weights saved in an artifact folder (the same for every variant)."""
    module = spec.factory()
    module.load_state_dict(load_file(str(Path(folder) / WEIGHTS_FILE)))
    return module.eval()


def export_model(spec: ModelSpec, root: Path, exporter: str = "auto", opset: int | None = None,
                 step: Step = _quiet, rng: np.random.Generator | None = None) -> dict:
    """Export one model into `root/<name>/`; the folder appears only when every check passed."""
    if spec.runtime != "onnx":
        raise ValueError(f"model {spec.name!r} runs on the {spec.runtime!r} runtime and is not exported to ONNX; "
                         f"export {spec.base_model!r} instead")
    module = spec.factory()
    with atomic_dir(model_dir(root, spec), marker=MANIFEST) as tmp:
        step("saving weights")
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp / WEIGHTS_FILE))
        step("exporting to ONNX")
        info = export_onnx(spec, module, tmp / ONNX_FILE, exporter, opset)
        step("checking parity with ONNX Runtime")
        session = ort_session(tmp / ONNX_FILE)
        report = check_parity(spec, lambda x: run_torch(module, spec, x), lambda x: run_ort(session, spec, x),
                              "fp32", rng=rng)
        write_json(tmp / PARITY_FILE, report.to_json())
        if not report.ok:
            raise ParityError(report.failure_message(spec, "ONNX export"))
        manifest = new_manifest(spec, tmp, [WEIGHTS_FILE, ONNX_FILE, PARITY_FILE], export=info,
                                parity={"ok": True, "max_abs_err": report.max_abs_err, "cases": len(report.cases)})
        write_json(tmp / "manifest.json", manifest)
    return manifest
