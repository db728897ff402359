"""`tritonize optimize --tensorrt`: TensorRT engines from the exported ONNX, through Polygraphy.

Optimization profiles come from the model description (batch 1 .. max batch, sequence 1 .. max
sequence length, the optimum at a typical serving shape); precision flags from the requested
precision; a timing cache is kept next to the artifacts so rebuilds are fast. Each engine is checked
against ONNX Runtime (the FP32 export) at the profile's min/opt/max shapes and written atomically as
`artifacts/<model>/tensorrt/<precision>/model.plan` with `engine.json` beside it: TensorRT version
and GPU, since an engine only runs where it was built.

Everything up to the build itself (profiles, configs, tolerances, the repository entries) runs
without TensorRT; building and running engines needs TensorRT and an NVIDIA GPU, and says so.
"""
from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import (
    ENGINE_FILE,
    ENGINE_INFO,
    ONNX_FILE,
    TENSORRT_TIMING_CACHE,
    model_dir,
    write_json,
)
from ..model_artifacts import ModelArtifacts
from ..models.spec import BATCH, SEQ, ModelSpec
from .parity import ParityError, check_parity
from .runtime import ort_session, run_ort

PRECISIONS = ("fp32", "fp16", "bf16")
INSTALL_HINT = (
    "TensorRT is needed for this step: install it on a machine with an NVIDIA GPU with "
    "`pip install tensorrt` (the wheels download their libraries from NVIDIA's package index, "
    "pypi.nvidia.com), or run inside NVIDIA's TensorRT or Triton container "
    "(nvcr.io/nvidia/tensorrt:<yy.mm>-py3, nvcr.io/nvidia/tritonserver:<yy.mm>-py3)"
)


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a GPU is missing; the message says what and how to get it."""


def tensorrt_problem() -> str | None:
    """Why engines cannot be built here, or None when TensorRT and a CUDA GPU are present."""
    try:
        trt = importlib.import_module("tensorrt")
        version = trt.__version__
    except (ImportError, OSError, AttributeError) as e:
        # The PyPI stubs install a `tensorrt` package whose libraries never arrived: that fails here too.
        return f"TensorRT is not installed or incomplete ({type(e).__name__}: {e})"
    import torch

    if not torch.cuda.is_available():
        return f"TensorRT {version} is installed but no CUDA GPU is visible"
    return None


def require_tensorrt() -> None:
    problem = tensorrt_problem()
    if problem:
        raise TensorRTUnavailable(f"{problem}. {INSTALL_HINT}")


def _axis_sizes(spec: ModelSpec, axis: str) -> tuple[int, int, int]:
    """(min, opt, max) of a dynamic axis: the optimum is where serving spends its time."""
    if axis == BATCH:
        top = spec.serving.max_batch_size
        preferred = [b for b in spec.serving.preferred_batch_sizes if b <= top]
        return 1, max(preferred) if preferred else max(1, top // 2), top
    if axis == SEQ:
        return 1, spec.default_seq(), spec.max_seq_len
    raise ValueError(f"model {spec.name!r}: no profile rule for dynamic axis {axis!r}")


def profile_shapes(spec: ModelSpec) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """Input name -> (min shape, opt shape, max shape) for one TensorRT optimization profile."""
    out = {}
    for t in spec.inputs:
        shapes = [[], [], []]
        for axis in t.shape:
            sizes = _axis_sizes(spec, axis) if isinstance(axis, str) else (axis, axis, axis)
            for i in range(3):
                shapes[i].append(sizes[i])
        out[t.name] = tuple(tuple(s) for s in shapes)
    return out


def polygraphy_profile(spec: ModelSpec):
    from polygraphy.backend.trt import Profile

    profile = Profile()
    for name, (lo, opt, hi) in profile_shapes(spec).items():
        profile.add(name, min=lo, opt=opt, max=hi)
    return profile


def create_config(spec: ModelSpec, precision: str, timing_cache: Path | None = None):
    """Polygraphy's builder config (lazy: nothing touches TensorRT until the build)."""
    from polygraphy.backend.trt import CreateConfig

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    cache = str(timing_cache) if timing_cache and Path(timing_cache).exists() else None
    return CreateConfig(fp16=precision == "fp16", bf16=precision == "bf16", tf32=False,
                        profiles=[polygraphy_profile(spec)], load_timing_cache=cache)


def parity_shapes(spec: ModelSpec) -> list[tuple[int, int | None]]:
    """(batch, seq) at the profile's min, opt and max."""
    batch = _axis_sizes(spec, BATCH)
    seq = _axis_sizes(spec, SEQ) if spec.has_seq else (None, None, None)
    return list(dict.fromkeys(zip(batch, seq)))


def engine_dir(root: Path, spec: ModelSpec, precision: str) -> Path:
    return model_dir(root, spec) / "tensorrt" / precision


def build_engine(spec: ModelSpec, root: Path, precision: str = "fp16", step: Callable[[str], None] = lambda _: None,
                 rng: np.random.Generator | None = None) -> dict:
    """Build, check and save one engine; returns what `engine.json` records."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    require_tensorrt()
    import tensorrt as trt
    import torch
    from polygraphy.backend.trt import EngineFromNetwork, NetworkFromOnnxPath, TrtRunner, save_engine

    artifacts = ModelArtifacts.load(root, spec, ignore_under=f"tensorrt/{precision}")
    folder = artifacts.folder
    out_dir = engine_dir(root, spec, precision)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = folder / TENSORRT_TIMING_CACHE  # unlisted in the manifest: see artifacts.UNLISTED
    step(f"building a {precision} TensorRT engine")
    build = EngineFromNetwork(NetworkFromOnnxPath(str(folder / ONNX_FILE)),
                              config=create_config(spec, precision, cache), save_timing_cache=str(cache))
    engine = build()
    step("checking the engine against ONNX Runtime")
    session = ort_session(folder / ONNX_FILE)
    with TrtRunner(engine) as runner:
        report = check_parity(spec, lambda x: run_ort(session, spec, x),
                              lambda x: {k: np.asarray(v) for k, v in runner.infer(x).items()},
                              precision, cases=parity_shapes(spec), rng=rng)
    if not report.ok:
        raise ParityError(report.failure_message(spec, f"TensorRT {precision} engine"))
    tmp = out_dir / f".{ENGINE_FILE}.tmp"
    save_engine(engine, str(tmp))
    os.replace(tmp, out_dir / ENGINE_FILE)
    gpu = torch.cuda.get_device_properties(0)
    info = {"precision": precision, "tensorrt": trt.__version__, "gpu": gpu.name,
            "compute_capability": f"{gpu.major}.{gpu.minor}", "profile": {k: [list(s) for s in v]
                                                                          for k, v in profile_shapes(spec).items()},
            "parity": report.to_json()}
    write_json(out_dir / ENGINE_INFO, info)
    rel = f"tensorrt/{precision}"
    artifacts.record([f"{rel}/{ENGINE_FILE}", f"{rel}/{ENGINE_INFO}"], replace_under=rel,
                     tensorrt={**artifacts.manifest.tensorrt, precision: info})
    return info


def built_engine(artifacts: ModelArtifacts,
                 prefer: tuple[str, ...] = ("fp16", "bf16", "fp32")) -> tuple[str, Path] | None:
    """The engine the repository should serve (the first precision of `prefer` that was built)."""
    for precision in prefer:
        if precision in artifacts.manifest.tensorrt:
            return precision, engine_dir(artifacts.root, artifacts.spec, precision) / ENGINE_FILE
    return None


def engine_info(path: Path) -> dict:
    return json.loads((Path(path).parent / ENGINE_INFO).read_text())
