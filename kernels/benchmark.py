"""Correctness and timing of the Triton kernels on an NVIDIA GPU, in one run.

Made for a borrowed GPU machine: it lives beside the kernels and, like them, needs only torch and
triton (the "kernels import only torch and triton" contract in pyproject.toml). Usage, where
tritonize is installed (bench/gpu_kernels.py is the same by path, the way GPU machines are told to
run it):

    python -P bench/gpu_kernels.py --out docs/results/gpu-<date> [--quick]
    python -m tritonize.kernels.benchmark --out docs/results/gpu-<date> [--quick]
    python -m tritonize.kernels.benchmark --out /tmp/smoke --smoke  # no GPU: tiny shapes in the interpreter

On a GPU machine with torch and triton but nothing of tritonize's other dependencies, install the
checkout without them first: `pip install --no-deps --no-build-isolation -e .` (docs/gpu.md).

It writes `kernels.json` (device, versions, date, every row) and `kernels.md` (the tables). Every row
is checked against a float64 (conv) or fp32 SDPA (attention) reference with a tolerance per dtype and
says `ok`; the exit code is 1 when a row is off. GPU timing is `triton.testing.do_bench` (median of
CUDA-event timings after warm-up) on random inputs. `--smoke` runs the same code on the CPU with
shapes small enough for the interpreter, so the script itself is known to work before a GPU session
spends its minutes on it; its timings mean nothing. Without CUDA and without `--smoke` it exits 2.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .result_files import write_text_atomically

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# Max |error| allowed per dtype (outputs are O(1)); the kernel tests use the same bounds.
TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2, "bf16": 4e-2}


def median_gpu_ms(fn) -> float:
    """`fn`'s median time on the GPU: CUDA events after warm-up (triton.testing.do_bench)."""
    import triton

    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def _wall_ms(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


@dataclass(frozen=True)
class Mode:
    device: str
    time_ms: Callable[[Callable], float]
    conv_shapes: tuple  # (name, batch, cin, cout, hw, k)
    conv_dtypes: tuple[str, ...]
    attention_cases: tuple  # (seq, head_dim)
    attention_dtypes: tuple[str, ...]
    compare_to_libraries: bool  # torch.compile and the SDPA backends (GPU only)

    def attention_batch_heads(self, seq: int, head_dim: int) -> tuple[int, int]:
        if self.device == "cpu":
            return 1, 2
        return max(1, 16384 // seq) * 2, 2048 // head_dim  # about the same work per row of the table


def gpu_mode(quick: bool) -> Mode:
    seqs = (1024, 4096, 16384) if quick else (1024, 2048, 4096, 8192, 16384)
    return Mode("cuda", median_gpu_ms,
                (("cnn block1", 256, 3, 32, 24, 3), ("cnn block2", 256, 32, 64, 12, 3), ("64->128 @56", 32, 64, 128, 56, 3),
                 ("odd 3->33 k5 @11", 8, 3, 33, 11, 5)),  # sizes off every block multiple
                ("fp16",) if quick else ("fp16", "bf16", "fp32"),
                tuple((s, d) for d in (64, 128) for s in seqs) + ((1000, 64), (77, 32)),
                ("bf16",) if quick else ("fp16", "bf16"), compare_to_libraries=True)


def smoke_mode() -> Mode:
    # The interpreter's bf16 arithmetic is wrong, so fp32 and fp16 only; sizes off the block multiples.
    return Mode("cpu", _wall_ms, (("tiny 3->10", 2, 3, 10, 9, 3), ("tiny 4->33 k5", 1, 4, 33, 11, 5)), ("fp32", "fp16"),
                ((80, 16), (65, 32)), ("fp32", "fp16"), compare_to_libraries=False)


def _verdict(row: dict) -> dict:
    row["tolerance"] = TOLERANCE[row["dtype"]]
    row["ok"] = row["max_abs_err"] <= row["tolerance"]
    return row


def conv_rows(mode: Mode) -> list[dict]:
    from .conv_relu_pool import conv2d_relu_maxpool2d

    rows = []
    for name, n, cin, cout, hw, k in mode.conv_shapes:
        for dname in mode.conv_dtypes:
            dtype = DTYPES[dname]
            x = torch.randn(n, cin, hw, hw, device=mode.device, dtype=dtype)
            w = torch.randn(cout, cin, k, k, device=mode.device, dtype=dtype) * (1.0 / (cin * k * k)) ** 0.5
            b = torch.randn(cout, device=mode.device, dtype=dtype)
            eager = lambda: F.max_pool2d(F.relu(F.conv2d(x, w, b, padding=k // 2)), 2)  # noqa: E731
            ours = lambda: conv2d_relu_maxpool2d(x, w, b)  # noqa: E731
            ref = F.max_pool2d(F.relu(F.conv2d(x.double(), w.double(), b.double(), padding=k // 2)), 2)
            err = (ours().double() - ref).abs().max().item()
            t_ours = mode.time_ms(ours)
            row = {"op": "conv_relu_pool", "shape": name, "dtype": dname, "max_abs_err": err, "triton_ms": t_ours}
            if mode.compare_to_libraries:
                t_eager, t_compiled = mode.time_ms(eager), mode.time_ms(torch.compile(eager))
                flops = 2 * n * cout * hw * hw * cin * k * k
                bytes_moved = (x.numel() + w.numel() + n * cout * (hw // 2) ** 2) * x.element_size()
                row.update({"eager_ms": t_eager, "compile_ms": t_compiled, "speedup_vs_eager": t_eager / t_ours,
                            "speedup_vs_compile": t_compiled / t_ours, "tflops": flops / t_ours / 1e9,
                            "gb_s": bytes_moved / t_ours / 1e6})
            rows.append(_verdict(row))
    return rows


def _sdpa_ms(mode: Mode, q, k, v, causal: bool, backend) -> float | None:
    from torch.nn.attention import sdpa_kernel

    try:
        with sdpa_kernel(backend):
            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            return mode.time_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))
    except RuntimeError:
        return None  # that backend does not take these inputs


def attention_rows(mode: Mode) -> list[dict]:
    from torch.nn.attention import SDPBackend

    from .flash_attention import flash_attention

    backends = (("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
                ("efficient", SDPBackend.EFFICIENT_ATTENTION))
    rows = []
    for s, d in mode.attention_cases:
        for causal in (False, True):
            for dname in mode.attention_dtypes:
                b, h = mode.attention_batch_heads(s, d)
                q, k, v = (torch.randn(b, h, s, d, device=mode.device, dtype=DTYPES[dname]) for _ in range(3))
                out = flash_attention(q, k, v, causal=causal)
                ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=causal)
                err = (out.float() - ref).abs().max().item()
                flops = 4 * b * h * s * s * d * (0.5 if causal else 1.0)
                t = mode.time_ms(lambda: flash_attention(q, k, v, causal=causal))
                row = {"op": "flash_attention", "batch": b, "heads": h, "seq": s, "head_dim": d,
                       "causal": causal, "dtype": dname, "max_abs_err": err, "triton_ms": t,
                       "triton_tflops": flops / t / 1e9}
                if mode.compare_to_libraries:
                    for name, backend in backends:
                        ms = _sdpa_ms(mode, q, k, v, causal, backend)
                        row[f"sdpa_{name}_tflops"] = flops / ms / 1e9 if ms else None
                    torch.cuda.empty_cache()
                rows.append(_verdict(row))
    return rows


def _md_table(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    fmt = lambda v: f"{v:.4g}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)] +
                     ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="fewer shapes and dtypes (GPU)")
    parser.add_argument("--smoke", action="store_true", help="no GPU: tiny shapes in Triton's CPU interpreter")
    args = parser.parse_args(argv)
    if args.smoke:
        # Before the kernels are imported: their @triton.jit functions are defined for the interpreter.
        os.environ["TRITON_INTERPRET"] = "1"
        mode = smoke_mode()
    elif torch.cuda.is_available():
        mode = gpu_mode(args.quick)
    else:
        print("no CUDA device: these checks and timings need an NVIDIA GPU (or --smoke for a CPU run of the "
              "script itself)", file=sys.stderr)
        return 2
    import triton

    device = torch.cuda.get_device_name(0) if mode.device == "cuda" else f"CPU, Triton interpreter ({platform.processor() or platform.machine()})"
    info = {"device": device, "mode": "smoke" if args.smoke else "quick" if args.quick else "full",
            "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    results = {"info": info, "conv_relu_pool": conv_rows(mode), "flash_attention": attention_rows(mode)}
    failed = [r for rows in (results["conv_relu_pool"], results["flash_attention"]) for r in rows if not r["ok"]]
    results["all_ok"] = not failed
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(args.out / "kernels.json", json.dumps(results, indent=2))
    md = (f"# Triton kernels on {info['device']} ({info['date']}, {info['mode']})\n\ntorch {info['torch']}, "
          f"triton {info['triton']}, CUDA {info['cuda']}\n\n"
          f"Every row within its dtype's tolerance: {'yes' if not failed else f'**no** ({len(failed)} rows)'}\n\n"
          f"## conv + ReLU + max-pool\n\n{_md_table(results['conv_relu_pool'])}\n\n"
          f"## flash attention forward\n\n{_md_table(results['flash_attention'])}\n")
    write_text_atomically(args.out / "kernels.md", md)
    print(md)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
