"""On a CUDA GPU: time every autotune config of every compile-check case, beside the static numbers.

The compile check predicts from the compiler's output alone (spills hurt, wgmma is used, this config
cannot fit). This measures each prediction against the GPU: the median time of each config launched
alone (``triton.testing.do_bench``, CUDA events after warm-up, on random inputs), the register and
spill counts the CUDA driver reports for the loaded kernel (``n_regs`` / ``n_spills``: they should
equal the static ones for this GPU's target), and each config's largest difference from the case's
first config's output, so that a fast but wrong config shows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .benchmark import median_gpu_ms
from .compile_check import config_label
from .gpu_targets import target_for_capability


@dataclass(frozen=True)
class ConfigTiming:
    case: str
    target: str
    config: str
    ok: bool
    error: str = ""
    median_ms: float = 0.0
    driver_registers: int = 0
    driver_spills: int = 0
    max_diff_vs_first: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def _time_one(case, plan, config, target, reference):
    def launch():
        return plan.kernel.fn[plan.grid](*plan.args, **plan.constexprs, **config.all_kwargs())

    try:
        compiled = launch()
        torch.cuda.synchronize()
        out = plan.out.float()
        diff = 0.0 if reference is None else float((out - reference).abs().max())
        median = median_gpu_ms(launch)
    except Exception as error:  # OutOfResources and friends: a row, never a skip
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        return ConfigTiming(case.key, target.name, config_label(config), False, f"{type(error).__name__}: {first}"), reference
    timing = ConfigTiming(case.key, target.name, config_label(config), True, median_ms=median,
                          driver_registers=compiled.n_regs, driver_spills=compiled.n_spills, max_diff_vs_first=diff)
    return timing, out if reference is None else reference


def require_gpu() -> None:
    if not torch.cuda.is_available():
        raise RuntimeError("--time needs a CUDA GPU and torch sees none here (torch.cuda.is_available() is False). "
                           "Run the static check without --time, or run it on a GPU machine (docs/gpu.md)")


def time_configs(cases, progress=None) -> list[ConfigTiming]:
    require_gpu()
    target = target_for_capability(*torch.cuda.get_device_capability())
    timings = []
    for case in cases:
        plan = case.build("cuda")
        reference = None
        for config in plan.kernel.configs:
            timing, reference = _time_one(case, plan, config, target, reference)
            timings.append(timing)
            if progress is not None:
                result = f"{timing.median_ms:.4f} ms" if timing.ok else timing.error
                print(f"timed {case.key} {timing.config} on {target.name}: {result}", file=progress, flush=True)
    return timings
