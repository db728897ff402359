"""The compile check's report: compile_check.json (every row, for tools) and compile_check.md (the tables).

Each file is written under a temporary name and renamed into place (result_files.py), so neither is
ever left half-written.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path

import triton

from .compile_check import tool_path
from .gpu_targets import TARGETS
from .result_files import write_text_atomically


def _tool_version(name: str) -> str:
    try:
        out = subprocess.run([tool_path(name), "--version"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        return f"unknown ({error})"
    return out.strip().splitlines()[-2] if len(out.strip().splitlines()) >= 2 else out.strip()


def _kb(n: int) -> str:
    return f"{n / 1024:.0f}"


def _ops(facts) -> str:
    return ", ".join(f"{op} {n}" for op, n in facts.tensor_core_ops.items() if n) or "none (FMA)"


def _verdict(facts) -> str:
    if facts.problems:
        return ("**FAILS:** " if facts.kept else "pruned: ") + "; ".join(facts.problems)
    return "ok" if facts.kept else "pruned (would pass)"


def _table(rows, timings) -> list[str]:
    timed = {(t.case, t.config): t for t in timings or []}
    head = "| case | config | kept | registers | spills stored / loaded (B) | shared KB (limit) | blocks/SM, occupancy | tensor-core instructions |"
    rule = "|---|---|---|---:|---:|---:|---|---|"
    if timed:
        head += " GPU median ms | driver regs / spills |"
        rule += "---:|---:|"
    lines = [head + " verdict |", rule + "---|"]
    for f in rows:
        if not f.compiled:
            cells = f"| {f.case.split('/', 1)[1]} | {f.config} | {'yes' if f.kept else 'no'} | - | - | - | - | - |"
        else:
            cells = (f"| {f.case.split('/', 1)[1]} | {f.config} | {'yes' if f.kept else 'no'} | {f.registers} | "
                     f"{f.spill_store_bytes} / {f.spill_load_bytes} | {_kb(f.shared_bytes)} ({_kb(f.max_shared_bytes)}) | "
                     f"{f.blocks_per_sm} ({f.occupancy:.0%}, {f.occupancy_limited_by}) | {_ops(f)} |")
        if timed:  # `timings` holds this table's target only
            t = timed.get((f.case, f.config))
            cells += (f" {t.median_ms:.4f} | {t.driver_registers} / {t.driver_spills} |" if t and t.ok
                      else f" {t.error if t else '-'} | - |")
        lines.append(cells + f" {_verdict(f)} |")
    return lines


def markdown(results, failures, timings, meta: dict) -> str:
    kept = [f for f in results if f.kept]
    lines = [
        f"# Kernel compile check, {meta['date']}",
        "",
        f"Made by `{meta['command']}` on {meta['host']} in {meta['wall_s']:.0f} s: triton {meta['triton']}, "
        f"ptxas {meta['ptxas']['sm_80']} (sm_80) and {meta['ptxas']['sm_90a']} (sm_90a), the ones Triton itself picks.",
        "",
        "Every case is a launch the kernels' launchers make, compiled with every autotune config for each GPU, "
        "no GPU needed. `kept` says whether the kernel's autotune prune keeps the config for that case on that GPU. "
        "A kept config must compile, must not spill, must fit the GPU's shared memory and must run its 16-bit dots "
        "on tensor cores (HGMMA, Hopper's warpgroup MMA, for flash attention on sm_90a). fp32 dots are IEEE fp32, "
        "run with FMA instructions, so they use none. Registers are the cubin's own count; occupancy is the blocks one "
        "SM holds at once from registers, shared memory and warps, as a share of the SM's 64 warp slots.",
        "",
        f"**Gate: {'holds' if not failures else 'FAILS'}.** {len(kept) - len(failures)} of {len(kept)} kept "
        f"configurations pass; {len(results) - len(kept)} pruned ones were compiled for the record.",
    ]
    for kernel in sorted({f.kernel for f in results}):
        for target in TARGETS.values():
            rows = [f for f in results if f.kernel == kernel and f.target == target.name]
            if not rows:
                continue
            lines += ["", f"## {kernel} on {target.name} ({target.gpus})", ""]
            lines += _table(rows, [t for t in timings or [] if t.target == target.name])
    return "\n".join(lines) + "\n"


def write_report(folder: str, results, failures, timings, command: str, wall_s: float) -> list[Path]:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": dt.date.today().isoformat(),
        "command": command,
        "host": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
        "triton": triton.__version__,
        "ptxas": {"sm_80": _tool_version("ptxas"), "sm_90a": _tool_version("ptxas_blackwell")},
        "wall_s": round(wall_s, 1),
    }
    data = {**meta, "gate": {"kept": sum(f.kept for f in results), "failures": len(failures)},
            "rows": [f.to_json() for f in results],
            "timings": [t.to_json() for t in timings] if timings is not None else None}
    paths = [out / "compile_check.json", out / "compile_check.md"]
    write_text_atomically(paths[0], json.dumps(data, indent=1) + "\n")
    write_text_atomically(paths[1], markdown(results, failures, timings, meta))
    return paths
