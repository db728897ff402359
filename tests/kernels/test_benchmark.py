"""kernels/benchmark.py, the one-call GPU check, run here in its --smoke mode (Triton's interpreter, tiny
shapes) so that the script is known to work before a GPU session spends its minutes on it; and
bench/gpu_kernels.py, the entry GPU machines run it by, by path."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tritonize
from tritonize.kernels.benchmark import TOLERANCE, _verdict

ROOT = Path(tritonize.__file__).resolve().parent


def _run(*args, by_path: bool = False):
    entry = [str(ROOT / "bench" / "gpu_kernels.py")] if by_path else ["-m", "tritonize.kernels.benchmark"]
    return subprocess.run([sys.executable, "-P", *entry, *args], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})


@pytest.mark.heavy  # every kernel row in the interpreter
def test_smoke_run_checks_every_kernel_row_and_writes_both_files(tmp_path):
    proc = _run("--smoke", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((tmp_path / "kernels.json").read_text())
    assert results["info"]["mode"] == "smoke" and results["all_ok"] is True
    conv, attention = results["conv_relu_pool"], results["flash_attention"]
    assert {r["dtype"] for r in conv} == {r["dtype"] for r in attention} == {"fp32", "fp16"}
    assert {r["causal"] for r in attention} == {False, True}
    assert any(r["seq"] % 64 for r in attention)  # a length that is not a multiple of the block
    for row in conv + attention:
        assert row["ok"] is True and 0 <= row["max_abs_err"] <= row["tolerance"] and row["triton_ms"] > 0
    assert "Every row within its dtype's tolerance: yes" in (tmp_path / "kernels.md").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given without a GPU")
@pytest.mark.parametrize("by_path", [False, True], ids=["module", "bench/gpu_kernels.py by path"])
def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path, by_path):
    proc = _run("--out", str(tmp_path / "out"), by_path=by_path)
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr and "--smoke" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_row_over_its_dtype_tolerance_is_not_ok():
    assert _verdict({"dtype": "bf16", "max_abs_err": TOLERANCE["bf16"] * 1.01})["ok"] is False
    assert _verdict({"dtype": "fp16", "max_abs_err": TOLERANCE["fp16"]})["ok"] is True
