"""`tritonize run`: the main job, every stage in order on the CPU.

export (reusing current artifacts) -> optimize -> repository -> real server -> a checked request per
model through the client -> the quick benchmark. Each stage reads what the one before wrote.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import (
    DEFAULT_REPOSITORY,
    DEFAULT_RESULTS,
    DEFAULT_ROOT,
    INDEX_FILE,
    ONNX_FILE,
    ArtifactError,
    check_replaceable,
    load_manifest,
    model_dir,
)
from ..export.optimize import VARIANTS, optimize_model
from ..export.parity import ParityError
from ..export.runtime import ort_session, run_ort, run_torch
from ..export.stage import export_model, load_module
from ..model_repository.writer import build_repository
from ..models import get_spec
from ..serving.server import TritonServer
from .run import DEFAULT_MODELS


@dataclass
class RunOptions:
    models: tuple[str, ...] = DEFAULT_MODELS
    artifacts: Path = DEFAULT_ROOT
    repository: Path = DEFAULT_REPOSITORY
    results: Path = DEFAULT_RESULTS
    bench: bool = True
    force: bool = False


def ensure_artifacts(spec, root: Path, force: bool, step: Callable[[str], None]) -> str:
    """Export and optimize unless current artifacts (same spec, intact files) are already there;
    returns what was done and why, for the run's table."""
    if force:
        done = "rebuilt (--force)"
    else:
        try:
            manifest = load_manifest(root, spec)
        except ArtifactError as e:
            done = "built" if not model_dir(root, spec).exists() else f"rebuilt: {e.problem}"
        else:
            optimized = manifest.get("optimize", {}).get("variants", {})
            missing = [v for v in VARIANTS if v not in optimized]  # all of them, or the ones added since
            if not missing:
                return "reused"
            optimize_model(spec, root, step=step)
            return ("optimized (the export was current)" if not optimized
                    else f"optimized again (the export was current; no {', '.join(missing)} variant)")
    export_model(spec, root, step=step)
    optimize_model(spec, root, step=step)
    return done


def _reference(spec, artifacts: Path, repository: Path):
    """The in-process twin of a served model: the same ONNX file through ONNX Runtime, or for a
    kernel model, the plain PyTorch model with the same weights."""
    if spec.runtime == "torch":
        base = get_spec(spec.base_model)
        module = load_module(base, artifacts / base.name)
        return lambda x: run_torch(module, base, x)
    session = ort_session(repository / spec.name / "1" / ONNX_FILE)
    return lambda x: run_ort(session, spec, x)


def check_served(server: TritonServer, artifacts: Path, repository: Path, names: list[str]) -> list[dict]:
    """One request per model through `tritonize.client`, compared with its in-process twin."""
    from ..client import TritonClient

    rows = []
    rng = np.random.default_rng()
    with TritonClient(server.grpc_url) as client:
        for name in names:
            spec = get_spec(name)
            inputs = spec.example_inputs(2, spec.default_seq(), rng)
            t0 = time.perf_counter()
            served = client.infer(name, inputs)
            ms = (time.perf_counter() - t0) * 1e3
            expected = _reference(spec, artifacts, repository)(inputs)
            # A per-row value ([batch]) is served as Triton's dims [1], so compare in the model's own shape.
            err = max(float(np.abs(served[o].reshape(expected[o].shape) - expected[o]).max()) for o in spec.output_names)
            tol = spec.tolerance("fp32")
            rows.append({"model": name, "max_abs_err": err, "ok": err <= tol.atol + tol.rtol, "latency_ms": ms})
    return rows


def run_main_job(opts: RunOptions, step: Callable[[str], None] = lambda _: None) -> dict:
    specs = [get_spec(n) for n in opts.models]
    bases = list(dict.fromkeys(get_spec(s.base_model) if s.base_model else s for s in specs))
    # What would fail only after minutes of exporting fails now.
    check_replaceable(opts.repository, INDEX_FILE)
    if opts.bench:
        from ..bench.suite import check_results_root

        check_results_root(opts.results)
    report: dict = {"artifacts": {}}
    for spec in bases:
        step(f"artifacts: {spec.name}")
        report["artifacts"][spec.name] = ensure_artifacts(spec, opts.artifacts, opts.force,
                                                          lambda msg, n=spec.name: step(f"{n}: {msg}"))
    step("repository")
    build_repository(specs, opts.artifacts, opts.repository, "cpu")
    step("starting tritonserver")
    with TritonServer(opts.repository, [s.name for s in specs]) as server:
        step("one request per model through the client")
        report["served"] = check_served(server, opts.artifacts, opts.repository, [s.name for s in specs])
    bad = [r for r in report["served"] if not r["ok"]]
    if bad:
        raise ParityError("served outputs differ from in-process: " +
                           ", ".join(f"{r['model']} (max abs err {r['max_abs_err']:.3g})" for r in bad))
    return report


def run_bench(opts: RunOptions, progress) -> Path:
    """The quick benchmark of the run's ONNX models (a kernel model's base stands in for it: the
    kernels run in Triton's interpreter on a CPU, checked in the tests but not timed)."""
    from ..bench.suite import SuiteOptions, run_suite

    # A user's model goes by its reference: the in-process benchmark resolves it again in a process of its own.
    bases = list(dict.fromkeys(s.base_model or s.reference for s in map(get_spec, opts.models)))
    suite = SuiteOptions.quick_defaults(models=bases, artifacts=opts.artifacts, results_root=opts.results)
    return run_suite(suite, progress)
