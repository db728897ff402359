"""Running a model in-process: PyTorch eager and ONNX Runtime, both from and to dicts of numpy arrays."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from ..models.spec import ModelSpec


def ort_session(path: Path, threads: int = 0, spin: bool = True) -> ort.InferenceSession:
    """A CPU session. `threads=0` lets ORT choose; serving uses few threads and no spin-waiting, so
    the server, its other instances and the client do not fight for the same cores."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_ort(session: ort.InferenceSession, spec: ModelSpec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    outputs = session.run(spec.output_names, {name: inputs[name] for name in spec.input_names})
    return dict(zip(spec.output_names, outputs))


def run_torch(module: torch.nn.Module, spec: ModelSpec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.inference_mode():
        out = module(*(torch.from_numpy(inputs[name]) for name in spec.input_names))
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return {name: o.detach().float().cpu().numpy() for name, o in zip(spec.output_names, outs)}
