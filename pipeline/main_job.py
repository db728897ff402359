"""`tritonize run`: the main job, every stage in order on the CPU.

current artifacts (export and optimize what is missing) -> repository -> real server -> a checked
request per model through the client -> the quick benchmark. Each stage reads what the one before
wrote; each model's artifacts are loaded and verified once, then handed on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import DEFAULT_REPOSITORY, DEFAULT_RESULTS, DEFAULT_ROOT, INDEX_FILE, ONNX_FILE, check_replaceable
from ..export.optimize import chosen_variant
from ..export.parity import ParityError
from ..export.runtime import ort_session, run_ort, run_torch
from ..export.stage import load_module
from ..model_artifacts import ModelArtifacts
from ..model_repository.writer import build_repository
from ..models import get_spec
from ..serving.server import TritonServer
from . import DEFAULT_MODELS
from .current import ensure_artifacts


@dataclass
class RunOptions:
    models: tuple[str, ...] = DEFAULT_MODELS
    artifacts: Path = DEFAULT_ROOT
    repository: Path = DEFAULT_REPOSITORY
    results: Path = DEFAULT_RESULTS
    bench: bool = True
    force: bool = False


@dataclass(frozen=True)
class ServedCheck:
    """One request to a served model, compared with the same model in-process."""
    model: str
    max_abs_err: float
    ok: bool
    latency_ms: float  # the first call's round trip through the client
    served: str = ""  # what runs it: optimize's pick and whether it is within FP32 tolerance (served_variant)


@dataclass
class MainJobReport:
    done: dict[str, str] = field(default_factory=dict)  # base model -> what was done to its artifacts, and why
    served: list[ServedCheck] = field(default_factory=list)


def _reference(spec, artifacts: ModelArtifacts, repository: Path):
    """The in-process twin of a served model: the same ONNX file through ONNX Runtime, or for a
    kernel model, the plain PyTorch model with the same weights (`artifacts`: its base model's)."""
    if spec.runtime == "torch":
        base = artifacts.spec
        module = load_module(base, artifacts.folder)
        return lambda x: run_torch(module, base, x)
    session = ort_session(repository / spec.name / "1" / ONNX_FILE)
    return lambda x: run_ort(session, spec, x)


def served_variant(spec, artifacts: ModelArtifacts) -> str:
    """What the repository serves for `spec`, in a few words: "ort_opt (exact)" (within FP32 tolerance of
    PyTorch), "int8_static (lossy: top1>=0.99)" (under the user's accuracy budget), or "kernels (torch)"."""
    if spec.runtime != "onnx":
        return "kernels (torch)"
    name, _ = chosen_variant(artifacts)
    optimize = artifacts.manifest.optimize
    if optimize is None:
        return f"{name} (not optimized)"
    accuracy = optimize.raw.get("accuracy", {})
    if accuracy.get("lossy_pick"):
        return f"{name} (lossy: {', '.join(accuracy['budgets'])})"
    return f"{name} (exact)"


def check_served(server: TritonServer, loaded: dict[str, ModelArtifacts], repository: Path,
                 names: list[str]) -> list[ServedCheck]:
    """One request per model through `tritonize.client`, compared with its in-process twin."""
    from ..client import TritonClient

    checks = []
    rng = np.random.default_rng()
    with TritonClient(server.grpc_url) as client:
        for name in names:
            spec = get_spec(name)
            inputs = spec.example_inputs(2, spec.default_seq(), rng)
            t0 = time.perf_counter()
            served = client.infer(name, inputs)
            ms = (time.perf_counter() - t0) * 1e3
            expected = _reference(spec, loaded[spec.base_model or spec.name], repository)(inputs)
            # A per-row value ([batch]) is served as Triton's dims [1], so compare in the model's own shape.
            err = max(float(np.abs(served[o].reshape(expected[o].shape) - expected[o]).max()) for o in spec.output_names)
            tol = spec.tolerance("fp32")
            checks.append(ServedCheck(model=name, max_abs_err=err, ok=err <= tol.atol + tol.rtol, latency_ms=ms,
                                      served=served_variant(spec, loaded[spec.base_model or spec.name])))
    return checks


def run_main_job(opts: RunOptions, step: Callable[[str], None] = lambda _: None) -> MainJobReport:
    specs = [get_spec(n) for n in opts.models]
    bases = list(dict.fromkeys(get_spec(s.base_model) if s.base_model else s for s in specs))
    # What would fail only after minutes of exporting fails now.
    check_replaceable(opts.repository, INDEX_FILE)
    if opts.bench:
        from ..bench.suite.options import check_results_root

        check_results_root(opts.results)
    report = MainJobReport()
    loaded: dict[str, ModelArtifacts] = {}
    for spec in bases:
        step(f"artifacts: {spec.name}")
        current = ensure_artifacts(spec, opts.artifacts, opts.force, lambda msg, n=spec.name: step(f"{n}: {msg}"))
        loaded[spec.name], report.done[spec.name] = current.artifacts, current.done
    step("repository")
    build_repository(specs, loaded, opts.repository, "cpu")
    step("starting tritonserver")
    with TritonServer(opts.repository, [s.name for s in specs]) as server:
        step("one request per model through the client")
        report.served = check_served(server, loaded, opts.repository, [s.name for s in specs])
    bad = [c for c in report.served if not c.ok]
    if bad:
        raise ParityError("served outputs differ from in-process: " +
                          ", ".join(f"{c.model} (max abs err {c.max_abs_err:.3g})" for c in bad))
    return report


def run_bench(opts: RunOptions, progress) -> Path:
    """The quick benchmark of the run's ONNX models (a kernel model's base stands in for it: the
    kernels run in Triton's interpreter on a CPU, checked in the tests but not timed)."""
    from ..bench.suite.options import SuiteOptions
    from ..bench.suite.run import run_suite

    # A user's model goes by its reference: the in-process benchmark resolves it again in a process of its own.
    bases = list(dict.fromkeys(s.base_model or s.reference for s in map(get_spec, opts.models)))
    suite = SuiteOptions.quick_defaults(models=bases, artifacts=opts.artifacts, results_root=opts.results)
    return run_suite(suite, progress)
