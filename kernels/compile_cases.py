"""The launches the compile check compiles: each kernel at the specializations its callers really use.

A Triton kernel is compiled once per specialization: its dtypes, its constexprs (head dim, causal,
padding mask, kernel size...) and which integer arguments are divisible by 16. Each case below builds
its launch with the kernel's own launcher code (``_plan``) from tensors shaped like a real caller's, so
strides and sequence lengths specialize as they do in serving. The kernels cannot import the models
(the import contract), so the built-in models' shapes are written here, each named after its model.

Cases marked ``in_ci`` form the representative subset the CI gate compiles (tests/kernels/
test_compile_check.py): flash attention under the most register and shared-memory pressure (16-bit,
the largest head dim, both masks: HGMMA on sm_90a), and the shapes two built-in kernel models serve in
fp32 (minilm_flash's attention, cnn_fused's second conv).
"""
from dataclasses import dataclass
from typing import Callable

import torch

from . import conv_relu_pool, flash_attention
from .launch_plan import LaunchPlan

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class Case:
    kernel: str  # "flash_attention" or "conv_relu_pool"
    name: str
    dtype: str  # a key of DTYPES
    build: Callable[[str], LaunchPlan]  # device -> the launch
    in_ci: bool = False

    @property
    def key(self) -> str:
        return f"{self.kernel}/{self.name}"

    @property
    def expects_tensor_cores(self) -> bool:
        """16-bit dots run on tensor cores. fp32 ones do not: the launchers ask tl.dot for IEEE fp32
        (torch's default, allow_tf32 off), which Triton computes with FMA instructions."""
        return self.dtype != "fp32"


def _attention(dtype: str, head_dim: int, *, batch=2, heads=8, seq=512, causal=False, mask=False,
               fused_qkv=False) -> Callable[[str], LaunchPlan]:
    def build(device: str) -> LaunchPlan:
        dt = DTYPES[dtype]
        if fused_qkv:
            # q, k, v as views of one [B, S, 3, H, D] projection, as nets.SelfAttention passes them.
            qkv = torch.randn(batch, seq, 3, heads, head_dim, dtype=dt, device=device).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            q, k, v = (torch.randn(batch, heads, seq, head_dim, dtype=dt, device=device) for _ in range(3))
        keep = torch.ones(batch, seq, dtype=torch.bool, device=device) if mask else None
        return flash_attention._plan(q, k, v, causal=causal, key_padding_mask=keep)

    return build


def _minilm_attention(device: str) -> LaunchPlan:
    # transformers hands the hook [B, H, S, D] views of a [B, S, H, D] projection: 12 heads of 32.
    batch, seq, heads, head_dim = 8, 128, 12, 32
    q, k, v = (torch.randn(batch, seq, heads, head_dim, device=device).transpose(1, 2) for _ in range(3))
    keep = torch.ones(batch, seq, dtype=torch.bool, device=device)
    return flash_attention._plan(q, k, v, sm_scale=head_dim ** -0.5, key_padding_mask=keep)


def _conv(dtype: str, c_in: int, c_out: int, size: int, batch: int = 8) -> Callable[[str], LaunchPlan]:
    def build(device: str) -> LaunchPlan:
        x, weight, bias = (torch.randn(*shape, dtype=DTYPES[dtype], device=device)
                           for shape in ((batch, c_in, size, size), (c_out, c_in, 3, 3), (c_out,)))
        return conv_relu_pool._plan(x, weight, bias, 1)

    return build


CASES = [
    Case("flash_attention", "fp16 d16", "fp16", _attention("fp16", 16)),
    Case("flash_attention", "fp16 d32", "fp16", _attention("fp16", 32)),
    Case("flash_attention", "fp16 d64", "fp16", _attention("fp16", 64)),
    Case("flash_attention", "fp16 d128", "fp16", _attention("fp16", 128)),
    Case("flash_attention", "bf16 d64", "bf16", _attention("bf16", 64)),
    Case("flash_attention", "fp32 d64", "fp32", _attention("fp32", 64)),
    Case("flash_attention", "fp32 d128", "fp32", _attention("fp32", 128)),
    Case("flash_attention", "fp16 d64 causal", "fp16", _attention("fp16", 64, causal=True)),
    Case("flash_attention", "fp16 d64 padding mask", "fp16", _attention("fp16", 64, mask=True)),
    Case("flash_attention", "bf16 d128 causal + padding mask", "bf16",
         _attention("bf16", 128, causal=True, mask=True), in_ci=True),
    Case("flash_attention", "transformer_flash: fp32 d16 fused qkv + padding mask", "fp32",
         _attention("fp32", 16, batch=8, heads=4, seq=128, mask=True, fused_qkv=True)),
    Case("flash_attention", "minilm_flash: fp32 d32 + padding mask", "fp32", _minilm_attention, in_ci=True),
    Case("conv_relu_pool", "cnn_fused conv1: fp32 3->32 24x24", "fp32", _conv("fp32", 3, 32, 24)),
    Case("conv_relu_pool", "cnn_fused conv2: fp32 32->64 12x12", "fp32", _conv("fp32", 32, 64, 12), in_ci=True),
    Case("conv_relu_pool", "cnn conv2: fp16 32->64 12x12", "fp16", _conv("fp16", 32, 64, 12)),
    Case("conv_relu_pool", "resnet layer1: fp16 64->64 56x56", "fp16", _conv("fp16", 64, 64, 56)),
    Case("conv_relu_pool", "resnet layer3: bf16 256->256 14x14", "bf16", _conv("bf16", 256, 256, 14)),
]


def case_named(key: str) -> Case:
    for case in CASES:
        if case.key == key:
            return case
    raise ValueError(f"no compile case {key!r}: expected one of {', '.join(c.key for c in CASES)}")
