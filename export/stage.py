"""`tritonize export`: weights + ONNX + checks + parity into one artifact folder per model."""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..artifacts import MANIFEST, ONNX_FILE, PARITY_FILE, WEIGHTS_FILE, atomic_dir, model_dir, write_json
from ..model_artifacts import ModelArtifacts, new_manifest
from ..models.spec import ModelSpec
from ..models.weights import load_weights
from .input_rows import InputRows
from .onnx_export import ExportError, export_onnx
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


def build_module(spec: ModelSpec) -> torch.nn.Module:
    """`spec.factory()` in eval mode, or an ExportError that names the model and what went wrong."""
    try:
        module = spec.factory()
    except Exception as e:  # noqa: BLE001 - the user's factory: say which and why, whatever it raised
        raise ExportError(f"model {spec.reference!r}: its factory raised {type(e).__name__}: {e}") from e
    if not isinstance(module, torch.nn.Module):
        raise ExportError(f"model {spec.reference!r}: its factory returned a {type(module).__name__}, expected a torch.nn.Module")
    if spec.weights is not None:
        load_weights(module, Path(spec.weights), repr(spec.reference))
    return module.eval()


def check_outputs(spec: ModelSpec, module: torch.nn.Module) -> None:
    """Run the module once on example inputs; its outputs must match the spec's in count, rank and dtype
    (an ONNX graph exported from a mismatch would be served under the wrong names or shapes)."""
    x = spec.example_inputs(2, spec.default_seq(), np.random.default_rng(0))
    try:
        with torch.inference_mode():
            out = module(*(torch.from_numpy(x[name]) for name in spec.input_names))
    except Exception as e:  # noqa: BLE001 - the user's forward: say which and why
        raise ExportError(f"model {spec.reference!r}: forward() on example inputs ({spec.describe_inputs()}) raised "
                          f"{type(e).__name__}: {e}") from e
    outs = out if isinstance(out, (tuple, list)) else (out,)
    if len(outs) != len(spec.outputs) or not all(isinstance(o, torch.Tensor) for o in outs):
        got = ", ".join(type(o).__name__ if not isinstance(o, torch.Tensor) else f"tensor {list(o.shape)}" for o in outs)
        raise ExportError(f"model {spec.reference!r}: the spec expects {len(spec.outputs)} outputs ({spec.describe_outputs()}); forward() "
                          f"returned {len(outs)} ({got})")
    for t, o in zip(spec.outputs, outs):
        dtype = str(o.dtype).removeprefix("torch.")
        if o.dim() != len(t.shape) or dtype != t.dtype:
            raise ExportError(f"model {spec.reference!r}: output {t.name!r} is {t.dtype} with {len(t.shape)} dims "
                              f"[{','.join(map(str, t.shape))}] in the spec; forward() returned {dtype} "
                              f"{list(o.shape)}")


def _save_weights(module, path: Path) -> None:
    """safetensors reports a failed write as its own error with the OS's words in it; as an OSError (with
    ENOSPC where the disk is full) it reaches the user as one line, like every other failed write."""
    from safetensors import SafetensorError

    try:
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    except SafetensorError as e:
        full = "No space left" in str(e) or "os error 28" in str(e)
        raise OSError(errno.ENOSPC if full else errno.EIO, f"{'No space left on device' if full else e}",
                      str(path)) from None


def export_model(spec: ModelSpec, root: Path, exporter: str = "auto", opset: int | None = None,
                 step: Step = _quiet, rng: np.random.Generator | None = None,
                 data: InputRows | None = None) -> ModelArtifacts:
    """Export one model into `root/<name>/`; the folder appears only when every check passed.
    `data`: the user's rows, which parity is judged on as well as the random cases. Returns the new
    folder's artifacts: this command wrote and hashed them, so the stages after it need not read them again."""
    if spec.runtime != "onnx":
        raise ValueError(f"model {spec.name!r} runs on the {spec.runtime!r} runtime and is not exported to ONNX; "
                         f"export {spec.base_model!r} instead")
    with atomic_dir(model_dir(root, spec), marker=MANIFEST) as tmp:  # refuses a folder tritonize did not write
        module = build_module(spec)
        step("checking the outputs against the spec")
        check_outputs(spec, module)
        step("saving weights")
        _save_weights(module, tmp / WEIGHTS_FILE)
        step("exporting to ONNX")
        info = export_onnx(spec, module, tmp / ONNX_FILE, exporter, opset)
        step("checking parity with ONNX Runtime")
        session = ort_session(tmp / ONNX_FILE)
        torch_run, ort_run = (lambda x: run_torch(module, spec, x)), (lambda x: run_ort(session, spec, x))
        report = check_parity(spec, torch_run, ort_run, "fp32", rng=rng)
        if data is not None:  # the user's rows too, as cases of the same report
            report.cases += check_parity(spec, torch_run, ort_run, "fp32", batches=data.batches).cases
        write_json(tmp / PARITY_FILE, {**report.to_json(), "data": data.source if data else None})
        if not report.ok:
            raise ParityError(report.failure_message(spec, "ONNX export"))
        manifest = new_manifest(spec, tmp, [WEIGHTS_FILE, ONNX_FILE, PARITY_FILE], export=info,
                                parity={"ok": True, "max_abs_err": report.max_abs_err, "cases": len(report.cases),
                                        "data": data.source if data else None})
        write_json(tmp / MANIFEST, manifest.to_json())
    return ModelArtifacts(root, spec, manifest)
