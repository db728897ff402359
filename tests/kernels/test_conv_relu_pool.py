"""The fused conv2d -> bias -> ReLU -> max_pool2d(2) Triton kernel against PyTorch.

On this CPU machine the kernel runs in Triton's interpreter (TRITON_INTERPRET=1, set in
tests/conftest.py); with a GPU the same tests run on cuda too. Every test draws fresh random
inputs from its own random seed, printed on failure.
"""
import os
import random

import pytest
import torch
import torch.nn.functional as F

from tritonize.kernels.conv_relu_pool import conv2d_relu_maxpool2d
from tritonize.models.nets import ConvReluPool

INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
HAS_CUDA = torch.cuda.is_available()
DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(not INTERPRET, reason="CPU tensors need TRITON_INTERPRET=1")),
    pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")),
]

# (batch, Cin, Cout, H, W, K, padding (None = K//2), bias)
CASES = [
    (1, 1, 3, 7, 9, 3, None, True),
    (2, 3, 10, 7, 9, 3, 0, False),
    (2, 3, 33, 11, 11, 5, None, True),
    (1, 32, 64, 12, 12, 3, None, True),
    (3, 32, 10, 11, 11, 1, 0, True),
    (2, 3, 64, 24, 24, 1, None, False),
    (1, 3, 33, 11, 11, 7, None, True),
    (2, 1, 64, 8, 8, 5, 0, True),
    (1, 32, 3, 9, 7, 5, 2, False),
]
FP16_CASES = [CASES[0], CASES[2], CASES[3], CASES[4]]


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(random.SystemRandom().randrange(2**31))


def make_inputs(gen, case, dtype, device):
    n, cin, cout, h, w, k, padding, has_bias = case
    x = torch.randn(n, cin, h, w, generator=gen)
    weight = torch.randn(cout, cin, k, k, generator=gen) / (cin * k * k) ** 0.5  # keeps outputs O(1)
    bias = torch.randn(cout, generator=gen) if has_bias else None
    to = lambda t: None if t is None else t.to(device=device, dtype=dtype)
    return to(x), to(weight), to(bias), padding


def reference(x, weight, bias, padding):
    """The unfused PyTorch block, in float64 on the CPU (so no TF32 or fp16 rounding inside)."""
    k = weight.shape[-1]
    dbl = lambda t: None if t is None else t.detach().cpu().double()
    y = F.conv2d(dbl(x), dbl(weight), dbl(bias), padding=k // 2 if padding is None else padding)
    return F.max_pool2d(F.relu(y), 2)


def check(gen, case, dtype, device, atol, rtol):
    x, weight, bias, padding = make_inputs(gen, case, dtype, device)
    out = conv2d_relu_maxpool2d(x, weight, bias, padding)
    ref = reference(x, weight, bias, padding)
    assert out.dtype == dtype and out.device == x.device
    assert out.shape == ref.shape
    torch.testing.assert_close(out.cpu().double(), ref, atol=atol, rtol=rtol,
                               msg=lambda m: f"seed {gen.initial_seed()}, case {case}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_torch_fp32(gen, case, device):
    check(gen, case, torch.float32, device, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", FP16_CASES, ids=str)
def test_matches_torch_fp16(gen, case, device):
    check(gen, case, torch.float16, device, atol=1e-2, rtol=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="bf16 needs a CUDA GPU (the interpreter's bf16 math is wrong)")
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_torch_bf16_gpu(gen, case):
    check(gen, case, torch.bfloat16, "cuda", atol=3e-2, rtol=3e-2)


@pytest.mark.skipif(not INTERPRET, reason="checks the interpreter's bf16 upcast path")
def test_bf16_interpreter_upcast(gen):
    # The kernel upcasts bf16 tiles to fp32 under the interpreter, whose own bf16 math is wrong.
    check(gen, CASES[2], torch.bfloat16, "cpu", atol=3e-2, rtol=3e-2)


@pytest.mark.parametrize("device", DEVICES)
def test_cnn_layer_shapes(gen, device):
    """The CNN's two blocks, 3->32 at 24x24 then 32->64 at 12x12, against the model's own module."""
    torch.manual_seed(gen.initial_seed())
    x = torch.randn(2, 3, 24, 24, generator=gen, device="cpu").to(device)
    with torch.no_grad():
        for cin, cout, side in ((3, 32, 24), (32, 64, 12)):
            block = ConvReluPool(cin, cout).to(device)
            assert x.shape == (2, cin, side, side)
            out = conv2d_relu_maxpool2d(x, block.conv.weight, block.conv.bias)
            torch.testing.assert_close(out.cpu().double(), reference(x, block.conv.weight, block.conv.bias, None),
                                       atol=1e-4, rtol=1e-4, msg=lambda m: f"seed {gen.initial_seed()}: {m}")
            assert out.shape == (2, cout, side // 2, side // 2)
            x = out


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(gen, device):
    x, weight, bias, padding = make_inputs(gen, CASES[2], torch.float32, device)
    x_cl = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # channels-last strides
    w_t = weight.transpose(2, 3).contiguous().transpose(2, 3)
    assert not x_cl.is_contiguous() and not w_t.is_contiguous()
    out = conv2d_relu_maxpool2d(x_cl, w_t, bias, padding)
    torch.testing.assert_close(out.cpu().double(), reference(x, weight, bias, padding), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_op(gen, device):
    x, weight, bias, _ = make_inputs(gen, CASES[0], torch.float32, device)
    op = torch.ops.tritonize.conv2d_relu_maxpool2d
    torch.testing.assert_close(op(x, weight, bias), conv2d_relu_maxpool2d(x, weight, bias), atol=0, rtol=0)
    torch.testing.assert_close(op(x, weight, None, 0).cpu().double(), reference(x, weight, None, 0),
                               atol=1e-4, rtol=1e-4)


# Non-finite inputs. torch.relu(NaN) is NaN and max_pool2d gives NaN for any window holding a NaN,
# so one NaN pixel poisons every pooled output whose receptive field holds it, one NaN weight (times
# the padding zeros too) its whole channel. Both cases below keep every pixel inside some pool window.
NONFINITE_CASES = [(2, 3, 10, 9, 9, 3, None, True), (2, 1, 64, 8, 8, 5, 0, True)]
NONFINITE_TOL = {torch.float32: 1e-4, torch.float16: 1e-2}
# The interpreter runs the kernel in numpy, which warns on NaN-producing arithmetic (inf - inf): expected here.
_NONFINITE_WARNINGS = "ignore:invalid value encountered:RuntimeWarning"


def check_nonfinite(gen, out, ref, dtype, what):
    """Same NaN mask as torch, same infinities, finite values within the usual tolerance."""
    msg = f"seed {gen.initial_seed()}, {what}"
    nan_out, nan_ref = out.isnan().cpu(), ref.isnan()
    assert torch.equal(nan_out, nan_ref), (
        f"{msg}: NaN mask differs: kernel {int(nan_out.sum())} NaNs, torch {int(nan_ref.sum())}, "
        f"{int((nan_out != nan_ref).sum())} positions differ")
    tol = NONFINITE_TOL[dtype]
    torch.testing.assert_close(out.cpu().double(), ref, atol=tol, rtol=tol, equal_nan=True,
                               msg=lambda m: f"{msg}: {m}")


@pytest.mark.filterwarnings(_NONFINITE_WARNINGS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("case", NONFINITE_CASES, ids=str)
@pytest.mark.parametrize("where", ["x", "weight", "bias"])
def test_nan_propagates_like_torch(gen, where, case, dtype, device):
    x, weight, bias, padding = make_inputs(gen, case, dtype, device)
    t = {"x": x, "weight": weight, "bias": bias}[where]
    idx = tuple(int(torch.randint(size, (1,), generator=gen)) for size in t.shape)
    t[idx] = float("nan")
    ref = reference(x, weight, bias, padding)
    assert ref.isnan().any() and not ref.isnan().all(), f"NaN at {where}{list(idx)} should reach some outputs"
    check_nonfinite(gen, conv2d_relu_maxpool2d(x, weight, bias, padding), ref, dtype, f"NaN at {where}{list(idx)}")


@pytest.mark.filterwarnings(_NONFINITE_WARNINGS)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_inf_matches_torch(gen, dtype, device):
    x, weight, bias, padding = make_inputs(gen, NONFINITE_CASES[0], dtype, device)
    x[0, 0, 4, 4] = float("inf")
    x[1, 2, 3, 6] = float("-inf")
    # Channel 0 of image 0: the centre tap makes conv output (4, 4) -inf, the left tap makes (4, 5)
    # +inf. Under the +inf bias torch gives NaN and +inf there, so pooled (2, 2) is NaN; a kernel that
    # added the bias after the pool max would give max(-inf, +inf, ..) + inf = +inf.
    weight[0, 0, 1, 1] = -0.5
    weight[0, 0, 1, 0] = 0.5
    bias[0] = float("inf")
    bias[1] = float("-inf")
    ref = reference(x, weight, bias, padding)
    assert ref[0, 0, 2, 2].isnan() and ref.isinf().any()
    check_nonfinite(gen, conv2d_relu_maxpool2d(x, weight, bias, padding), ref, dtype, "+-inf in x and bias")


@pytest.mark.parametrize(
    "x_shape, w_shape, padding, expected",
    [
        ((2, 3, 24, 24), (32, 3, 3, 3), None, (2, 32, 12, 12)),
        ((1, 3, 7, 9), (5, 3, 3, 3), 0, (1, 5, 2, 3)),
        ((4, 8, 11, 11), (33, 8, 5, 5), None, (4, 33, 5, 5)),
        ((1, 1, 8, 8), (2, 1, 7, 7), 0, (1, 2, 1, 1)),
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fake_impl_shape(x_shape, w_shape, padding, expected, dtype):
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(x_shape, dtype=dtype)
        weight = torch.empty(w_shape, dtype=dtype)
        bias = torch.empty(w_shape[0], dtype=dtype)
        out = torch.ops.tritonize.conv2d_relu_maxpool2d(x, weight, bias, padding)
    assert isinstance(out, FakeTensor)
    assert tuple(out.shape) == expected and out.dtype == dtype


def test_opcheck(gen):
    x, weight, bias, padding = make_inputs(gen, CASES[1], torch.float32, "cpu" if INTERPRET else "cuda")
    torch.library.opcheck(torch.ops.tritonize.conv2d_relu_maxpool2d.default, (x, weight, bias, padding))


def test_export_traces_the_op():
    class Block(torch.nn.Module):
        def forward(self, x, weight, bias):
            return conv2d_relu_maxpool2d(x, weight, bias)

    args = (torch.randn(2, 3, 8, 8), torch.randn(4, 3, 3, 3), torch.randn(4))
    ep = torch.export.export(Block(), args)
    targets = [node.target for node in ep.graph.nodes if node.op == "call_function"]
    assert targets == [torch.ops.tritonize.conv2d_relu_maxpool2d.default]


def _bad(x=(1, 3, 8, 8), w=(4, 3, 3, 3), b=(4,), dtype=torch.float32, w_dtype=None, padding=None):
    bias = None if b is None else torch.zeros(b, dtype=dtype)
    return torch.zeros(x, dtype=dtype), torch.zeros(w, dtype=w_dtype or dtype), bias, padding


@pytest.mark.parametrize(
    "args, exc, match",
    [
        (_bad(dtype=torch.float64), TypeError, r"float32, float16 or bfloat16, got torch.float64"),
        (_bad(dtype=torch.int32), TypeError, r"float32, float16 or bfloat16, got torch.int32"),
        (_bad(w_dtype=torch.float16), TypeError, r"weight dtype torch.float16 does not match x dtype torch.float32"),
        (_bad(w=(4, 5, 3, 3)), ValueError, r"Cin=5 input channels but x has 3"),
        (_bad(w=(4, 3, 2, 2)), ValueError, r"square odd kernel .* got 2x2"),
        (_bad(w=(4, 3, 3, 5)), ValueError, r"square odd kernel .* got 3x5"),
        (_bad(x=(3, 8, 8)), ValueError, r"x must be 4-D \[N, Cin, H, W\], got 3-D"),
        (_bad(w=(4, 3, 9)), ValueError, r"weight must be 4-D"),
        (_bad(b=(5,)), ValueError, r"bias must have shape \(4,\) = \[Cout\], got \(5,\)"),
        (_bad(b=(4, 1)), ValueError, r"bias must have shape \(4,\)"),
        (_bad(x=(1, 3, 2, 2), padding=0), ValueError, r"output would be 0x0"),
        (_bad(x=(1, 3, 1, 9), w=(4, 3, 5, 5)), ValueError, r"output would be 0x4"),
        (_bad(padding=-1), ValueError, r"padding must be a non-negative int, got -1"),
    ],
)
def test_bad_inputs_raise(args, exc, match):
    with pytest.raises(exc, match=match):
        conv2d_relu_maxpool2d(*args)


def test_bad_inputs_raise_through_op_and_non_tensor():
    x, weight, bias, _ = _bad(w=(4, 5, 3, 3))
    with pytest.raises(ValueError, match=r"Cin=5"):
        torch.ops.tritonize.conv2d_relu_maxpool2d(x, weight, bias)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor, got list"):
        conv2d_relu_maxpool2d([[1.0]], weight)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_mixed_devices_raise():
    x, weight, bias, _ = _bad()
    with pytest.raises(ValueError, match=r"weight is on cuda:0 but x is on cpu"):
        conv2d_relu_maxpool2d(x, weight.cuda(), bias)
