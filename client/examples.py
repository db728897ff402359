"""Valid random requests for any served model, from its metadata (or tritonize's registry).

A model tritonize knows gets `get_spec(name).example_inputs(...)`, which knows the value ranges
(token ids below the vocabulary size, masks with at least one real token). Any other model gets
values guessed from its metadata: standard normal floats, ones for masks and booleans, small
non-negative integers for ids and other integers, short strings for BYTES.
"""
from __future__ import annotations

import numpy as np

from .model_info import ModelInfo, TensorInfo

DEFAULT_SEQ = 16  # the size of a variable axis when none is given
ID_WORDS = ("id", "token", "index", "label")
SMALL_INT_BOUND = 100


def random_inputs(info: ModelInfo, batch: int = 1, seq: int | None = None,
                  rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """One array per input of `info`: `batch` rows (when the model batches), `seq` for other -1 axes."""
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    if seq is not None and seq < 1:
        raise ValueError(f"seq must be at least 1, got {seq}")
    if seq is not None and not any(_has_variable_axis(info, t) for t in info.inputs):
        shapes = ", ".join(f"{t.name} {list(t.shape)}" for t in info.inputs)
        raise ValueError(f"seq {seq} given, but model {info.name} has no variable axis besides the batch to set "
                         f"({shapes})")
    rng = rng if rng is not None else np.random.default_rng()
    from_registry = _registry_inputs(info, batch, seq, rng)
    if from_registry is not None:
        return from_registry
    return {t.name: _random_tensor(t, _concrete_shape(info, t, batch, seq), rng) for t in info.inputs if not t.optional}


def _registry_inputs(info: ModelInfo, batch: int, seq: int | None, rng) -> dict[str, np.ndarray] | None:
    """The registry's example when it names this model with the same inputs as the server reports."""
    from ..models import registry

    spec = registry.REGISTRY.get(info.name)
    if spec is None:
        return None
    served = [(t.name, t.datatype) for t in info.inputs]
    known = [(t.name, t.wire_dtype) for t in spec.inputs]
    if served != known:
        return None
    return spec.example_inputs(batch, seq, rng)


def _has_variable_axis(info: ModelInfo, tensor: TensorInfo) -> bool:
    return any(d < 0 for d in tensor.shape[1 if info.batching else 0:])


def _concrete_shape(info: ModelInfo, tensor: TensorInfo, batch: int, seq: int | None) -> tuple[int, ...]:
    shape = list(tensor.shape)
    start = 0
    if info.batching:
        shape[0] = batch
        start = 1
    for axis in range(start, len(shape)):
        if shape[axis] < 0:
            shape[axis] = seq or DEFAULT_SEQ
    return tuple(shape)


def _random_tensor(tensor: TensorInfo, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    name = tensor.name.lower()
    if tensor.is_bytes:
        words = np.array(["hello", "triton", "world", "tritonize"], dtype=np.object_)
        return rng.choice(words, size=shape)
    dtype = tensor.np_dtype
    if dtype is None:
        raise ValueError(f"cannot make random data for input '{tensor.name}' of type {tensor.datatype}")
    if dtype.kind == "b" or "mask" in name:
        return np.ones(shape, dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        bound = SMALL_INT_BOUND if any(w in name for w in ID_WORDS) else 10
        return rng.integers(0, bound, size=shape).astype(dtype)
    raise ValueError(f"cannot make random data for input '{tensor.name}' of type {tensor.datatype}")
