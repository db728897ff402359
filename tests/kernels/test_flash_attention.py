"""Flash-attention forward vs torch SDPA and a float64 reference, on fresh random inputs.

On CPU the kernel runs in Triton's interpreter (TRITON_INTERPRET=1, set in tests/conftest.py), so
sizes stay small. With a CUDA device the same tests also run on it.
"""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from tritonize.kernels.flash_attention import flash_attention

HAS_CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(not INTERPRET, reason="CPU tensors need TRITON_INTERPRET=1")),
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")),
]
DTYPES = [torch.float32, torch.float16]

# (atol, rtol) of the kernel against the float64 reference and against SDPA in the input dtype.
TOL = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (5e-3, 5e-3),
    torch.bfloat16: (3e-2, 3e-2),
}

# (B, H, Hkv, Sq, Skv, D)
SHAPES = [
    (1, 1, 1, 1, 1, 16),
    (2, 2, 2, 17, 17, 32),
    (1, 4, 4, 100, 100, 64),
    (2, 2, 2, 17, 100, 64),
    (2, 2, 2, 100, 17, 32),
    (1, 2, 2, 1, 100, 64),
    (1, 2, 2, 128, 128, 128),
    (2, 4, 2, 100, 64, 64),
    (1, 4, 1, 64, 100, 32),
]


def _ids(shape):
    return "B{}-H{}-Hkv{}-Sq{}-Skv{}-D{}".format(*shape)


def _rand_qkv(shape, dtype, device):
    B, H, Hkv, Sq, Skv, D = shape
    q = torch.randn(B, H, Sq, D, dtype=dtype, device=device)
    k = torch.randn(B, Hkv, Skv, D, dtype=dtype, device=device)
    v = torch.randn(B, Hkv, Skv, D, dtype=dtype, device=device)
    return q, k, v


def _visible(Sq, Skv, causal, key_padding_mask, B, device):
    """Bool [B, 1, Sq, Skv]: True where query i may attend to key j."""
    vis = torch.ones(B, 1, Sq, Skv, dtype=torch.bool, device=device)
    if causal:  # top-left aligned, like SDPA's is_causal
        vis = vis & torch.ones(Sq, Skv, dtype=torch.bool, device=device).tril()
    if key_padding_mask is not None:
        vis = vis & key_padding_mask[:, None, None, :]
    return vis


def _reference_f64(q, k, v, causal=False, sm_scale=None, key_padding_mask=None):
    """Plain softmax attention in float64; rows with no visible key are 0."""
    B, H, Sq, D = q.shape
    Hkv, Skv = k.shape[1], k.shape[2]
    scale = 1.0 / math.sqrt(D) if sm_scale is None else sm_scale
    q, k, v = q.double(), k.double(), v.double()
    k = k.repeat_interleave(H // Hkv, dim=1)
    v = v.repeat_interleave(H // Hkv, dim=1)
    scores = (q @ k.transpose(-1, -2)) * scale
    vis = _visible(Sq, Skv, causal, key_padding_mask, B, q.device)
    scores = scores.masked_fill(~vis, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return probs @ v


def _reference_sdpa(q, k, v, causal=False, sm_scale=None, key_padding_mask=None):
    """torch SDPA in the input dtype, causal and padding given as one boolean attn_mask."""
    B, H, Sq, D = q.shape
    Hkv, Skv = k.shape[1], k.shape[2]
    k = k.repeat_interleave(H // Hkv, dim=1)
    v = v.repeat_interleave(H // Hkv, dim=1)
    mask = None
    if causal or key_padding_mask is not None:
        mask = _visible(Sq, Skv, causal, key_padding_mask, B, q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=sm_scale)


def _check(out, q, k, v, **kwargs):
    B, H, Sq, D = q.shape
    assert out.shape == (B, H, Sq, D)
    assert out.dtype == q.dtype
    assert out.is_contiguous()
    assert torch.isfinite(out).all()
    atol, rtol = TOL[q.dtype]
    torch.testing.assert_close(out.double(), _reference_f64(q, k, v, **kwargs), atol=atol, rtol=rtol)
    torch.testing.assert_close(out, _reference_sdpa(q, k, v, **kwargs), atol=atol, rtol=rtol)


def _random_padding_mask(B, Skv, device):
    """Right padding with a random number (>= 1) of real keys per batch row."""
    lengths = torch.randint(1, Skv + 1, (B,))
    mask = torch.arange(Skv)[None, :] < lengths[:, None]
    return mask.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_matches_sdpa_and_float64(shape, causal, dtype, device):
    q, k, v = _rand_qkv(shape, dtype, device)
    out = flash_attention(q, k, v, causal=causal)
    _check(out, q, k, v, causal=causal)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize(
    "shape",
    [(2, 2, 2, 17, 17, 32), (2, 4, 2, 100, 100, 64), (2, 2, 1, 17, 100, 16), (2, 2, 2, 100, 64, 32)],
    ids=_ids,
)
def test_key_padding_mask(shape, causal, dtype, device):
    q, k, v = _rand_qkv(shape, dtype, device)
    mask = _random_padding_mask(shape[0], shape[4], device)
    out = flash_attention(q, k, v, causal=causal, key_padding_mask=mask)
    _check(out, q, k, v, causal=causal, key_padding_mask=mask)


@pytest.mark.parametrize("device", DEVICES)
def test_scattered_padding_mask(device):
    # Not a prefix mask: random holes anywhere, at least one real key per batch row.
    shape = (2, 2, 2, 64, 100, 32)
    q, k, v = _rand_qkv(shape, torch.float32, device)
    mask = torch.rand(2, 100, device=device) > 0.5
    mask[:, 0] = True
    out = flash_attention(q, k, v, key_padding_mask=mask)
    _check(out, q, k, v, key_padding_mask=mask)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("sm_scale", [0.05, 0.3])
def test_custom_sm_scale(sm_scale, causal, device):
    q, k, v = _rand_qkv((2, 2, 2, 17, 100, 64), torch.float32, device)
    out = flash_attention(q, k, v, causal=causal, sm_scale=sm_scale)
    _check(out, q, k, v, causal=causal, sm_scale=sm_scale)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_non_contiguous_fused_qkv(causal, dtype, device):
    # q, k, v as views of one fused projection output [B, S, 3, H, D]: no copies.
    B, S, H, D = 2, 100, 2, 32
    qkv = torch.randn(B, S, 3, H, D, dtype=dtype, device=device)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))
    assert not q.is_contiguous()
    mask = _random_padding_mask(B, S, device)
    out = flash_attention(q, k, v, causal=causal, key_padding_mask=mask)
    _check(out, q, k, v, causal=causal, key_padding_mask=mask)


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_gqa_head_dim_last_strided(device):
    # A transposed-storage layout where head_dim is not the innermost stride.
    B, H, Hkv, Sq, Skv, D = 1, 4, 2, 17, 64, 32
    q = torch.randn(B, H, D, Sq, device=device).transpose(2, 3)
    k = torch.randn(B, Hkv, D, Skv, device=device).transpose(2, 3)
    v = torch.randn(B, Skv, Hkv, D, device=device).transpose(1, 2)
    out = flash_attention(q, k, v, causal=True)
    _check(out, q, k, v, causal=True)


@pytest.mark.parametrize("device", DEVICES)
def test_fully_masked_rows_are_zero(device):
    B, H, Hkv, Sq, Skv, D = 2, 2, 1, 17, 100, 32
    q, k, v = _rand_qkv((B, H, Hkv, Sq, Skv, D), torch.float32, device)
    mask = torch.ones(B, Skv, dtype=torch.bool, device=device)
    mask[0] = False  # batch 0: no key at all
    mask[1, :5] = False  # batch 1, causal: queries 0..4 see only padded keys
    out = flash_attention(q, k, v, causal=True, key_padding_mask=mask)
    assert torch.isfinite(out).all()
    assert (out[0] == 0).all()
    assert (out[1, :, :5] == 0).all()
    ref = _reference_f64(q, k, v, causal=True, key_padding_mask=mask)
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device (bf16 math is wrong in the Triton interpreter)")
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", [(2, 4, 2, 100, 100, 64), (1, 2, 2, 17, 128, 128)], ids=_ids)
def test_bfloat16_gpu(shape, causal):
    q, k, v = _rand_qkv(shape, torch.bfloat16, "cuda")
    mask = _random_padding_mask(shape[0], shape[4], "cuda")
    out = flash_attention(q, k, v, causal=causal, key_padding_mask=mask)
    _check(out, q, k, v, causal=causal, key_padding_mask=mask)


def test_torch_op_matches_function():
    q, k, v = _rand_qkv((1, 2, 2, 17, 17, 16), torch.float32, "cpu" if INTERPRET else "cuda")
    mask = _random_padding_mask(1, 17, q.device)
    direct = torch.ops.tritonize.flash_attention(q, k, v, True, 0.2, mask)
    torch.testing.assert_close(direct, flash_attention(q, k, v, causal=True, sm_scale=0.2, key_padding_mask=mask))
    torch.testing.assert_close(torch.ops.tritonize.flash_attention(q, k, v), flash_attention(q, k, v))


def test_fake_impl_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(2, 4, 100, 64, dtype=torch.float16)
        k = torch.empty(2, 2, 17, 64, dtype=torch.float16)
        v = torch.empty(2, 2, 17, 64, dtype=torch.float16)
        mask = torch.empty(2, 17, dtype=torch.bool)
        out = torch.ops.tritonize.flash_attention(q, k, v, True, None, mask)
        assert out.shape == (2, 4, 100, 64)
        assert out.dtype == torch.float16
        assert out.is_contiguous()
        with pytest.raises(ValueError, match="multiple of k/v heads"):
            torch.ops.tritonize.flash_attention(q, k[:, :1].expand(2, 3, 17, 64), v[:, :1].expand(2, 3, 17, 64))


def test_opcheck():
    # Schema, fake impl vs real output, and tracing through AOT dispatch with dynamic shapes.
    device = "cpu" if INTERPRET else "cuda"
    q = torch.randn(1, 2, 17, 16, device=device)
    k = torch.randn(1, 1, 33, 16, device=device)
    mask = torch.rand(1, 33, device=device) > 0.3
    torch.library.opcheck(torch.ops.tritonize.flash_attention.default, (q, k, k, True, 0.3, mask))


def test_traces_with_make_fx():
    from torch.fx.experimental.proxy_tensor import make_fx

    def f(q, k, v, mask):
        return flash_attention(q, k, v, causal=True, key_padding_mask=mask) * 2

    q = torch.randn(1, 2, 17, 32)
    mask = torch.ones(1, 17, dtype=torch.bool)
    gm = make_fx(f, tracing_mode="fake")(q, q, q, mask)
    assert any(n.target is torch.ops.tritonize.flash_attention.default for n in gm.graph.nodes)


def _good(**overrides):
    args = dict(
        q=torch.randn(2, 4, 17, 32),
        k=torch.randn(2, 2, 33, 32),
        v=torch.randn(2, 2, 33, 32),
        key_padding_mask=None,
    )
    args.update(overrides)
    return args


@pytest.mark.parametrize(
    "overrides, exc, match",
    [
        (dict(q=torch.randn(4, 17, 32)), ValueError, r"q must be 4-D .*got shape \(4, 17, 32\)"),
        (dict(q=[1.0]), TypeError, "q must be a torch.Tensor, got list"),
        (dict(k=torch.randn(2, 2, 33, 32, dtype=torch.float16)), TypeError, "share one dtype"),
        (
            dict(q=torch.randn(2, 4, 17, 32).double(), k=torch.randn(2, 2, 33, 32).double(),
                 v=torch.randn(2, 2, 33, 32).double()),
            TypeError, "float16, bfloat16, float32, got torch.float64",
        ),
        (
            dict(q=torch.randn(2, 4, 17, 48), k=torch.randn(2, 2, 33, 48), v=torch.randn(2, 2, 33, 48)),
            ValueError, r"head_dim must be one of \(16, 32, 64, 128\), got 48",
        ),
        (dict(k=torch.randn(2, 2, 33, 64), v=torch.randn(2, 2, 33, 64)), ValueError, r"k/v \(64\) must equal .* q \(32\)"),
        (dict(v=torch.randn(2, 2, 34, 32)), ValueError, "k and v must have the same shape"),
        (dict(k=torch.randn(2, 3, 33, 32), v=torch.randn(2, 3, 33, 32)), ValueError, r"q heads \(4\) .* k/v heads \(3\)"),
        (dict(k=torch.randn(1, 2, 33, 32), v=torch.randn(1, 2, 33, 32)), ValueError, r"batch size of k/v \(1\) .* q \(2\)"),
        (dict(key_padding_mask=torch.ones(2, 33)), TypeError, "torch.bool, got torch.float32"),
        (dict(key_padding_mask=torch.ones(2, 17, dtype=torch.bool)), ValueError, r"\[2, 33\], got \[2, 17\]"),
    ],
)
def test_invalid_inputs(overrides, exc, match):
    args = _good(**overrides)
    with pytest.raises(exc, match=match):
        flash_attention(args["q"], args["k"], args["v"], key_padding_mask=args["key_padding_mask"])


def test_invalid_sm_scale():
    a = _good()
    with pytest.raises(ValueError, match="sm_scale must be a positive finite number, got -1.0"):
        flash_attention(a["q"], a["k"], a["v"], sm_scale=-1.0)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_device_mismatch():
    a = _good()
    with pytest.raises(ValueError, match="one device"):
        flash_attention(a["q"].cuda(), a["k"], a["v"])
