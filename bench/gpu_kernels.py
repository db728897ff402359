"""Correctness and timing of the Triton kernels on an NVIDIA GPU, in one run.

Made for a borrowed GPU machine (torch + triton only, no tritonize install): it imports `kernels/`
straight from the checkout. Usage, from the repository root:

    python bench/gpu_kernels.py --out bench/results/gpu-<date> [--quick]

It writes `kernels.json` (device, versions, date, every row) and `kernels.md` (the tables). Timing is
`triton.testing.do_bench` (median of CUDA-event timings after warm-up) on random inputs.
Without CUDA it exits with code 2 and says so.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def _bench(fn) -> float:
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def conv_rows(quick: bool) -> list[dict]:
    from kernels.conv_relu_pool import conv2d_relu_maxpool2d

    shapes = [  # (name, batch, cin, cout, hw, k)
        ("cnn block1", 256, 3, 32, 24, 3),
        ("cnn block2", 256, 32, 64, 12, 3),
        ("64->128 @56", 32, 64, 128, 56, 3),
    ]
    rows = []
    for name, n, cin, cout, hw, k in shapes:
        for dname in (["fp16"] if quick else ["fp16", "bf16", "fp32"]):
            dtype = DTYPES[dname]
            x = torch.randn(n, cin, hw, hw, device="cuda", dtype=dtype)
            w = torch.randn(cout, cin, k, k, device="cuda", dtype=dtype) * (1.0 / (cin * k * k)) ** 0.5
            b = torch.randn(cout, device="cuda", dtype=dtype)
            eager = lambda: F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=k // 2)), 2)  # noqa: E731
            ours = lambda: conv2d_relu_maxpool2d(x, w, b)  # noqa: E731
            ref = F.max_pool2d(F.relu(F.conv2d(x.double(), w.double(), b.double(), padding=k // 2)), 2)
            err = (ours().double() - ref).abs().max().item()
            compiled = torch.compile(eager)
            t_ours, t_eager, t_compiled = _bench(ours), _bench(eager), _bench(compiled)
            flops = 2 * n * cout * hw * hw * cin * k * k
            bytes_moved = (x.numel() + w.numel() + n * cout * (hw // 2) ** 2) * x.element_size()
            rows.append({"op": "conv_relu_pool", "shape": name, "dtype": dname, "max_abs_err": err,
                         "triton_ms": t_ours, "eager_ms": t_eager, "compile_ms": t_compiled,
                         "speedup_vs_eager": t_eager / t_ours, "speedup_vs_compile": t_compiled / t_ours,
                         "tflops": flops / t_ours / 1e9, "gb_s": bytes_moved / t_ours / 1e6})
    return rows


def _sdpa_ms(q, k, v, causal: bool, backend) -> float | None:
    from torch.nn.attention import sdpa_kernel

    try:
        with sdpa_kernel(backend):
            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            return _bench(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
    except RuntimeError:
        return None  # that backend does not take these inputs


def attention_rows(quick: bool) -> list[dict]:
    from torch.nn.attention import SDPBackend

    from kernels.flash_attention import flash_attention

    rows = []
    seqs = [1024, 4096, 16384] if quick else [1024, 2048, 4096, 8192, 16384]
    for d in (64, 128):
        for causal in (False, True):
            for s in seqs:
                for dname in (["bf16"] if quick else ["fp16", "bf16"]):
                    b, h = max(1, 16384 // s) * 2, 2048 // d
                    q, k, v = (torch.randn(b, h, s, d, device="cuda", dtype=DTYPES[dname]) for _ in range(3))
                    out = flash_attention(q, k, v, causal=causal)
                    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)
                    err = (out.float() - ref).abs().max().item()
                    flops = 4 * b * h * s * s * d * (0.5 if causal else 1.0)
                    t = _bench(lambda: flash_attention(q, k, v, causal=causal))
                    row = {"op": "flash_attention", "batch": b, "heads": h, "seq": s, "head_dim": d,
                           "causal": causal, "dtype": dname, "max_abs_err": err, "triton_ms": t,
                           "triton_tflops": flops / t / 1e9}
                    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                                          ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
                        ms = _sdpa_ms(q, k, v, causal, backend)
                        row[f"sdpa_{name}_tflops"] = flops / ms / 1e9 if ms else None
                    rows.append(row)
                    torch.cuda.empty_cache()
    return rows


def _md_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)] +
                     ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: these checks and timings need an NVIDIA GPU", file=sys.stderr)
        return 2
    import triton

    info = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    results = {"info": info, "conv_relu_pool": conv_rows(args.quick), "flash_attention": attention_rows(args.quick)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.json").write_text(json.dumps(results, indent=2))
    md = (f"# Triton kernels on {info['device']} ({info['date']})\n\ntorch {info['torch']}, triton {info['triton']}, "
          f"CUDA {info['cuda']}\n\n## conv + ReLU + max-pool\n\n{_md_table(results['conv_relu_pool'])}\n\n"
          f"## flash attention forward\n\n{_md_table(results['flash_attention'])}\n")
    (args.out / "kernels.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
