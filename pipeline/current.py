"""Make sure a model's artifacts are current: export and optimize only what is missing or stale.

`tritonize run` and `tritonize peers` both start here, so "reuse, optimize again, or rebuild" is decided
in one place, and the folder is loaded and verified once: the object returned goes on to the repository
writer and the benchmarks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..artifacts import VARIANTS, ArtifactError, model_dir
from ..export.optimize import optimize_model
from ..export.stage import export_model
from ..model_artifacts import ModelArtifacts
from ..models.spec import ModelSpec


@dataclass(frozen=True)
class CurrentArtifacts:
    artifacts: ModelArtifacts
    done: str  # what was done and why, for the run's table: "reused", "built", "rebuilt: <problem>", ...


def _why_optimize_again(artifacts: ModelArtifacts) -> str | None:
    """Why an optimized folder must be optimized again: variants added to optimize since (a fp32 report
    without a thread measurement is from before optimize measured threads, which the repository's
    runner uses for large batches), or a pick made by the older rule; None when nothing is missing."""
    done = artifacts.manifest.optimize.variants
    missing = [v for v in VARIANTS if v not in done]
    if missing:
        return f"no {', '.join(missing)} variant"
    if done["fp32"].built and not done["fp32"].measured_threads:
        return "optimized before threads were measured"
    if "objective" not in artifacts.manifest.optimize.raw:
        return "picked before a lossy variant needed an accuracy budget"  # it may serve INT8 nobody asked for
    return None


def ensure_artifacts(spec: ModelSpec, root: Path, force: bool = False,
                     step: Callable[[str], None] = lambda _: None) -> CurrentArtifacts:
    """Export and optimize unless current artifacts (same spec, intact files, every variant) are there."""
    if force:
        done = "rebuilt (--force)"
    else:
        try:
            artifacts = ModelArtifacts.load(root, spec)
        except ArtifactError as e:
            done = "built" if not model_dir(root, spec).exists() else f"rebuilt: {e.problem}"
        else:
            if artifacts.manifest.optimize is None:
                optimize_model(spec, root, step=step, artifacts=artifacts)
                return CurrentArtifacts(artifacts, "optimized (the export was current)")
            why = _why_optimize_again(artifacts)
            if why is None:
                return CurrentArtifacts(artifacts, "reused")
            optimize_model(spec, root, step=step, artifacts=artifacts)
            return CurrentArtifacts(artifacts, f"optimized again (the export was current; {why})")
    artifacts = export_model(spec, root, step=step)
    optimize_model(spec, root, step=step, artifacts=artifacts)
    return CurrentArtifacts(artifacts, done)


def current_artifacts(specs: list[ModelSpec], root: Path, progress: Callable[[str], None] = lambda _: None,
                      force: bool = False) -> dict[str, ModelArtifacts]:
    """`ensure_artifacts` for each spec, by model name, saying what was done to each on `progress`."""
    loaded = {}
    for spec in specs:
        current = ensure_artifacts(spec, root, force, step=lambda msg, n=spec.name: progress(f"{n}: {msg}"))
        progress(f"{spec.name}: artifacts {current.done}")
        loaded[spec.name] = current.artifacts
    return loaded
