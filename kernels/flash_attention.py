"""Flash-attention forward (inference) in Triton.

Computes ``softmax(q @ k^T * sm_scale + mask) @ v`` for q ``[B, H, Sq, D]`` and k, v
``[B, Hkv, Skv, D]`` without ever materialising the ``Sq x Skv`` score matrix.

Algorithm (Dao et al., "FlashAttention", and the Triton fused-attention tutorial):

* Tiles. The grid is ``(cdiv(Sq, BLOCK_M), B * H)``. Each program keeps one ``BLOCK_M x D`` tile of
  queries on chip and streams the keys and values of its (batch, kv-head) in ``BLOCK_N``-row tiles.
* Online softmax. Per query row the program keeps a running maximum ``m`` of the scores, a running
  sum ``l`` of ``exp(score - m)`` and an fp32 accumulator ``acc`` of ``exp(score - m) @ v``. For every
  new key tile: ``m_new = max(m, rowmax(s))``, ``alpha = exp(m - m_new)``, ``p = exp(s - m_new)``,
  ``l = l * alpha + rowsum(p)``, ``acc = acc * alpha + p @ v``. At the end ``out = acc / l``. This
  equals the exact softmax, only computed in one pass.
* exp2 with the scale folded in. ``exp(x * sm_scale) == exp2(x * sm_scale * log2(e))``, so the
  kernel works in the base-2 domain with ``qk_scale = sm_scale * log2(e)``: one multiply (fused
  into the max-subtraction) and a native ``exp2`` per score instead of a scale, a subtract and ``exp``.
* Grouped-query attention. Query head ``h`` reads kv head ``h // (H // Hkv)``; kv tensors are never
  repeated in memory.
* Masks. Key blocks are split in two ranges. Blocks that are entirely in bounds and (for causal)
  entirely below the diagonal run without any masking. The remaining blocks - the ragged tail
  ``Skv % BLOCK_N`` and the blocks that cross the causal diagonal - use masked loads and set the
  scores of invisible keys to ``-inf`` (so they get weight exactly 0). Causal is top-left aligned
  like ``F.scaled_dot_product_attention(is_causal=True)``: query ``i`` sees keys ``j <= i`` also when
  ``Sq != Skv``, and key blocks right of the diagonal of the whole query tile are never loaded.
  ``key_padding_mask`` ``[B, Skv]`` (True = real key) is loaded per key tile and applied the same way.
* Fully masked rows. A query row with no visible key (e.g. a padding mask that is all False) would
  give ``0 / 0``. The kernel subtracts 0 instead of ``m = -inf`` in the exponent and divides by 1
  instead of ``l = 0``, so such rows come out as zeros, not NaN. (Note: SDPA returns NaN there.)

Accumulation is fp32 for every input dtype; the output has the input dtype and is a contiguous
``[B, H, Sq, D]`` tensor. q, k and v may have arbitrary strides (e.g. views of a fused qkv
projection); strides go to the kernel, nothing is copied.

The public entry point is :func:`flash_attention`, backed by the torch op
``torch.ops.tritonize.flash_attention`` (with a fake implementation, so it traces under
``torch.compile`` / ``torch.export``).
"""

import math
import os
from typing import Optional

import torch
import triton
import triton.language as tl

from .launch_plan import LaunchPlan, target_capability

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
_LOG2E = 1.4426950408889634


# The autotune lists, from the compile check (python -P -m tritonize.kernels.compile_sweep; the table is
# docs/results/compile-check-2026-12-07/compile_check.md). Every config a launch keeps compiles for sm_80
# and sm_90a with no register spills and within shared memory; CI holds the prune below to that.
# 16-bit dots run on tensor cores (HMMA on sm_80, HGMMA on sm_90a) and take the large tiles.
_CONFIGS_16BIT = [(128, 64, 4, 3), (128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 2), (128, 128, 8, 3),
                  (64, 64, 4, 3), (64, 64, 4, 4), (64, 32, 4, 4)]  # BLOCK_M, BLOCK_N, num_warps, num_stages
# IEEE fp32 dots run on FMA units with their operand tiles in registers: every 16-bit config above spills
# in fp32 at head dim 64 (400 B to 53 KB), and at head dim 32 all but 64 x 32 on 4 warps.
_CONFIGS_FP32 = [(64, 32, 8, 2), (64, 16, 4, 2), (32, 32, 4, 2), (32, 32, 4, 3), (32, 16, 2, 2)]
# At head dim 128 each of those spills 1.0-1.7 KB on sm_90a: narrower key tiles.
_CONFIGS_FP32_D128 = [(64, 16, 8, 2), (32, 16, 4, 2), (16, 32, 4, 2), (16, 16, 4, 2)]


def _get_configs():
    if _INTERPRET:
        # The CPU interpreter cannot benchmark, and its cost grows with programs x ops per program,
        # so a single config with big tiles. 64 keeps every tl.dot dimension >= 16.
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=1)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn, w, s in _CONFIGS_16BIT + _CONFIGS_FP32 + _CONFIGS_FP32_D128]


def _fits(bm: int, bn: int, warps: int, stages: int, head_dim: int, fp32: bool, capability) -> bool:
    """Whether a config compiles without spills for this launch, by the compile check's numbers."""
    config = (bm, bn, warps, stages)
    if fp32:
        if config == (64, 32, 8, 2) and head_dim <= 16:
            return False  # spills 4 B on sm_80 at head dim 16 (none from 32 up)
        return config in (_CONFIGS_FP32_D128 if head_dim >= 128 else _CONFIGS_FP32)
    if config not in _CONFIGS_16BIT:
        return False
    if bm == 128 and warps == 4 and head_dim >= 64:
        return False  # spills from head dim 64: 4 B on sm_80; at 128, 764-992 B on sm_80, 980-1140 B on sm_90a
    if bm == 128 and bn == 128 and head_dim >= 128:
        return False  # spills at head dim 128: 176-504 B on sm_80, 12-112 B on sm_90a
    if bm == 128 and head_dim >= 128 and (capability or 0) < 90:
        return False  # 128 x 64 on 8 warps spills 8-16 B on sm_80 at head dim 128 (none on sm_90a)
    return True


def _prune_configs(configs, named_args, **kwargs):
    args = {**named_args, **kwargs}
    fp32 = args["Q"].dtype == torch.float32
    capability = target_capability(args["Q"])

    def keep(c):
        bm, bn = c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]
        # Short sequences (decode, small prompts) waste most of a 128-row tile.
        if (args["SEQ_Q"] <= 64 and bm > 64) or (args["SEQ_K"] <= 64 and bn > 64):
            return False
        return _INTERPRET or _fits(bm, bn, c.num_warps, c.num_stages, args["HEAD_DIM"], fp32, capability)

    return [c for c in configs if keep(c)] or configs


@triton.jit
def _attn_fwd_inner(
    acc, l_i, m_i, q,
    k_ptrs, v_ptrs, kpm_ptr,
    stride_kn, stride_vn, stride_mn,
    qk_scale, offs_m, offs_n, SEQ_K, lo, hi,
    MASKED: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr,
    DOT_DTYPE: tl.constexpr, DOT_PRECISION: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # k_ptrs: [HEAD_DIM, BLOCK_N] (K^T tile), v_ptrs: [BLOCK_N, HEAD_DIM], both at key `lo`.
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + offs_n
        if MASKED:
            k = tl.load(k_ptrs, mask=cols[None, :] < SEQ_K, other=0.0)
        else:
            k = tl.load(k_ptrs)
        qk = tl.dot(q, k.to(DOT_DTYPE), input_precision=DOT_PRECISION)

        if MASKED or HAS_KPM:
            keep = cols[None, :] < SEQ_K
            if CAUSAL:
                keep = keep & (offs_m[:, None] >= cols[None, :])
            if HAS_KPM:
                kpm = tl.load(kpm_ptr + cols * stride_mn, mask=cols < SEQ_K, other=0)
                keep = keep & (kpm != 0)[None, :]
            qk = tl.where(keep, qk * qk_scale, float("-inf"))
            m_ij = tl.maximum(m_i, tl.max(qk, 1))
            # A row that has seen no visible key yet has m_ij == -inf; exp2(-inf - (-inf)) would be
            # NaN, so subtract 0 instead: its p and alpha become exactly 0.
            m_sub = tl.where(m_ij == float("-inf"), 0.0, m_ij)
            p = tl.math.exp2(qk - m_sub[:, None])
            alpha = tl.math.exp2(m_i - m_sub)
        else:
            # Hot path: no masking at all. qk_scale > 0, so max(qk) * qk_scale == max(qk * qk_scale)
            # and the scale folds into one FMA with the max subtraction.
            m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
            p = tl.math.exp2(qk * qk_scale - m_ij[:, None])
            alpha = tl.math.exp2(m_i - m_ij)

        l_i = l_i * alpha + tl.sum(p, 1)
        acc = acc * alpha[:, None]
        if MASKED:
            v = tl.load(v_ptrs, mask=cols[:, None] < SEQ_K, other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = tl.dot(p.to(DOT_DTYPE), v.to(DOT_DTYPE), acc, input_precision=DOT_PRECISION)
        m_i = m_ij
        k_ptrs += BLOCK_N * stride_kn
        v_ptrs += BLOCK_N * stride_vn
    return acc, l_i, m_i


@triton.autotune(
    configs=_get_configs(),
    # Sequence lengths are bucketed to powers of two so that variable-length serving traffic does
    # not re-tune for every new length.
    key=["SEQ_Q_BUCKET", "SEQ_K_BUCKET", "HEAD_DIM", "CAUSAL", "HAS_KPM"],
    prune_configs_by={"early_config_prune": _prune_configs},
)
@triton.jit
def _flash_attn_fwd_kernel(
    Q, K, V, Out, KPM,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_ob, stride_oh, stride_om, stride_od,
    stride_mb, stride_mn,
    qk_scale,
    NUM_HEADS, GROUP_SIZE,
    SEQ_Q, SEQ_K, SEQ_Q_BUCKET, SEQ_K_BUCKET,
    HEAD_DIM: tl.constexpr,
    CAUSAL: tl.constexpr,
    HAS_KPM: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    off_bh = tl.program_id(1)
    off_b = (off_bh // NUM_HEADS).to(tl.int64)
    off_h = (off_bh % NUM_HEADS).to(tl.int64)
    off_hkv = off_h // GROUP_SIZE  # grouped-query attention: GROUP_SIZE query heads per kv head

    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)

    q_ptrs = Q + off_b * stride_qb + off_h * stride_qh + offs_m[:, None] * stride_qm + offs_d[None, :] * stride_qd
    kv_k = K + off_b * stride_kb + off_hkv * stride_kh
    kv_v = V + off_b * stride_vb + off_hkv * stride_vh
    kpm_ptr = KPM + off_b * stride_mb

    q = tl.load(q_ptrs, mask=offs_m[:, None] < SEQ_Q, other=0.0).to(DOT_DTYPE)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # Keys [0, full_hi) need no bounds/causal masks; [full_hi, hi) do; keys >= hi are never visible.
    if CAUSAL:
        hi = tl.minimum(SEQ_K, start_m + BLOCK_M)
        full_hi = (tl.minimum(SEQ_K, start_m) // BLOCK_N) * BLOCK_N
    else:
        hi = SEQ_K
        full_hi = (SEQ_K // BLOCK_N) * BLOCK_N

    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q,
        kv_k + offs_d[:, None] * stride_kd + offs_n[None, :] * stride_kn,
        kv_v + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd,
        kpm_ptr,
        stride_kn, stride_vn, stride_mn,
        qk_scale, offs_m, offs_n, SEQ_K, 0, full_hi,
        False, CAUSAL, HAS_KPM, DOT_DTYPE, DOT_PRECISION, BLOCK_N,
    )
    acc, l_i, m_i = _attn_fwd_inner(
        acc, l_i, m_i, q,
        kv_k + offs_d[:, None] * stride_kd + (full_hi + offs_n)[None, :] * stride_kn,
        kv_v + (full_hi + offs_n)[:, None] * stride_vn + offs_d[None, :] * stride_vd,
        kpm_ptr,
        stride_kn, stride_vn, stride_mn,
        qk_scale, offs_m, offs_n, SEQ_K, full_hi, hi,
        True, CAUSAL, HAS_KPM, DOT_DTYPE, DOT_PRECISION, BLOCK_N,
    )

    # Rows with no visible key have l == 0 and acc == 0: divide by 1 to return zeros instead of NaN.
    l_i = tl.where(l_i == 0.0, 1.0, l_i)
    acc = acc / l_i[:, None]
    o_ptrs = Out + off_b * stride_ob + off_h * stride_oh + offs_m[:, None] * stride_om + offs_d[None, :] * stride_od
    tl.store(o_ptrs, acc.to(Out.dtype.element_ty), mask=offs_m[:, None] < SEQ_Q)


def _check_inputs(q, k, v, sm_scale, key_padding_mask):
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"flash_attention: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            layout = "[B, H, Sq, D]" if name == "q" else "[B, Hkv, Skv, D]"
            raise ValueError(f"flash_attention: {name} must be 4-D {layout}, got shape {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"flash_attention: q, k, v must share one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(f"flash_attention: dtype must be one of float16, bfloat16, float32, got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"flash_attention: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if q.device.type != "cuda" and not _INTERPRET:
        raise ValueError(
            f"flash_attention: tensors must be on a CUDA device (or set TRITON_INTERPRET=1 for CPU), got {q.device}"
        )
    B, H, _, D = q.shape
    if k.shape != v.shape:
        raise ValueError(f"flash_attention: k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    Bk, Hkv, Skv, Dk = k.shape
    if Dk != D:
        raise ValueError(f"flash_attention: head_dim of k/v ({Dk}) must equal head_dim of q ({D})")
    if D not in _SUPPORTED_HEAD_DIMS:
        raise ValueError(f"flash_attention: head_dim must be one of {_SUPPORTED_HEAD_DIMS}, got {D}")
    if Bk != B:
        raise ValueError(f"flash_attention: batch size of k/v ({Bk}) must equal batch size of q ({B})")
    if Hkv == 0 or H % Hkv != 0:
        raise ValueError(f"flash_attention: q heads ({H}) must be a multiple of k/v heads ({Hkv})")
    if sm_scale is not None and not (math.isfinite(sm_scale) and sm_scale > 0):
        raise ValueError(f"flash_attention: sm_scale must be a positive finite number, got {sm_scale}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor):
            raise TypeError(
                f"flash_attention: key_padding_mask must be a torch.Tensor or None, got {type(key_padding_mask).__name__}"
            )
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(f"flash_attention: key_padding_mask must have dtype torch.bool, got {key_padding_mask.dtype}")
        if tuple(key_padding_mask.shape) != (B, Skv):
            raise ValueError(
                f"flash_attention: key_padding_mask must have shape [B, Skv] = {[B, Skv]}, "
                f"got {list(key_padding_mask.shape)}"
            )
        if key_padding_mask.device != q.device:
            raise ValueError(
                f"flash_attention: key_padding_mask must be on {q.device}, got {key_padding_mask.device}"
            )


def _plan(q, k, v, causal=False, sm_scale=None, key_padding_mask=None) -> LaunchPlan:
    """The launch for checked inputs; the compile check builds it too, from CPU tensors."""
    B, H, Sq, D = q.shape
    Hkv, Skv = k.shape[1], k.shape[2]
    if sm_scale is None:
        sm_scale = 1.0 / math.sqrt(D)
    out = torch.empty((B, H, Sq, D), dtype=q.dtype, device=q.device)

    if key_padding_mask is not None:
        kpm = key_padding_mask.view(torch.uint8)  # same bytes, a plain integer pointer for Triton
        stride_mb, stride_mn = kpm.stride()
    else:
        kpm, stride_mb, stride_mn = out, 0, 0  # never read: HAS_KPM=False

    # bf16 arithmetic is wrong in the CPU interpreter, so there it feeds tl.dot fp32 operands.
    if _INTERPRET and q.dtype == torch.bfloat16:
        dot_dtype = tl.float32
    else:
        dot_dtype = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}[q.dtype]
    # fp32 inputs: tl.dot would default to tf32 on GPU; follow torch's own matmul setting instead.
    dot_precision = None
    if q.dtype == torch.float32:
        allow_tf32 = q.device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32
        dot_precision = "tf32" if allow_tf32 else "ieee"

    def grid(meta):
        return (triton.cdiv(Sq, meta["BLOCK_M"]), B * H)

    args = (
        q, k, v, out, kpm,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        stride_mb, stride_mn,
        sm_scale * _LOG2E,
        H, H // Hkv,
        Sq, Skv, triton.next_power_of_2(max(Sq, 16)), triton.next_power_of_2(max(Skv, 16)),
    )
    constexprs = dict(
        HEAD_DIM=D,
        CAUSAL=bool(causal),
        HAS_KPM=key_padding_mask is not None,
        DOT_DTYPE=dot_dtype,
        DOT_PRECISION=dot_precision,
    )
    return LaunchPlan(_flash_attn_fwd_kernel, grid, args, constexprs, out)


def _flash_attention_fwd(q, k, v, causal=False, sm_scale=None, key_padding_mask=None):
    _check_inputs(q, k, v, sm_scale, key_padding_mask)
    return _plan(q, k, v, causal, sm_scale, key_padding_mask).launch()


@torch.library.custom_op("tritonize::flash_attention", mutates_args=())
def _flash_attention_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = False,
    sm_scale: Optional[float] = None,
    key_padding_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    return _flash_attention_fwd(q, k, v, causal, sm_scale, key_padding_mask)


@_flash_attention_op.register_fake
def _flash_attention_fake(q, k, v, causal=False, sm_scale=None, key_padding_mask=None):
    _check_inputs(q, k, v, sm_scale, key_padding_mask)
    return q.new_empty(q.shape)


def flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    sm_scale: Optional[float] = None,
    key_padding_mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Fused scaled-dot-product attention forward.

    Args:
        q: ``[B, H, Sq, D]`` queries.
        k, v: ``[B, Hkv, Skv, D]`` keys and values; ``H % Hkv == 0`` (query head ``h`` uses kv head
            ``h // (H // Hkv)``). q, k, v share dtype (float16, bfloat16 or float32) and device;
            ``D`` is 16, 32, 64 or 128. Any strides are accepted.
        causal: query ``i`` attends to keys ``j <= i`` (top-left aligned, like
            ``F.scaled_dot_product_attention(is_causal=True)``, also when ``Sq != Skv``).
        sm_scale: softmax scale, default ``1 / sqrt(D)``; must be positive.
        key_padding_mask: optional bool ``[B, Skv]``, True = real key, False = padding (gets no weight).

    Returns:
        Contiguous ``[B, H, Sq, D]`` tensor in the input dtype. Rows whose keys are all masked are
        zeros (SDPA would return NaN).
    """
    _check_inputs(q, k, v, sm_scale, key_padding_mask)
    return torch.ops.tritonize.flash_attention(q, k, v, causal, sm_scale, key_padding_mask)
