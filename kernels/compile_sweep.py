"""Compile every kernel configuration for sm_80 and sm_90a on a machine without a GPU, and gate on it.

    python -P -m tritonize.kernels.compile_sweep --out docs/results/compile-check-<date>   # the full sweep
    python -P -m tritonize.kernels.compile_sweep --subset ci                               # the CI gate's set
    python -P -m tritonize.kernels.compile_sweep --time --out docs/results/gpu-configs-<date>  # on a GPU

Each case (:mod:`.compile_cases`) is compiled with each of its kernel's autotune configs, for each
target, in parallel processes; every result is a row, a failure to compile included. The gate: a config
the kernel's autotune prune keeps for a case must compile, must not spill, must fit the target's shared
memory and must use tensor cores where the dtype calls for them (HGMMA for flash attention's 16-bit
dots on sm_90a). Pruned configs are compiled too, so the report shows what the prune keeps away. Exit
status: 0 when the gate holds, 1 when it does not (each failing row is printed with its parameters),
2 for a usage error.

``--extra-config KERNEL:BLOCK_M=..,num_warps=..`` adds a config to a kernel's list as if it were in the
autotune list (kept for every case): how a new config is checked before it goes in. ``--time`` (a
CUDA GPU only) also launches every config of every case on the GPU and records its median time and the
driver's own register and spill counts beside the static numbers.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field

USAGE_ERROR = 2


@dataclass(frozen=True)
class Job:
    case: str
    target: str
    config_index: int  # into the kernel's autotune list; -1 for an extra config
    kept: bool
    extra: dict = field(default_factory=dict)  # an --extra-config's parameters

    @property
    def is_extra(self) -> bool:
        return self.config_index < 0


def _config(kernel, job: Job):
    import triton

    if not job.is_extra:
        return kernel.configs[job.config_index]
    blocks = {k: v for k, v in job.extra.items() if k not in ("num_warps", "num_stages")}
    return triton.Config(blocks, num_warps=job.extra.get("num_warps", 4), num_stages=job.extra.get("num_stages", 3))


def run_job(job: Job):
    """One compile, in a worker process (spawned: a fresh interpreter, so nothing of a parent's Triton state)."""
    from .compile_cases import case_named
    from .compile_check import compile_for_target
    from .gpu_targets import target_named

    case = case_named(job.case)
    plan = case.build("cpu")
    return compile_for_target(case, plan, _config(plan.kernel, job), target_named(job.target), job.kept,
                              extra=job.is_extra)


def _failed_row(job: Job, error: BaseException):
    """A job whose check itself broke is a row that fails the gate, not a lost sweep."""
    from .compile_check import CompileFacts

    return CompileFacts(case=job.case, kernel=job.case.split("/", 1)[0], target=job.target,
                        config=str(job.extra) if job.is_extra else f"config #{job.config_index}",
                        params=job.extra, kept=job.kept, extra=job.is_extra, expects_tensor_cores=False,
                        expects_wgmma=False, compiled=False, error=f"the check itself failed: {type(error).__name__}: {error}")


def parse_extra_config(text: str) -> tuple[str, dict]:
    """'flash_attention:BLOCK_M=256,BLOCK_N=128,num_warps=8,num_stages=4' -> (kernel, params)."""
    kernel, sep, rest = text.partition(":")
    params = {}
    for item in rest.split(",") if sep else []:
        name, eq, value = item.partition("=")
        if not eq or not value.strip().isdigit():
            break
        params[name.strip()] = int(value)
    else:
        if params and any(k.startswith("BLOCK_") for k in params):
            return kernel, params
    raise ValueError(f"--extra-config {text!r}: expected KERNEL:BLOCK_M=128,BLOCK_N=64,num_warps=4,num_stages=3 "
                     "(integer values, at least one BLOCK_ size)")


def plan_jobs(cases, targets, extras: list[tuple[str, dict]], kept_only: bool = False) -> list[Job]:
    from .compile_check import kept_configs

    known = {case.kernel for case in cases}
    for kernel, _ in extras:
        if kernel not in known:
            raise ValueError(f"--extra-config names kernel {kernel!r}: expected one of {', '.join(sorted(known))}")
    jobs = []
    for case in cases:
        plan = case.build("cpu")
        for target in targets:
            kept = kept_configs(plan, target)
            for index, config in enumerate(plan.kernel.configs):
                if config in kept or not kept_only:
                    jobs.append(Job(case.key, target.name, index, config in kept))
            for kernel, params in extras:
                if kernel == case.kernel:
                    jobs.append(Job(case.key, target.name, -1, True, params))
    return jobs


def sweep(jobs: list[Job], workers: int, progress=sys.stderr) -> list:
    """Compile every job, `workers` at a time; results in the jobs' order."""
    results = [None] * len(jobs)
    context = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            try:
                facts = future.result()
            except Exception as error:
                facts = _failed_row(jobs[futures[future]], error)
            results[futures[future]] = facts
            summary = (f"{facts.registers} registers, {facts.spill_store_bytes} B spilled, "
                       f"{facts.shared_bytes // 1024} KB shared" if facts.compiled else facts.error)
            print(f"[{done}/{len(jobs)} {time.perf_counter() - started:.0f}s] {facts.case} {facts.config} "
                  f"{facts.target}: {summary}", file=progress, flush=True)
    return results


def gate_failures(results) -> list:
    return [facts for facts in results if facts.kept and facts.problems]


def _parser() -> argparse.ArgumentParser:
    from .gpu_targets import TARGETS

    parser = argparse.ArgumentParser(prog="python -P -m tritonize.kernels.compile_sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--subset", choices=["all", "ci"], default="all", help="every case, or the CI gate's cases")
    parser.add_argument("--case", action="append", default=[], metavar="TEXT",
                        help="only the cases whose name holds TEXT (repeatable)")
    parser.add_argument("--target", action="append", choices=list(TARGETS), help="only these targets (repeatable)")
    parser.add_argument("--extra-config", action="append", default=[], metavar="KERNEL:PARAMS",
                        help="add a config to a kernel's list, kept for every case (repeatable)")
    parser.add_argument("--kept-only", action="store_true",
                        help="compile only the configs the prune keeps (the gate's own set; faster)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiles at once (default: all cores)")
    parser.add_argument("--out", help="write compile_check.json and compile_check.md into this folder")
    parser.add_argument("--time", action="store_true", help="on a CUDA GPU: also time every config of every case")
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("error: TRITON_INTERPRET=1 is set: the compile check compiles for a GPU and needs Triton's compiled "
              "mode. Run it without TRITON_INTERPRET (env -u TRITON_INTERPRET python -P -m "
              "tritonize.kernels.compile_sweep ...)", file=sys.stderr)
        return USAGE_ERROR
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return USAGE_ERROR
    try:
        extras = [parse_extra_config(text) for text in args.extra_config]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # the workers inherit it; it silences a warning
    from .compile_cases import CASES
    from .compile_report import write_report
    from .gpu_targets import TARGETS

    cases = [c for c in CASES if (args.subset == "all" or c.in_ci) and (not args.case or any(t in c.key for t in args.case))]
    if not cases:
        print(f"error: no case matches --case {args.case}: the cases are {', '.join(c.key for c in CASES)}", file=sys.stderr)
        return USAGE_ERROR
    targets = [TARGETS[name] for name in (args.target or TARGETS)]
    try:
        jobs = plan_jobs(cases, targets, extras, args.kept_only)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return USAGE_ERROR
    if args.time:
        from .config_timing import require_gpu

        try:
            require_gpu()
        except RuntimeError as error:
            print(f"error: {error}", file=sys.stderr)
            return USAGE_ERROR
    print(f"compiling {len(jobs)} (case, config, target) combinations on {args.jobs} processes", file=sys.stderr)
    started = time.perf_counter()
    results = sweep(jobs, args.jobs)
    timings = None
    if args.time:  # after the sweep: its compiles fill Triton's cache, so the timed launches do not compile again
        from .config_timing import time_configs

        timings = time_configs(cases, progress=sys.stderr)
    failures = gate_failures(results)
    if args.out:
        command = "python -P -m tritonize.kernels.compile_sweep " + " ".join(argv if argv is not None else sys.argv[1:])
        paths = write_report(args.out, results, failures, timings, command, time.perf_counter() - started)
        print(f"wrote {', '.join(str(p) for p in paths)}", file=sys.stderr)
    kept = sum(f.kept for f in results)
    if failures:
        print(f"FAILED: {len(failures)} of the {kept} kept configurations break the rules:", file=sys.stderr)
        for facts in failures:
            params = ", ".join(f"{k}={v}" for k, v in facts.params.items())
            print(f"  {facts.case} on {facts.target} with {params}: {'; '.join(facts.problems)}", file=sys.stderr)
        return 1
    print(f"ok: all {kept} kept configurations compile for {', '.join(t.name for t in targets)} with no spills, "
          f"within shared memory and on tensor cores where expected"
          + (f" ({len(results) - kept} pruned ones compiled for the record)" if len(results) > kept else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
