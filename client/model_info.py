"""What a served model accepts and returns, read from the server (not from tritonize's registry).

`ModelInfo.from_server` combines the model's metadata (names, datatypes, shapes as the client sends
them) with its config (max batch size, optional inputs), so the client works with any Triton model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tritonclient.utils import triton_to_np_dtype

BYTES = "BYTES"


@dataclass(frozen=True)
class TensorInfo:
    """One input or output. `shape` is the full shape a request carries, batch axis first when the
    model batches; -1 marks an axis of any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    optional: bool = False
    np_dtype: np.dtype | None = field(init=False, compare=False)
    # (axis, size) for every axis of fixed size: what validation checks per call.
    fixed_axes: tuple[tuple[int, int], ...] = field(init=False, compare=False)
    is_bytes: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        np_type = triton_to_np_dtype(self.datatype)
        object.__setattr__(self, "np_dtype", None if np_type is None else np.dtype(np_type))
        object.__setattr__(self, "fixed_axes", tuple((i, d) for i, d in enumerate(self.shape) if d >= 0))
        object.__setattr__(self, "is_bytes", self.datatype == BYTES)

    def describe(self) -> str:
        """`FP32 [-1,3,24,24]`: the datatype and shape as Triton reports them."""
        return f"{self.datatype} [{','.join(map(str, self.shape))}]"

    def fixed_nbytes(self, batch: int) -> int | None:
        """Bytes of this tensor for `batch` rows (batch 0: a model that does not batch) when every
        other axis is fixed and the type is numeric, else None: such an output's size is only known
        once the server has produced it."""
        dims = self.shape[1:] if batch else self.shape
        if self.is_bytes or self.np_dtype is None or any(d < 0 for d in dims):
            return None
        return max(batch, 1) * int(np.prod(dims, dtype=np.int64)) * self.np_dtype.itemsize


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    max_batch_size: int  # 0: the model does not batch, shapes are taken as they are
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    inputs_by_name: dict[str, TensorInfo] = field(init=False, compare=False, repr=False)
    outputs_by_name: dict[str, TensorInfo] = field(init=False, compare=False, repr=False)
    input_names: tuple[str, ...] = field(init=False, compare=False, repr=False)
    output_names: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs_by_name", {t.name: t for t in self.inputs})
        object.__setattr__(self, "outputs_by_name", {t.name: t for t in self.outputs})
        object.__setattr__(self, "input_names", tuple(t.name for t in self.inputs))
        object.__setattr__(self, "output_names", tuple(t.name for t in self.outputs))

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    def describe_tensor(self, tensor: TensorInfo) -> str:
        """`FP32 [-1,3,24,24] (max batch 64)`."""
        return tensor.describe() + (f" (max batch {self.max_batch_size})" if self.batching else "")

    def describe_inputs(self) -> str:
        return ", ".join(f"{t.name} {t.describe()}" + (" optional" if t.optional else "") for t in self.inputs)

    def describe_outputs(self) -> str:
        return ", ".join(f"{t.name} {t.describe()}" for t in self.outputs)

    @classmethod
    def from_server(cls, metadata, config) -> "ModelInfo":
        """From tritonclient's `get_model_metadata()` and `get_model_config().config` messages."""
        optional = {i.name for i in config.input if getattr(i, "optional", False)}

        def tensors(items, flagged=frozenset()):
            return tuple(TensorInfo(t.name, t.datatype, tuple(int(d) for d in t.shape), t.name in flagged)
                         for t in items)

        return cls(name=metadata.name, version=metadata.versions[-1] if metadata.versions else "",
                   max_batch_size=int(config.max_batch_size), inputs=tensors(metadata.inputs, optional),
                   outputs=tensors(metadata.outputs))
