"""`tritonize optimize`: CPU variants of an exported model, each parity-checked and timed, and the pick.

Variants (under `artifacts/<model>/variants/<name>/model.onnx`):
  - fp32:    the export itself (the baseline every other variant is timed against),
  - ort_opt: ONNX Runtime's offline graph optimization (extended level: fusions that stay portable
             across CPUs; the `all` level adds layout changes tied to the machine it ran on),
  - int8:    dynamic INT8 quantization of weights (activations quantized at run time),
  - int8_static: static INT8 (QDQ): weights and activations, with activation ranges calibrated on
             the spec's example inputs; the fast path for convolutions (VNNI), often too coarse for
             attention, in which case parity rejects it and choice.json says so.
The pick (export/choice.py) is the fastest variant within FP32 tolerance for the user's objective, a
lossy one only under the user's accuracy budget; `choice.json` records the pick and why.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from ..artifacts import (
    CHOICE_FILE,
    DISK_ERRNOS,
    ONNX_FILE,
    VARIANTS,
    VARIANTS_DIR,
    ArtifactError,
    atomic_dir,
    write_json,
)
from ..model_artifacts import ModelArtifacts
from ..models.spec import ModelSpec
from ..timing import measure_latency
from .choice import AccuracyBudget, Objective, check_budgets, pick_variant
from .input_rows import InputRows
from .parity import agreement_cases, check_parity
from .runtime import ort_session, run_ort, run_torch
from .stage import load_module
from .threads import PAIRS, ThreadProfile, batch_sizes, measure_profile

PRECISION = {"fp32": "fp32", "ort_opt": "fp32", "int8": "int8", "int8_static": "int8"}


def _build_fp32(src: Path, dst: Path, calibration: InputRows) -> None:
    shutil.copyfile(src, dst)


def _build_ort_opt(src: Path, dst: Path, calibration: InputRows) -> None:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])


@contextmanager
def _scratch_copy(src: Path) -> Iterator[Path]:
    """A copy of `src` in a temporary folder that is also the working directory: ORT's quantization
    tools write scratch files there (a failed shape inference saves its model and external data in the
    working directory; quantize_dynamic writes `<model>-inferred.onnx` beside its input and leaves it
    when it fails), never into the artifact folder."""
    before = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="tritonize-optimize-") as scratch:
        copy = Path(scratch) / src.name
        shutil.copyfile(src, copy)
        os.chdir(scratch)
        try:
            yield copy
        finally:
            os.chdir(before)


@contextmanager
def _quiet_root_logger():
    root_logger = logging.getLogger()  # ORT's quantization tools warn on the root logger
    level = root_logger.level
    root_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root_logger.setLevel(level)


def _build_int8(src: Path, dst: Path, calibration: InputRows) -> None:
    with _quiet_root_logger():
        # 7-bit weights, as for the static variant below: on an x86 CPU without VNNI (AMD EPYC Milan,
        # AVX2 only) MatMulInteger's u8 x s8 pairs saturate with full 8-bit weights. Measured on one:
        # a Linear's max error on large inputs was 897 with 8 bits (the fp32 outputs reach 524), 24 with 7.
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)


class _CalibrationReader(CalibrationDataReader):
    def __init__(self, calibration: InputRows):
        self._batches = iter(calibration.batches)

    def get_next(self) -> dict | None:
        return next(self._batches, None)


def _build_int8_static(src: Path, dst: Path, calibration: InputRows) -> None:
    prepared = dst.with_name("prepared.onnx")
    with _quiet_root_logger():
        # ONNX shape inference only: ORT's symbolic pass cannot follow the exporter's dynamic reshapes.
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        # reduce_range keeps weights to 7 bits, so the u8 x s8 products cannot saturate on x86 CPUs
        # without VNNI (where the variant may be served); measured as fast as 8 bits on a VNNI CPU.
        quantize_static(str(prepared), str(dst), _CalibrationReader(calibration), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        per_channel=True, reduce_range=True)
    prepared.unlink()


BUILDERS: dict[str, Callable[[Path, Path, InputRows], None]] = {
    "fp32": _build_fp32, "ort_opt": _build_ort_opt, "int8": _build_int8, "int8_static": _build_int8_static}


def latency_batches(spec: ModelSpec) -> list[int]:
    return sorted({1, spec.serving.max_batch_size})


def check_variant_names(spec: ModelSpec, names) -> None:
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"model {spec.name!r}: expected a variant from {', '.join(VARIANTS)}, "
                         f"got {', '.join(map(repr, unknown))}")


def optimize_model(spec: ModelSpec, root: Path, variants: tuple[str, ...] = VARIANTS,
                   step: Callable[[str], None] = lambda _: None, rng: np.random.Generator | None = None,
                   agreement_rows: int = 1000, latency_iters: int = 100, calibration: InputRows | None = None,
                   data: InputRows | None = None, artifacts: ModelArtifacts | None = None,
                   objective: Objective = Objective("latency"), accuracy: tuple[AccuracyBudget, ...] = (),
                   accuracy_on_random_rows: bool = False) -> dict:
    """Build, check and time each variant; write them and choice.json atomically; return the choice.

    `calibration`: the rows static INT8 is calibrated on (default: the spec's example inputs).
    `data`: the rows parity and accuracy are judged on (default: `agreement_rows` random rows).
    `artifacts`: `spec`'s folder under `root` where the caller has loaded it already (it is updated in
    place); otherwise it is loaded here, its variants left unchecked, since they are rebuilt.
    `objective`, `accuracy`: what the pick optimizes and the loss it may accept (export/choice.py); an
    accuracy budget needs `data`, or `accuracy_on_random_rows`."""
    check_variant_names(spec, variants)
    check_accuracy_options(spec, accuracy, data is not None, accuracy_on_random_rows)
    rng = rng if rng is not None else np.random.default_rng()
    if artifacts is None:
        artifacts = ModelArtifacts.load(root, spec, ignore_under=VARIANTS_DIR)
    elif (artifacts.spec, artifacts.root) != (spec, Path(root)):
        raise ValueError(f"optimize {spec.name!r} under {root}: expected its own artifacts, got {artifacts!r}")
    folder = artifacts.folder.resolve()  # the builders run in a scratch working directory
    module = load_module(spec, folder)
    # Every variant is checked on the same inputs, so PyTorch runs once per case, not once per variant.
    seed = int(rng.integers(2**63))
    # Calibration draws its own inputs: parity is judged on rows it never saw.
    calibration = calibration or InputRows.from_examples(spec, np.random.default_rng([seed, 1]))
    reference_outputs: dict[int, dict] = {}

    def reference(x: dict) -> dict:
        key = hash(tuple(a.tobytes() for a in x.values()))
        if key not in reference_outputs:
            reference_outputs[key] = run_torch(module, spec, x)
        return reference_outputs[key]
    threads = spec.serving.ort_threads
    results: dict[str, dict] = {}
    with atomic_dir(folder / VARIANTS_DIR) as tmp:
        for name in ("fp32",) + tuple(v for v in variants if v != "fp32"):
            out = tmp / name / ONNX_FILE
            out.parent.mkdir()
            step(f"{name}: building")
            try:
                with _scratch_copy(folder / ONNX_FILE) as source:
                    BUILDERS[name](source, out, calibration)
            except OSError as e:
                if e.errno in DISK_ERRNOS:  # the machine's fault, not the variant's: the whole optimize stops
                    raise
                results[name] = {"built": False, "error": f"{type(e).__name__}: {e}"}
                shutil.rmtree(out.parent)
                continue
            except Exception as e:  # noqa: BLE001 - a variant that cannot be built is reported, never skipped silently
                results[name] = {"built": False, "error": f"{type(e).__name__}: {e}"}
                shutil.rmtree(out.parent)
                continue
            session = ort_session(out, threads=threads, spin=False)
            candidate = lambda x, s=session: run_ort(s, spec, x)  # noqa: E731
            step(f"{name}: parity on {data.source['rows'] if data else agreement_rows} "
                 f"{'rows of your data' if data else 'random rows'}")
            report = check_parity(spec, reference, candidate, PRECISION[name],
                                  cases=agreement_cases(spec, agreement_rows), rng=np.random.default_rng(seed),
                                  batches=data.batches if data else None)
            step(f"{name}: latency")
            latency = {}
            for batch in latency_batches(spec):
                feed = spec.example_inputs(batch, spec.default_seq(), rng)
                latency[f"batch{batch}"] = measure_latency(lambda: candidate(feed), iters=latency_iters)
            profile = None
            if report.ok and spec.serving.large_batch_threads > threads:  # a variant failing parity is never served
                step(f"{name}: {threads} against {spec.serving.large_batch_threads} threads, by batch size")
                profile = _thread_profile(out, spec, session, rng, pairs=min(PAIRS, latency_iters))
            results[name] = {"built": True, "precision": PRECISION[name], "parity_ok": report.ok,
                             "fp32_exact": report.fp32_exact,
                             "max_abs_err": report.max_abs_err, "top1_agreement": report.top1_agreement,
                             "min_cosine": report.min_cosine,
                             "tolerance": report.tolerance, "latency": latency,
                             "threads": profile.to_json() if profile else None,
                             "size_bytes": out.stat().st_size}
        choice = pick_variant(results, objective, accuracy, judged_on_data=data is not None)
        # What the choice was judged on: the user's rows (with their SHA-256) or random example inputs.
        choice["data"] = data.source if data else {"data": "random example inputs", "rows": agreement_rows}
        choice["why"] += f", judged on {'your data ' + data.source['data'] if data else 'random example inputs'}"
        if "int8_static" in results:
            choice["calibration"] = calibration.source
        write_json(tmp / CHOICE_FILE, choice)
        files = [p.relative_to(tmp).as_posix() for p in sorted(tmp.rglob("*")) if p.is_file()]
    artifacts.record([f"{VARIANTS_DIR}/{f}" for f in files], replace_under=VARIANTS_DIR, optimize=choice)
    return choice


def _thread_profile(path: Path, spec: ModelSpec, session: ort.InferenceSession, rng: np.random.Generator,
                    pairs: int = PAIRS) -> ThreadProfile:
    """The variant at `path` on the spec's serving threads (`session`) against its large-batch threads."""
    hints = spec.serving
    wide = ort_session(path, threads=hints.large_batch_threads, spin=False)
    sizes = batch_sizes(hints.max_batch_size)
    feeds = {b: spec.example_inputs(b, spec.default_seq(), rng) for b in sizes}
    return measure_profile(lambda b: run_ort(session, spec, feeds[b]), lambda b: run_ort(wide, spec, feeds[b]),
                           sizes, hints.ort_threads, hints.large_batch_threads, pairs=pairs)


def variant_thread_profile(artifacts: ModelArtifacts, variant: str) -> ThreadProfile | None:
    """What optimize measured of `variant`'s threads (None where it measured nothing: an older
    manifest, a plain export, large_batch_threads 1)."""
    optimize = artifacts.manifest.optimize
    record = optimize.variants.get(variant) if optimize else None
    if record is None or record.threads is None:
        return None
    try:
        where = f"model {artifacts.spec.name!r}: {artifacts.manifest_path}, variant {variant}"
        return ThreadProfile.from_json(record.threads, where)
    except ValueError as e:
        raise ArtifactError(f"{e}; run `tritonize optimize {artifacts.spec.reference} --artifacts "
                            f"{artifacts.root}` to measure it again") from None


def check_accuracy_options(spec: ModelSpec, accuracy, have_data: bool, on_random_rows: bool) -> None:
    """Refuse, before any work, an accuracy budget the model cannot measure or that has no rows to be
    judged on (a lossy variant judged on random rows says little about real inputs)."""
    check_budgets(accuracy, spec.classifier, spec.name)
    if accuracy and not have_data and not on_random_rows:
        raise ValueError(f"--accuracy {' '.join(map(str, accuracy))}: expected --data ROWS (your own inputs) to judge "
                         f"lossy variants on for model {spec.name!r}, got none; or add --accuracy-on-random-rows to "
                         f"judge them on random rows, labelled as such")
    if on_random_rows and have_data:
        raise ValueError("--accuracy-on-random-rows: expected no --data (they are judged on your rows when given), "
                         "got both")


def variant_path(artifacts: ModelArtifacts, variant: str) -> Path:
    check_variant_names(artifacts.spec, [variant])  # a name is a folder under variants/, so only these few
    return artifacts.folder / VARIANTS_DIR / variant / ONNX_FILE


def chosen_variant(artifacts: ModelArtifacts) -> tuple[str, Path]:
    """The variant `tritonize optimize` picked, or the plain export when the model was not optimized.

    The pick is read from the manifest, so it must name one of VARIANTS whose file the manifest lists
    (and so verified): anything else (`../../elsewhere`) would be served from wherever it points."""
    optimize, spec = artifacts.manifest.optimize, artifacts.spec
    if optimize is None:
        return "fp32", artifacts.folder / ONNX_FILE
    again = f"run `tritonize optimize {spec.reference} --artifacts {artifacts.root}` to choose again"
    name, where = optimize.chosen, artifacts.manifest_path
    if name not in VARIANTS:
        raise ArtifactError(f"model {spec.name!r}: {where} names {json.dumps(name)[:200]} as optimize.chosen; "
                            f"expected one of {', '.join(VARIANTS)}; {again}")
    if f"{VARIANTS_DIR}/{name}/{ONNX_FILE}" not in artifacts.manifest.files:
        raise ArtifactError(f"model {spec.name!r}: {where} names {name!r} as optimize.chosen but lists no "
                            f"{VARIANTS_DIR}/{name}/{ONNX_FILE}; {again}")
    return name, variant_path(artifacts, name)
