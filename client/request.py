"""Client-side checks and request building: plain numpy arrays in, tritonclient objects out.

Everything here runs before a byte is sent, from the cached `ModelInfo`, so a request that cannot
succeed fails fast with a message naming the model, the input, what it expects and what it got.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np

from .errors import RequestError
from .model_info import ModelInfo, TensorInfo

Inputs = Union[np.ndarray, Mapping[str, np.ndarray]]
TEXT_KINDS = ("O", "S", "U")  # numpy kinds a BYTES tensor accepts: objects (str/bytes), bytes, str


@dataclass
class Request:
    """A checked request: one array per input in the model's order, and its batch size (0 when the
    model does not batch)."""

    model: ModelInfo
    arrays: dict[str, np.ndarray]
    batch: int
    outputs: tuple[str, ...] | None  # None: every output the model has

    @property
    def nbytes(self) -> int:
        """Bytes of the inputs (BYTES tensors count their object pointers, a rough size)."""
        return sum(a.nbytes for a in self.arrays.values())

    def split(self, rows: int) -> list["Request"]:
        """Chunks of at most `rows` rows, in order (views, no copies)."""
        if not self.batch or self.batch <= rows:
            return [self]
        return [Request(self.model, {n: a[i:i + rows] for n, a in self.arrays.items()}, min(rows, self.batch - i),
                        self.outputs)
                for i in range(0, self.batch, rows)]


def _shape(x: np.ndarray) -> str:
    return f"[{','.join(map(str, x.shape))}]"


def _mismatch(info: ModelInfo, tensor: TensorInfo, x: np.ndarray) -> RequestError:
    problems = []
    if tensor.is_bytes:
        if x.dtype.kind not in TEXT_KINDS:
            problems.append(f"{x.dtype} is not BYTES: pass strings or bytes (dtype object, str or bytes)")
    elif x.dtype != tensor.np_dtype:
        problems.append(f"dtype {x.dtype} is not {tensor.datatype} ({tensor.np_dtype}); convert it with "
                        f".astype(np.{tensor.np_dtype})")
    if x.ndim != len(tensor.shape):
        problems.append(f"{x.ndim} dims where {len(tensor.shape)} are expected")
    else:
        problems += [f"axis {axis} is {x.shape[axis]}, not {size}" for axis, size in tensor.fixed_axes
                     if x.shape[axis] != size]
    return RequestError(f"model {info.name} input '{tensor.name}': expected {info.describe_tensor(tensor)}, "
                        f"got {x.dtype} {_shape(x)} ({'; '.join(problems)})")


def per_row(info: ModelInfo, tensor: TensorInfo, x):
    """A per-row value given as [batch] for an input whose dims are [1] (Triton's form for one value
    per row) is sent as [batch, 1]; anything else is left to check_tensor."""
    if info.batching and isinstance(x, np.ndarray) and x.ndim == 1 and len(tensor.shape) == 2 and tensor.shape[1] == 1:
        return x.reshape(-1, 1)
    return x


def check_tensor(info: ModelInfo, tensor: TensorInfo, x) -> None:
    """Raise a RequestError when `x` does not fit `tensor`: type, dtype, rank, fixed axes."""
    if not isinstance(x, np.ndarray):
        raise RequestError(f"model {info.name} input '{tensor.name}': expected a numpy array "
                           f"{info.describe_tensor(tensor)}, got {type(x).__name__}")
    # The common case is checked with as little work as possible; the message is built on failure.
    shape = x.shape
    if ((x.dtype.kind in TEXT_KINDS) if tensor.is_bytes else (x.dtype == tensor.np_dtype)) \
            and len(shape) == len(tensor.shape) and all(shape[axis] == size for axis, size in tensor.fixed_axes):
        return
    raise _mismatch(info, tensor, x)


def prepare(info: ModelInfo, inputs: Inputs, outputs: Sequence[str] | None = None, *,
            split_batches: bool = True) -> Request:
    """Check `inputs` (a dict name -> array, or a bare array for a one-input model) against the model."""
    if isinstance(inputs, np.ndarray):
        if len(info.inputs) != 1:
            raise RequestError(f"model {info.name} has {len(info.inputs)} inputs ({info.describe_inputs()}): "
                               "pass a dict of input name -> array, not one array")
        tensor = info.inputs[0]
        inputs = per_row(info, tensor, inputs)
        check_tensor(info, tensor, inputs)
        arrays = {tensor.name: inputs}
    elif isinstance(inputs, Mapping):
        arrays = _check_all(info, inputs)
    else:
        raise RequestError(f"model {info.name}: inputs must be a numpy array or a dict of input name -> array, "
                           f"got {type(inputs).__name__}")
    batch = _batch_size(info, arrays, split_batches) if info.batching else 0
    return Request(info, arrays, batch, None if outputs is None else _check_outputs(info, outputs))


def _check_all(info: ModelInfo, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    unknown = [n for n in inputs if n not in info.inputs_by_name]
    if unknown:
        raise RequestError(f"model {info.name} has no input {', '.join(map(repr, unknown))}; "
                           f"its inputs are: {info.describe_inputs()}")
    arrays = {}
    for tensor in info.inputs:
        x = inputs.get(tensor.name)
        if x is None:
            if tensor.optional:
                continue
            raise RequestError(f"model {info.name}: missing input '{tensor.name}' ({info.describe_tensor(tensor)}); "
                               f"given: {', '.join(inputs) or 'nothing'}")
        x = per_row(info, tensor, x)
        check_tensor(info, tensor, x)
        arrays[tensor.name] = x
    return arrays


def _batch_size(info: ModelInfo, arrays: dict[str, np.ndarray], split_batches: bool) -> int:
    batch = -1
    for x in arrays.values():
        if batch == -1:
            batch = x.shape[0]
        elif x.shape[0] != batch:
            raise RequestError(f"model {info.name}: every input needs the same batch size (axis 0), got "
                               + ", ".join(f"{n} {a.shape[0]} rows" for n, a in arrays.items()))
    if batch < 1:
        raise RequestError(f"model {info.name}: batch size must be at least 1, got {max(batch, 0)} rows")
    if batch > info.max_batch_size and not split_batches:
        raise RequestError(f"model {info.name}: batch of {batch} rows exceeds the model's max batch "
                           f"{info.max_batch_size} and batch splitting is off")
    return batch


def _check_outputs(info: ModelInfo, outputs: Sequence[str] | None) -> tuple[str, ...] | None:
    if outputs is None:
        return None
    if isinstance(outputs, str):
        outputs = (outputs,)
    unknown = [n for n in outputs if n not in info.outputs_by_name]
    if unknown:
        raise RequestError(f"model {info.name} has no output {', '.join(map(repr, unknown))}; "
                           f"its outputs are: {info.describe_outputs()}")
    return tuple(outputs)


def wire_array(tensor: TensorInfo, x: np.ndarray) -> np.ndarray:
    """The array as tritonclient can send it: str arrays become object arrays for BYTES."""
    return x.astype(np.object_) if tensor.is_bytes and x.dtype.kind == "U" else x


def build_inputs(module, request: Request) -> list:
    """tritonclient `InferInput`s carrying the data in the request body."""
    tensors = []
    by_name = request.model.inputs_by_name
    for name, x in request.arrays.items():
        tensor = by_name[name]
        infer_input = module.InferInput(name, list(x.shape), tensor.datatype)
        infer_input.set_data_from_numpy(wire_array(tensor, x))
        tensors.append(infer_input)
    return tensors


def build_outputs(module, request: Request) -> list | None:
    if request.outputs is None:
        return None
    return [module.InferRequestedOutput(name) for name in request.outputs]


def read_outputs(result, request: Request) -> dict[str, np.ndarray]:
    """Output name -> array, from a tritonclient `InferResult` (arrays view the response, no copy)."""
    names = request.outputs if request.outputs is not None else request.model.output_names
    return {name: result.as_numpy(name) for name in names}


def concat_outputs(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Chunks' outputs joined along the batch axis, in order."""
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}
