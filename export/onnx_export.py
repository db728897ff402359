"""PyTorch -> ONNX with the spec's dynamic axes, then the ONNX checker and shape inference."""
from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch.export import Dim

from ..models.spec import ModelSpec

EXPORTERS = ("auto", "dynamo", "legacy")
ONNX_DTYPES = {"float32": onnx.TensorProto.FLOAT, "float16": onnx.TensorProto.FLOAT16,
               "int64": onnx.TensorProto.INT64, "int32": onnx.TensorProto.INT32, "bool": onnx.TensorProto.BOOL}


# The dynamo exporter logs one warning per torchvision op it cannot register; torchvision is not used.
logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)


class ExportError(RuntimeError):
    pass


def tracing_inputs(spec: ModelSpec) -> tuple[torch.Tensor, ...]:
    # Batch 2 and a sequence length > 1: the dynamo exporter specialises axes of size 0 or 1.
    seq = max(spec.seq_lens) if spec.has_seq else None
    example = spec.example_inputs(2, seq, np.random.default_rng(0))
    return tuple(torch.from_numpy(example[name]) for name in spec.input_names)


def _dynamic_shapes(spec: ModelSpec) -> dict:
    dims: dict[str, Dim] = {}
    for t in spec.inputs:
        for axis_name in t.dynamic_axes.values():
            if axis_name not in dims:
                upper = spec.max_seq_len if axis_name != "batch" else 4096
                dims[axis_name] = Dim(axis_name, min=1, max=max(upper, 2))
    return {t.name: {i: dims[a] for i, a in t.dynamic_axes.items()} for t in spec.inputs}


def _export_dynamo(spec: ModelSpec, module: torch.nn.Module, path: Path, opset: int | None) -> None:
    program = torch.onnx.export(
        module, tracing_inputs(spec), dynamo=True, dynamic_shapes=_dynamic_shapes(spec),
        input_names=spec.input_names, output_names=spec.output_names, opset_version=opset,
        optimize=True, verbose=False,
    )
    program.save(str(path), external_data=False)


def _export_legacy(spec: ModelSpec, module: torch.nn.Module, path: Path, opset: int | None) -> None:
    dynamic_axes = {t.name: t.dynamic_axes for t in spec.inputs + spec.outputs if t.dynamic_axes}
    torch.onnx.export(
        module, tracing_inputs(spec), str(path), dynamo=False, input_names=spec.input_names,
        output_names=spec.output_names, dynamic_axes=dynamic_axes, opset_version=opset or 17,
    )


def export_onnx(spec: ModelSpec, module: torch.nn.Module, path: Path, exporter: str = "auto",
                opset: int | None = None) -> dict:
    """Export `module` to `path`; returns what was used. `auto` tries dynamo, then the legacy exporter."""
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    order = ["dynamo", "legacy"] if exporter == "auto" else [exporter]
    errors = {}
    for name in order:
        try:
            # The exporters print progress and deprecation chatter; keep it for the error message only.
            log = io.StringIO()
            with warnings.catch_warnings(), contextlib.redirect_stdout(log):
                warnings.simplefilter("ignore")
                (_export_dynamo if name == "dynamo" else _export_legacy)(spec, module, path, opset)
            check_onnx(spec, path)
            info = {"exporter": name, "opset": onnx_opset(path)}
            if errors:
                info["fallback_from"] = errors
            return info
        except Exception as e:  # noqa: BLE001 - each exporter fails in its own way; report all of them
            errors[name] = _why(e)
    raise ExportError(f"model {spec.reference!r}: ONNX export failed: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))


def _why(error: BaseException) -> str:
    """The first line of the innermost cause: where the operator or Python construct that could not be
    exported is named (the outer dynamo errors only say which step failed, with terminal colours)."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def onnx_opset(path: Path) -> int:
    model = onnx.load(str(path), load_external_data=False)
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def check_onnx(spec: ModelSpec, path: Path) -> None:
    """Full ONNX check and strict shape inference (saved into the file), then the graph's inputs and
    outputs against the spec: names, dtypes, and a symbolic dimension on every dynamic axis."""
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), check_type=True, strict_mode=True)
    onnx.save(model, str(path))
    graph_io = {v.name: v for v in list(model.graph.input) + list(model.graph.output)}
    for t in spec.inputs + spec.outputs:
        v = graph_io.get(t.name)
        if v is None:
            raise ExportError(f"model {spec.name!r}: the ONNX graph has no tensor {t.name!r} (graph has {sorted(graph_io)})")
        tt = v.type.tensor_type
        if tt.elem_type != ONNX_DTYPES[t.dtype]:
            raise ExportError(f"model {spec.name!r}: ONNX tensor {t.name!r} has element type "
                              f"{onnx.TensorProto.DataType.Name(tt.elem_type)}, expected {t.dtype}")
        dims = tt.shape.dim
        if len(dims) != len(t.shape):
            raise ExportError(f"model {spec.name!r}: ONNX tensor {t.name!r} has rank {len(dims)}, expected {len(t.shape)}")
        for i, axis in enumerate(t.shape):
            if isinstance(axis, str) and dims[i].HasField("dim_value"):
                raise ExportError(f"model {spec.name!r}: ONNX tensor {t.name!r} axis {i} ({axis}) was fixed to "
                                  f"{dims[i].dim_value}; expected a dynamic axis")
