"""The kernels compiled for GPUs that are not here (sm_80, sm_90a), and the gate CI holds them to.

The compile check runs in its own process: it needs Triton's compiled mode, and these tests run with
TRITON_INTERPRET=1 (tests/conftest.py). The gate run compiles the CI subset's kept configs for both
targets and must hold. A second run adds two configs with --extra-config to one case on sm_80: one that
needs more shared memory than an A100 has, one that cannot compile at all. The gate must fail on exactly
those two, each named with its parameters.
"""
import json
import os
import subprocess
import sys
import time

import pytest
import torch

from tritonize.kernels.compile_sweep import main as compile_sweep_main
from tritonize.kernels.gpu_targets import TARGETS, occupancy, target_for_capability

MODULE = "tritonize.kernels.compile_sweep"
# 256 x 128 tiles at head dim 128 in bf16 with 4 stages: well over sm_80's 163 KB per block.
TOO_MUCH_SHARED = "flash_attention:BLOCK_M=256,BLOCK_N=128,num_warps=8,num_stages=4"
# tl.arange needs a power-of-two range: 48 rows cannot compile.
CANNOT_COMPILE = "flash_attention:BLOCK_M=48,BLOCK_N=64,num_warps=4,num_stages=2"


def compile_sweep(out, *args):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-P", "-m", MODULE, *args, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    print(f"\ncompile check {' '.join(args)}: {time.perf_counter() - started:.0f} s on {os.cpu_count()} cores")
    return proc, json.loads((out / "compile_check.json").read_text()), (out / "compile_check.md").read_text()


@pytest.fixture(scope="module")
def ci_gate(tmp_path_factory):
    return compile_sweep(tmp_path_factory.mktemp("gate"), "--subset", "ci", "--kept-only")


@pytest.fixture(scope="module")
def bad_configs(tmp_path_factory):
    return compile_sweep(tmp_path_factory.mktemp("bad"), "--case", "bf16 d128", "--target", "sm_80", "--kept-only",
                         "--extra-config", TOO_MUCH_SHARED, "--extra-config", CANNOT_COMPILE)


def test_every_kept_config_of_the_ci_subset_compiles_clean_for_both_gpus(ci_gate):
    proc, report, table = ci_gate
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = report["rows"]
    assert {row["target"] for row in rows} == set(TARGETS)
    assert {row["kernel"] for row in rows} == {"flash_attention", "conv_relu_pool"}
    assert rows and all(row["kept"] and row["compiled"] and not row["extra"] for row in rows)
    assert [row for row in rows if row["problems"]] == []
    for row in rows:
        assert row["spill_store_bytes"] == row["spill_load_bytes"] == 0, row
        assert 0 < row["shared_bytes"] <= row["max_shared_bytes"], row
        assert 0 < row["registers"] <= 255 and row["blocks_per_sm"] >= 1, row
        if row["expects_tensor_cores"]:
            ops = row["tensor_core_ops"]
            assert (ops["HGMMA"] if row["target"] == "sm_90a" and row["kernel"] == "flash_attention"
                    else sum(ops.values())) > 0, row
        else:  # fp32 dots are IEEE fp32: FMA, no tensor cores
            assert sum(row["tensor_core_ops"].values()) == 0, row
    assert "**Gate: holds.**" in table and "## flash_attention on sm_90a (H100, H200)" in table


def test_a_config_over_sm80s_shared_memory_fails_the_gate_named_with_its_parameters(bad_configs):
    proc, report, table = bad_configs
    assert proc.returncode == 1, proc.stderr[-3000:]
    failing = [row for row in report["rows"] if row["problems"]]
    assert len(failing) == 2 and all(row["extra"] for row in failing)
    over = next(row for row in failing if row["params"]["BLOCK_M"] == 256)
    assert over["shared_bytes"] > TARGETS["sm_80"].max_shared_per_block == over["max_shared_bytes"]
    assert "flash_attention/bf16 d128 causal + padding mask on sm_80 with BLOCK_M=256, BLOCK_N=128, num_warps=8, " \
           "num_stages=4" in proc.stderr
    assert f"of shared memory, sm_80 has {163 * 1024}" in proc.stderr and "**Gate: FAILS.**" in table


def test_a_config_that_cannot_compile_is_a_failing_row_with_the_compilers_first_error_line(bad_configs):
    proc, report, _ = bad_configs
    row = next(row for row in report["rows"] if row["params"].get("BLOCK_M") == 48)  # never skipped
    assert not row["compiled"] and row["error"] == "ValueError: arange's range must be a power of 2", row
    assert "with BLOCK_M=48, BLOCK_N=64, num_warps=4, num_stages=2: does not compile: ValueError: arange's range" \
           in proc.stderr


def test_occupancy_follows_registers_shared_memory_and_warps():
    h100 = TARGETS["sm_90a"]
    # 255 registers round up to 256 per thread, 8192 per warp: 8 warps fit, so two 4-warp blocks.
    assert (occupancy(h100, 255, 16 * 1024, 4).blocks_per_sm, occupancy(h100, 255, 16 * 1024, 4).limited_by) == (2, "registers")
    # 64 KB + the 1 KB each block keeps: three fit in 228 KB.
    assert occupancy(h100, 64, 64 * 1024, 4) .blocks_per_sm == 3
    assert occupancy(TARGETS["sm_80"], 64, 64 * 1024, 4).blocks_per_sm == 2  # 164 KB on an A100
    assert occupancy(h100, 16, 0, 32).limited_by == "warps" and occupancy(h100, 16, 0, 1).blocks_per_sm == 32
    over = occupancy(TARGETS["sm_80"], 64, 200 * 1024, 4)
    assert (over.blocks_per_sm, over.limited_by, over.fraction) == (0, "shared memory", 0.0)
    assert target_for_capability(9, 0) is h100
    with pytest.raises(ValueError, match=r"compute capability 8.9: this check knows sm_80 \(A100\)"):
        target_for_capability(8, 9)


def test_bad_invocations_exit_2_with_what_was_expected(monkeypatch, capsys):
    interpreted = subprocess.run([sys.executable, "-P", "-m", MODULE, "--subset", "ci"],
                                 env={**os.environ, "TRITON_INTERPRET": "1"}, capture_output=True, text=True, timeout=120)
    assert interpreted.returncode == 2 and "TRITON_INTERPRET=1 is set" in interpreted.stderr
    # The rest are refused before anything compiles, so they run here (the kernels, imported in
    # interpreter mode, are only planned).
    monkeypatch.delenv("TRITON_INTERPRET")
    for argv, expected in [
        (["--extra-config", "flash_attention:BLOCK_M=big"], "expected KERNEL:BLOCK_M=128,BLOCK_N=64,num_warps=4,num_stages=3"),
        (["--extra-config", "matmul:BLOCK_M=64"], "names kernel 'matmul': expected one of conv_relu_pool, flash_attention"),
        (["--case", "no such case"], "no case matches --case ['no such case']: the cases are flash_attention/fp16 d16"),
        (["--jobs", "0"], "--jobs must be at least 1, got 0"),
    ] + ([] if torch.cuda.is_available() else [
        (["--time", "--case", "fp16 d16"], "--time needs a CUDA GPU and torch sees none here"),
    ]):
        assert compile_sweep_main(argv) == 2, argv
        assert expected in capsys.readouterr().err, argv
