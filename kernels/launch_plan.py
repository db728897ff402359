"""One kernel launch described before it happens: the plan a launcher builds and then launches.

The launchers (`flash_attention`, `conv2d_relu_maxpool2d`) build a :class:`LaunchPlan` from their
inputs and launch it. The compile check (:mod:`tritonize.kernels.compile_check`) builds the same plan
from tensors of the shapes the project uses and compiles it for a GPU that is not there, so what it
checks is what the launchers really launch: the same arguments, strides, constexprs and, through
Triton's own binder, the same integer and pointer specializations.
"""
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch


@dataclass(frozen=True)
class LaunchPlan:
    """A launch minus the autotuned meta-parameters (the tile sizes, warps and stages)."""

    kernel: Any  # the @triton.autotune'd kernel; kernel.fn is the @triton.jit function
    grid: Callable[[dict], tuple]
    args: tuple  # positional arguments, tensors included
    constexprs: dict  # the launcher's constexpr keyword arguments
    out: torch.Tensor

    def launch(self) -> torch.Tensor:
        if self.out.numel():
            self.kernel[self.grid](*self.args, **self.constexprs)
        return self.out


# The compute capability the autotune prune chooses configs for. A launch on a GPU prunes for that GPU;
# the compile check, which compiles for GPUs that are not here, sets the target it compiles for.
_CHECKED_TARGET: ContextVar[Optional[int]] = ContextVar("tritonize_checked_target", default=None)


def target_capability(tensor: torch.Tensor) -> Optional[int]:
    """The capability (80, 90, ...) a launch on `tensor` runs on: the compile check's target while it
    plans, the tensor's GPU otherwise, None in the CPU interpreter."""
    checked = _CHECKED_TARGET.get()
    if checked is not None:
        return checked
    if tensor.device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(tensor.device)
    return major * 10 + minor


@contextmanager
def planning_for(capability: int):
    """Inside the block, the prune chooses configs for a GPU of this capability (the compile check)."""
    token = _CHECKED_TARGET.set(capability)
    try:
        yield
    finally:
        _CHECKED_TARGET.reset(token)
