"""Fused conv2d -> bias -> ReLU -> max_pool2d(2) as one Triton kernel.

Algorithm (implicit GEMM). A stride-1 KxK convolution is a matrix product
``out[m, co] = sum_k A[m, k] * Wt[k, co]`` with ``k = (ci, kh, kw)`` running over
``K_TOTAL = Cin*K*K`` and ``A`` the im2col matrix of the input. ``A`` is never built: each
``BLOCK_K`` slice of it is gathered straight from the NCHW input with masked loads, the masks
giving the zero padding for free. The weight ``[Cout, Cin, K, K]`` read as ``[Cout, K_TOTAL]``
supplies ``Wt``. Every slice goes through ``tl.dot`` (tensor cores on a GPU) into fp32
accumulators, whatever the input dtype.

Fusing the pool. Rows of the GEMM are *pooled* output pixels, flattened over
``(image, pooled row, pooled col)``. Each pooled pixel covers four conv outputs (the 2x2 window
at ``(2*ph + dy, 2*pw + dx)``), so a program keeps four accumulators, one per window position,
fed by four gathers of the same im2col slice shifted by ``dy*W + dx`` and one shared weight tile.
After the K loop the program adds the bias to the four, takes their max and applies ReLU
(``relu(max(a + b)) == max(relu(a + b))``), casts to the output dtype and stores only the pooled
tile. Both maxes propagate NaN, so NaN and +-inf come out where the PyTorch chain gives them.
The conv output lives in registers and never reaches memory: the kernel reads x and the weight
and writes a quarter of the conv output.

Tiling and grid. Program ``(pid_m, pid_n)`` owns ``BLOCK_M`` pooled pixels x ``BLOCK_N`` output
channels; the grid is ``(cdiv(N*H_out*W_out, BLOCK_M), cdiv(Cout, BLOCK_N))``. Pool is 2x2,
stride 2, floor mode, so ``H_out = (H + 2*padding - K + 1) // 2`` and every window lies inside
the conv output. Block sizes are autotuned on a GPU; Triton's CPU interpreter
(``TRITON_INTERPRET=1``) gets one large config, since its cost grows with programs x ops.

Inputs are made contiguous (NCHW) before the launch; non-contiguous inputs are copied.
"""
import os
from typing import Optional

import torch
import triton
import triton.language as tl

from .launch_plan import LaunchPlan

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# The autotune lists, from the compile check (python -P -m tritonize.kernels.compile_sweep; the table is
# docs/results/compile-check-2026-12-07/compile_check.md): each compiles for sm_80 and sm_90a with no
# register spills for the dtypes it is kept for. The four accumulators and the im2col gathers (int64
# pointers and masks per window) hold many registers: every config of the earlier list spilled on both
# GPUs in every dtype, from 176 B (64 x 32 x 32, fp16, sm_90a) to 46 KB (128 x 64 x 32, fp32, sm_90a).
_CONFIGS_16BIT = [(64, 32, 16, 4, 2), (32, 64, 32, 4, 2), (64, 64, 32, 8, 2)]  # BLOCK_M, N, K, warps, stages
# fp32 dots (IEEE, on FMA units) keep their operand tiles in registers: only these two fit in every dtype.
_CONFIGS_ANY = [(32, 32, 16, 4, 2), (64, 64, 16, 8, 1)]


def _configs():
    if _INTERPRET:  # one config (autotuning needs a GPU), large blocks: few, wide numpy ops
        return [triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 64}, num_warps=4, num_stages=1)]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk}, num_warps=w, num_stages=s)
        for bm, bn, bk, w, s in _CONFIGS_16BIT + _CONFIGS_ANY
    ]


def _prune_configs(configs, named_args, **kwargs):
    """fp32 launches keep the configs that fit in fp32; 16-bit ones keep them all."""
    if _INTERPRET or named_args["x_ptr"].dtype != torch.float32:
        return configs
    return [c for c in configs if (c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.kwargs["BLOCK_K"], c.num_warps,
                                   c.num_stages) in _CONFIGS_ANY] or configs


@triton.jit
def _window_dot(acc, x_ptrs, ih, iw, mask, H, W, w,
                DY: tl.constexpr, DX: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    # im2col slice for window position (DY, DX): the (0, 0) slice shifted by DY rows, DX cols.
    ih = ih + DY
    iw = iw + DX
    inside = mask & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    a = tl.load(x_ptrs + DY * W + DX, mask=inside, other=0.0)
    if UPCAST:
        a = a.to(tl.float32)
    return tl.dot(a, w, acc=acc, input_precision=PRECISION)


@triton.autotune(configs=_configs(), key=["M", "C_OUT", "K_TOTAL"],
                 prune_configs_by={"early_config_prune": _prune_configs})
@triton.jit
def _conv_relu_pool_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr,
    M, C_IN, H, W, C_OUT, HP, WP, K_TOTAL,
    KS: tl.constexpr, PAD: tl.constexpr, HAS_BIAS: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # flat (image, pooled row, pooled col)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # output channel
    m_mask = offs_m < M
    n_mask = offs_n < C_OUT

    img = offs_m // (HP * WP)
    pix = offs_m % (HP * WP)
    # Input coordinates of the top-left tap of the window's top-left conv output.
    ih0 = (pix // WP) * 2 - PAD
    iw0 = (pix % WP) * 2 - PAD
    x_img = x_ptr + img.to(tl.int64) * C_IN * H * W

    acc00 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc01 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc10 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc11 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K_TOTAL, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)  # flat (ci, kh, kw)
        k_mask = offs_k < K_TOTAL
        ci = offs_k // (KS * KS)
        kh = (offs_k // KS) % KS
        kw = offs_k % KS

        w = tl.load(w_ptr + offs_n[None, :] * K_TOTAL + offs_k[:, None],
                    mask=k_mask[:, None] & n_mask[None, :], other=0.0)
        if UPCAST:
            w = w.to(tl.float32)

        ih = ih0[:, None] + kh[None, :]
        iw = iw0[:, None] + kw[None, :]
        x_ptrs = x_img[:, None] + ci[None, :] * (H * W) + ih * W + iw
        mask = m_mask[:, None] & k_mask[None, :]
        acc00 = _window_dot(acc00, x_ptrs, ih, iw, mask, H, W, w, 0, 0, UPCAST, PRECISION)
        acc01 = _window_dot(acc01, x_ptrs, ih, iw, mask, H, W, w, 0, 1, UPCAST, PRECISION)
        acc10 = _window_dot(acc10, x_ptrs, ih, iw, mask, H, W, w, 1, 0, UPCAST, PRECISION)
        acc11 = _window_dot(acc11, x_ptrs, ih, iw, mask, H, W, w, 1, 1, UPCAST, PRECISION)

    # The bias goes onto each of the four conv outputs before the pool, as in torch: adding it once
    # after the max would turn a window holding a -inf conv output under a +inf bias into +inf,
    # where torch's -inf + inf gives NaN for that output and so for the pooled pixel.
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        acc00 += bias
        acc01 += bias
        acc10 += bias
        acc11 += bias
    # NaN-propagating max (PTX max.NaN on a GPU) for both pool and ReLU: the default maximum
    # returns the non-NaN operand, so a NaN conv output would become a finite pooled value or 0,
    # while torch.relu(NaN) is NaN and max_pool2d gives NaN for any window holding a NaN.
    out = tl.maximum(tl.maximum(acc00, acc01, propagate_nan=tl.PropagateNan.ALL),
                     tl.maximum(acc10, acc11, propagate_nan=tl.PropagateNan.ALL),
                     propagate_nan=tl.PropagateNan.ALL)
    out = tl.maximum(out, 0.0, propagate_nan=tl.PropagateNan.ALL)

    out_ptrs = (out_ptr + img.to(tl.int64)[:, None] * C_OUT * HP * WP
                + offs_n[None, :] * (HP * WP) + pix[:, None])
    tl.store(out_ptrs, out.to(out_ptr.dtype.element_ty), mask=m_mask[:, None] & n_mask[None, :])


def _check_inputs(x, weight, bias, padding):
    """Validate the arguments; return (padding, H_out, W_out)."""
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if name == "bias" and t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
        if t.dtype != x.dtype:
            raise TypeError(f"{name} dtype {t.dtype} does not match x dtype {x.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; all tensors must share a device")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-D [N, Cin, H, W], got {x.dim()}-D shape {tuple(x.shape)}")
    if weight.dim() != 4:
        raise ValueError(f"weight must be 4-D [Cout, Cin, K, K], got {weight.dim()}-D shape {tuple(weight.shape)}")
    c_out, c_in, kh, kw = weight.shape
    if kh != kw or kh % 2 == 0:
        raise ValueError(f"weight must have a square odd kernel (K x K, K odd), got {kh}x{kw}")
    if c_in != x.shape[1]:
        raise ValueError(f"weight expects Cin={c_in} input channels but x has {x.shape[1]} (shape {tuple(x.shape)})")
    if bias is not None and tuple(bias.shape) != (c_out,):
        raise ValueError(f"bias must have shape ({c_out},) = [Cout], got {tuple(bias.shape)}")
    if padding is None:
        padding = kh // 2
    if isinstance(padding, bool) or not isinstance(padding, (int, torch.SymInt)) or padding < 0:
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    h_out = (x.shape[2] + 2 * padding - kh + 1) // 2
    w_out = (x.shape[3] + 2 * padding - kh + 1) // 2
    if h_out < 1 or w_out < 1:
        raise ValueError(
            f"output would be {h_out}x{w_out}: input {x.shape[2]}x{x.shape[3]} with kernel {kh} and "
            f"padding {padding} must give a conv output of at least 2x2 for the 2x2 pool")
    return padding, h_out, w_out


def _plan(x, weight, bias, padding) -> LaunchPlan:
    """The launch for checked inputs; the compile check builds it too, from CPU tensors."""
    padding, h_out, w_out = _check_inputs(x, weight, bias, padding)
    x, weight = x.contiguous(), weight.contiguous()
    bias = bias.contiguous() if bias is not None else None
    n, c_in, h, w = x.shape
    c_out, _, ks, _ = weight.shape
    out = torch.empty((n, c_out, h_out, w_out), device=x.device, dtype=x.dtype)
    m = n * h_out * w_out
    # The interpreter's bf16 arithmetic is wrong: there, bf16 tiles are upcast and multiplied in fp32.
    upcast = _INTERPRET and x.dtype == torch.bfloat16
    # fp32 tl.dot defaults to tf32 on NVIDIA GPUs; ask for full fp32 to match F.conv2d closely.
    precision = "ieee" if (x.dtype == torch.float32 or upcast) else "tf32"
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]), triton.cdiv(c_out, meta["BLOCK_N"]))
    args = (x, weight, bias if bias is not None else weight, out,
            m, c_in, h, w, c_out, h_out, w_out, c_in * ks * ks)
    constexprs = dict(KS=ks, PAD=padding, HAS_BIAS=bias is not None, UPCAST=upcast, PRECISION=precision)
    return LaunchPlan(_conv_relu_pool_kernel, grid, args, constexprs, out)


def _launch(x, weight, bias, padding):
    plan = _plan(x, weight, bias, padding)  # checks the inputs first
    if x.device.type == "cpu" and not _INTERPRET:
        raise ValueError("x is on the CPU: a compiled Triton kernel needs GPU tensors (CPU tensors only "
                         "work in Triton's interpreter, TRITON_INTERPRET=1 set before importing this module)")
    return plan.launch()


@torch.library.custom_op("tritonize::conv2d_relu_maxpool2d", mutates_args=())
def _conv2d_relu_maxpool2d_op(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, padding: Optional[int] = None
) -> torch.Tensor:
    return _launch(x, weight, bias, padding)


@_conv2d_relu_maxpool2d_op.register_fake
def _(x, weight, bias=None, padding=None):
    _, h_out, w_out = _check_inputs(x, weight, bias, padding)
    return x.new_empty((x.shape[0], weight.shape[0], h_out, w_out))


def conv2d_relu_maxpool2d(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, padding: Optional[int] = None
) -> torch.Tensor:
    """``max_pool2d(relu(conv2d(x, weight, bias, padding=padding)), 2)`` in one kernel.

    x: [N, Cin, H, W]; weight: [Cout, Cin, K, K] with K odd; bias: [Cout] or None; padding: zero
    padding, default K // 2. Stride 1, pool 2x2 stride 2 (floor). dtypes float32/float16/bfloat16,
    all equal; fp32 accumulation; output [N, Cout, H_out, W_out] in the input dtype.
    Forward only (no autograd formula): meant for inference.
    """
    _check_inputs(x, weight, bias, padding)  # clear errors before the dispatcher sees the args
    return torch.ops.tritonize.conv2d_relu_maxpool2d(x, weight, bias, padding)
