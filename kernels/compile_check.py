"""Compile one kernel launch for a GPU that is not here and read what the compiler made of it.

``compile_for_target`` takes a case (a launch the launchers really make, :mod:`.compile_cases`), one
autotune config and a target (sm_80 or sm_90a), and compiles it with Triton's own JIT path
(``JITFunction.warmup``: the same binder, specialization and ``triton.compile`` a launch runs), with
:class:`_CompileOnlyDriver` standing in for the CUDA driver. What it records, and where from:

* registers: the cubin's own ``REG`` attribute (``cuobjdump -res-usage``). It is the number the CUDA
  driver reads when it loads the kernel, the one Triton reports as ``n_regs`` on a GPU, written by the
  ptxas Triton picked for the target with the flags Triton passes. A kernel that spills tens of KB may
  use as few as 32: ptxas gives up on keeping the tile in registers, so spills are the number to gate.
* spill stores and loads: ptxas's own ``-v`` report, which Triton asks for and prints when
  ``knobs.nvidia.dump_ptxas_log`` is set.
* shared memory: ``metadata.shared``, the dynamic shared memory Triton launches the kernel with and
  compares with the GPU's opt-in limit before a launch.
* tensor-core instructions: ``HMMA`` (Ampere's mma.sync) and ``HGMMA`` (Hopper's warpgroup MMA) counted
  in the cubin's SASS (``cuobjdump -sass``), the instructions the GPU would run.

It needs Triton compiled mode: run it in a process without ``TRITON_INTERPRET=1``.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field

import triton
from triton.backends.compiler import GPUTarget

from .compile_cases import Case
from .gpu_targets import GpuTarget, occupancy
from .launch_plan import LaunchPlan, planning_for


class _CompileOnlyDriver:
    """Triton's driver, as far as JITFunction.warmup asks it: which target, which device, which stream.

    Each target gets its own device id so that the JIT's per-device caches keep the targets apart."""

    def __init__(self, target: GpuTarget):
        self._target = GPUTarget("cuda", target.capability, 32)
        self._device = target.capability

    def get_current_target(self):
        return self._target

    def get_current_device(self):
        return self._device

    def get_current_stream(self, device=None):
        return 0


@contextlib.contextmanager
def compiling_for(target: GpuTarget):
    """Make Triton's JIT compile for `target` (and never launch) inside the block."""
    from triton.runtime import driver

    previous = driver._active  # None until something asked for the real driver
    driver.set_active(_CompileOnlyDriver(target))
    try:
        yield
    finally:
        driver._active = previous


def config_label(config: triton.Config) -> str:
    blocks = " ".join(f"{k.removeprefix('BLOCK_')}={v}" for k, v in config.kwargs.items())
    return f"{blocks} w{config.num_warps} s{config.num_stages}"


def config_params(config: triton.Config) -> dict:
    return {**config.kwargs, "num_warps": config.num_warps, "num_stages": config.num_stages}


@dataclass(frozen=True)
class CompileFacts:
    """What one (case, config, target) compiled to; `problems` says why it must not be kept."""

    case: str
    kernel: str
    target: str
    config: str
    params: dict
    kept: bool  # the kernel's autotune prune keeps this config for this case
    extra: bool  # added with --extra-config, not in the kernel's autotune list
    expects_tensor_cores: bool
    expects_wgmma: bool
    compiled: bool
    error: str = ""  # the compiler's first error line, when it did not compile
    registers: int = 0
    spill_store_bytes: int = 0
    spill_load_bytes: int = 0
    stack_bytes: int = 0
    shared_bytes: int = 0
    max_shared_bytes: int = 0
    blocks_per_sm: int = 0
    occupancy: float = 0.0
    occupancy_limited_by: str = ""
    tensor_core_ops: dict = field(default_factory=dict)  # SASS opcode -> count
    compile_s: float = 0.0

    @property
    def problems(self) -> list[str]:
        if not self.compiled:
            return [f"does not compile: {self.error}"]
        found = []
        if self.spill_store_bytes or self.spill_load_bytes:
            found.append(f"spills ({self.spill_store_bytes} B stored, {self.spill_load_bytes} B loaded)")
        if self.shared_bytes > self.max_shared_bytes:
            found.append(f"needs {self.shared_bytes} B of shared memory, {self.target} has {self.max_shared_bytes}")
        if self.expects_tensor_cores and not sum(self.tensor_core_ops.values()):
            found.append("its dots use no tensor cores")
        if self.expects_wgmma and not self.tensor_core_ops.get("HGMMA"):
            found.append("its dots do not use Hopper's warpgroup MMA (no HGMMA)")
        return found

    def to_json(self) -> dict:
        return {**asdict(self), "problems": self.problems}


_PTXAS_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")
_RES_USAGE = re.compile(r"REG:(\d+) STACK:(\d+)")


def tool_path(name: str) -> str:
    """The path of one of the CUDA tools Triton's wheel carries (ptxas, ptxas_blackwell, cuobjdump)."""
    return getattr(triton.knobs.nvidia, name).path


def _cubin_facts(cubin: bytes, target: GpuTarget) -> tuple[int, int, dict]:
    """(registers, stack bytes, tensor-core opcode counts) of the cubin, by the wheel's cuobjdump."""
    with tempfile.TemporaryDirectory(prefix="tritonize-cubin-") as scratch:
        path = os.path.join(scratch, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        usage = subprocess.run([tool_path("cuobjdump"), "-res-usage", path], capture_output=True, text=True, check=True)
        sass = subprocess.run([tool_path("cuobjdump"), "-sass", path], capture_output=True, text=True, check=True)
    match = _RES_USAGE.search(usage.stdout)
    if match is None:
        raise RuntimeError(f"cuobjdump -res-usage printed no REG/STACK line:\n{usage.stdout}")
    ops = {op: len(re.findall(rf"\b{op}\.", sass.stdout)) for op in target.tensor_core_ops}
    return int(match.group(1)), int(match.group(2)), ops


def _first_error_line(error: BaseException, stderr: str) -> str:
    for line in stderr.splitlines():  # MLIR's diagnostics, when a pass failed
        if "error" in line.lower():
            return line.strip()
    # Triton's CompilationError is raised once per call level, each the cause of the next, and only the
    # innermost (or its own cause) says what went wrong; the outer ones hold the source excerpt.
    innermost = error
    while innermost.__cause__ is not None:
        innermost = innermost.__cause__
    message = getattr(innermost, "error_message", None) or str(innermost)
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return f"{type(innermost).__name__}: {lines[-1] if lines else 'no message'}"


@contextlib.contextmanager
def _captured_stderr_fd():
    """Collect what the compiler's C++ side writes to fd 2 (MLIR diagnostics) during the block."""
    with tempfile.TemporaryFile(mode="w+") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        text = io.StringIO()
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.write(sink.read())


def kept_configs(plan: LaunchPlan, target: GpuTarget) -> list[triton.Config]:
    """The configs the kernel's autotuner would try for this launch on `target` (after its early prune)."""
    kernel = plan.kernel
    if kernel.early_config_prune is None:
        return list(kernel.configs)
    named = dict(zip(kernel.arg_names, plan.args))
    with planning_for(target.capability):
        return kernel.early_config_prune(kernel.configs, named, **plan.constexprs)


def compile_for_target(case: Case, plan: LaunchPlan, config: triton.Config, target: GpuTarget, kept: bool,
                       extra: bool = False) -> CompileFacts:
    """`plan`: the case's launch, built on the CPU (case.build("cpu"))."""
    base = dict(case=case.key, kernel=case.kernel, target=target.name, config=config_label(config),
                params=config_params(config), kept=kept, extra=extra, expects_tensor_cores=case.expects_tensor_cores,
                expects_wgmma=target.wgmma and case.kernel == "flash_attention" and case.expects_tensor_cores,
                max_shared_bytes=target.max_shared_per_block)
    triton.knobs.nvidia.dump_ptxas_log = True  # ptxas -v's report, printed by Triton after each compile
    triton.knobs.compilation.always_compile = True  # a cached kernel would skip ptxas and its report
    # The JIT keeps compiled kernels in memory per specialization; two cases can share one (the same
    # dtypes, constexprs and divisibility), and a cached kernel would come back without a ptxas report.
    plan.kernel.fn.device_caches.clear()
    started = time.perf_counter()
    log = io.StringIO()
    try:
        with compiling_for(target), contextlib.redirect_stdout(log), _captured_stderr_fd() as stderr:
            compiled = plan.kernel.fn.warmup(*plan.args, grid=(1,), **plan.constexprs, **config.all_kwargs())
    except Exception as error:  # every compiler failure is a row of the report, never a skip
        return CompileFacts(**base, compiled=False, error=_first_error_line(error, stderr.getvalue()),
                            compile_s=time.perf_counter() - started)
    spills = _PTXAS_SPILLS.search(log.getvalue())
    if spills is None:
        raise RuntimeError(f"ptxas printed no spill line for {case.key} {config_label(config)} on {target.name}:\n"
                           f"{log.getvalue()}")
    registers, stack, ops = _cubin_facts(compiled.asm["cubin"], target)
    shared = compiled.metadata.shared
    occ = occupancy(target, registers, shared, config.num_warps)
    return CompileFacts(
        **base, compiled=True, registers=registers, spill_store_bytes=int(spills.group(1)),
        spill_load_bytes=int(spills.group(2)), stack_bytes=stack, shared_bytes=shared,
        blocks_per_sm=occ.blocks_per_sm, occupancy=round(occ.fraction, 3), occupancy_limited_by=occ.limited_by,
        tensor_core_ops=ops, compile_s=round(time.perf_counter() - started, 2))
