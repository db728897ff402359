"""`tritonize repo`: a Triton model repository from the export artifacts.

Layout: `<out>/<model>/config.pbtxt`, `<out>/<model>/<version>/model.{py,onnx,plan}` and
`<out>/repository.json` (which artifact and variant each model came from). The whole repository is
built beside `<out>` and swapped in, so a server never sees half of it, and the same artifacts give
the same bytes every time.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping

from ..artifacts import (
    DEFAULT_REPOSITORY,
    ENGINE_FILE,
    INDEX_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    atomic_dir,
    write_json,
)
from ..export.optimize import check_variant_names, chosen_variant, variant_path, variant_thread_profile
from ..export.tensorrt import built_engine, engine_info
from ..model_artifacts import ModelArtifacts
from ..models import get_spec, tokenization
from ..models.spec import ModelSpec
from .config import (
    TARGETS,
    TEXT_SUFFIX,
    TOKENIZER_SUFFIX,
    build_config,
    build_text_ensemble_config,
    build_tokenizer_config,
    to_pbtxt,
)
from .tuning import Tuning, apply_tuning

BACKENDS = Path(__file__).parent / "backends"


def _python_backend(runner: str, version_dir: Path) -> None:
    shutil.copyfile(BACKENDS / runner / "model.py", version_dir / "model.py")
    shutil.copyfile(BACKENDS / "request_batching.py", version_dir / "request_batching.py")


def _onnx_cpu_model(spec: ModelSpec, artifacts: ModelArtifacts, version_dir: Path, target: str,
                    variant: str | None = None) -> tuple[dict, dict]:
    if variant is None:
        variant, onnx_path = chosen_variant(artifacts)
    else:
        check_variant_names(spec, [variant])
        onnx_path = variant_path(artifacts, variant)
        if not onnx_path.is_file():
            raise ArtifactError(f"model {spec.name!r}: no {variant!r} variant at {onnx_path}; "
                                f"run `tritonize optimize {spec.name} --variants {variant}`")
    shutil.copyfile(onnx_path, version_dir / ONNX_FILE)
    _python_backend("onnxruntime", version_dir)
    hints = spec.serving
    params = {"onnx_file": ONNX_FILE, "intra_op_threads": hints.ort_threads, "allow_spinning": 0}
    info = {"runner": "python/onnxruntime", "variant": variant}
    # Large batches on more threads, from the batch size where optimize measured that they pay, and only
    # as measured: a profile taken with other thread counts than the spec's now says nothing about them.
    profile = variant_thread_profile(artifacts, variant)
    if profile and profile.from_rows and (profile.base_threads, profile.threads) == (hints.ort_threads,
                                                                                     hints.large_batch_threads):
        params.update(large_batch_threads=profile.threads, large_batch_rows=profile.from_rows)
        largest = max(profile.speedup)
        info["large_batches"] = (f"{profile.threads} threads from {profile.from_rows} "
                                 f"row{'s' if profile.from_rows > 1 else ''} (optimize measured "
                                 f"{profile.speedup[largest]}x at {largest} rows)")
    return info, params


def _onnx_gpu_model(spec: ModelSpec, artifacts: ModelArtifacts, version_dir: Path, target: str) -> tuple[dict, dict]:
    # The CPU variants (INT8 with CPU-only integer ops, graphs optimized for the CPU provider) do not
    # belong on a GPU: the FP32 export goes there, and TensorRT picks its own precision.
    shutil.copyfile(artifacts.folder / ONNX_FILE, version_dir / ONNX_FILE)
    return {"runner": "onnxruntime_onnx+tensorrt", "variant": "fp32"}, {}


def _tensorrt_model(spec: ModelSpec, artifacts: ModelArtifacts, version_dir: Path, target: str) -> tuple[dict, dict]:
    precision, plan = built_engine(artifacts)
    shutil.copyfile(plan, version_dir / ENGINE_FILE)
    info = engine_info(plan)
    return {"runner": "tensorrt_plan", "variant": f"tensorrt {precision}", "tensorrt": info["tensorrt"],
            "gpu": info["gpu"]}, {}


def _torch_model(spec: ModelSpec, artifacts: ModelArtifacts, version_dir: Path, target: str) -> tuple[dict, dict]:
    shutil.copyfile(artifacts.folder / WEIGHTS_FILE, version_dir / WEIGHTS_FILE)  # the base model's weights
    _python_backend("pytorch", version_dir)
    params = {"model": spec.name, "weights_file": WEIGHTS_FILE, "device": "cuda" if target == "gpu" else "cpu"}
    return {"runner": "python/pytorch", "variant": f"{spec.name} (weights of {spec.base_model})"}, params


def _model_maker(spec: ModelSpec, target: str, artifacts: ModelArtifacts):
    if spec.runtime == "torch":
        return _torch_model, "python"
    if target == "cpu":
        return _onnx_cpu_model, None
    if built_engine(artifacts):
        return _tensorrt_model, "tensorrt_plan"
    return _onnx_gpu_model, None


NOOP_SUFFIX = "_noop"


def _text_frontend(spec: ModelSpec, root: Path, version: int, target: str) -> dict:
    """`<model>_tokenizer` (the model's own fast tokenizer, server-side) and `<model>_text` (an
    ensemble: strings in, the model's outputs out)."""
    tokenizer = spec.name + TOKENIZER_SUFFIX
    version_dir = root / tokenizer / str(version)
    version_dir.mkdir(parents=True)
    shutil.copyfile(BACKENDS / "tokenizer" / "model.py", version_dir / "model.py")
    shutil.copyfile(tokenization.__file__, version_dir / "tokenization.py")  # what model.py runs
    shutil.copyfile(spec.text.tokenizer_file(), version_dir / "tokenizer.json")
    params = {"tokenizer_file": "tokenizer.json", "max_seq_len": spec.text.max_seq_len}
    (root / tokenizer / "config.pbtxt").write_text(to_pbtxt(build_tokenizer_config(spec, target, params)))
    ensemble = spec.name + TEXT_SUFFIX
    (root / ensemble / str(version)).mkdir(parents=True)  # Triton wants a version folder, even empty
    (root / ensemble / "config.pbtxt").write_text(to_pbtxt(build_text_ensemble_config(spec)))
    return {tokenizer: {"runner": "python/tokenizers", "variant": f"tokenizer of {spec.name}"},
            ensemble: {"runner": "ensemble", "variant": f"{tokenizer} -> {spec.name}"}}


def _noop_model(spec: ModelSpec, version_dir: Path) -> tuple[dict, dict]:
    shutil.copyfile(BACKENDS / "noop" / "model.py", version_dir / "model.py")
    return {"runner": "python/noop", "variant": f"does nothing, config of {spec.name}"}, {}


def build_repository(specs: list[ModelSpec], artifacts: Path | Mapping[str, ModelArtifacts],
                     out: Path = DEFAULT_REPOSITORY, target: str = "cpu", version: int = 1,
                     noop_baselines: bool = False, variants: dict[str, str] | None = None,
                     tunings: dict[str, Tuning] | None = None) -> dict:
    """Write the repository from `artifacts`: the artifact root (each model's folder is loaded and
    verified here), or the folders the caller has loaded already, by model name (a kernel model is
    served from its base model's). `noop_baselines` adds `<model>_noop`, the same config served by a model
    that does nothing, for the benchmarks' floor. `variants` overrides `optimize`'s pick per model
    (CPU target), e.g. {"minilm": "fp32"}. `tunings` (model_repository/tuning.py) replace the batching
    settings of the models they name (CPU target: they are measured on the CPU server)."""
    variants, tunings = variants or {}, tunings or {}
    by_name = {s.name: s for s in specs}
    unknown = set(variants) - set(by_name)
    if unknown:
        raise ValueError(f"variant overrides name models not in the repository: {sorted(unknown)}")
    for name in variants:
        if target != "cpu" or by_name[name].runtime != "onnx":
            raise ValueError(f"model {name!r}: a variant can only be chosen for ONNX models on the cpu target")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {target!r}")
    if tunings and target != "cpu":
        raise ValueError(f"tunings are measured on the CPU server and apply to the cpu target, got target {target!r} "
                         f"(a GPU's batching behaves differently: build the gpu repository without --tune)")
    if not specs:
        raise ValueError("no models to put in the repository")
    loaded = _artifacts_of(specs, artifacts)
    index = {"target": target, "version": version, "models": {}}
    with atomic_dir(out, marker=INDEX_FILE) as tmp:
        for spec in specs:
            spec = apply_tuning(spec, tunings.get(spec.name))
            model_artifacts = loaded[spec.base_model or spec.name]
            version_dir = tmp / spec.name / str(version)
            version_dir.mkdir(parents=True)
            make, runner = _model_maker(spec, target, model_artifacts)
            if spec.name in variants:
                info, params = _onnx_cpu_model(spec, model_artifacts, version_dir, target, variants[spec.name])
            else:
                info, params = make(spec, model_artifacts, version_dir, target)
            config = build_config(spec, target, runner=runner, parameters=params)
            (tmp / spec.name / "config.pbtxt").write_text(to_pbtxt(config))
            index["models"][spec.name] = {**info, "spec_fingerprint": model_artifacts.manifest.spec_fingerprint,
                                          "artifact_onnx_sha256": model_artifacts.onnx_sha256}
            if spec.name in tunings:
                index["models"][spec.name]["tuning"] = tunings[spec.name].measured
            if spec.text is not None:
                index["models"].update(_text_frontend(spec, tmp, version, target))
            if noop_baselines:
                name = spec.name + NOOP_SUFFIX
                (tmp / name / str(version)).mkdir(parents=True)
                info, params = _noop_model(spec, tmp / name / str(version))
                (tmp / name / "config.pbtxt").write_text(to_pbtxt(build_config(spec, target, runner="python", name=name)))
                index["models"][name] = info
        write_json(tmp / INDEX_FILE, index)
    return index


def _artifacts_of(specs: list[ModelSpec], artifacts: Path | Mapping[str, ModelArtifacts]) -> dict[str, ModelArtifacts]:
    """The artifacts each spec is served from (a kernel model: its base model's), each loaded once."""
    bases = list(dict.fromkeys(get_spec(s.base_model) if s.base_model else s for s in specs))
    if isinstance(artifacts, Mapping):
        missing = [s.name for s in bases if s.name not in artifacts]
        if missing:
            raise ValueError(f"expected the loaded artifacts of {', '.join(s.name for s in bases)}, "
                             f"got none for {', '.join(missing)}")
        return {s.name: artifacts[s.name] for s in bases}
    return {s.name: ModelArtifacts.load(artifacts, s) for s in bases}
