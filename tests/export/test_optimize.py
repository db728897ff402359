import json

import numpy as np
import pytest

from tritonize.model_artifacts import ModelArtifacts
from tritonize.export.optimize import PRECISION, VARIANTS, chosen_variant, optimize_model
from tritonize.export.runtime import ort_session, run_ort, run_torch
from tritonize.export.stage import load_module
from tritonize.models import get_spec, model_names


@pytest.mark.parametrize("name", model_names("onnx"))
def test_variants_that_passed_parity_pass_on_fresh_inputs(artifacts, name):
    spec = get_spec(name)
    module = load_module(spec, artifacts / name)
    choice = ModelArtifacts.load(artifacts, spec).manifest.optimize.raw
    out = spec.output_names[0]
    rng = np.random.default_rng()
    for variant, result in choice["variants"].items():
        assert result["built"], result.get("error")
        tol = spec.tolerance(PRECISION[variant])
        if not result["parity_ok"]:  # rejected: the pick skipped it and the report says why
            assert variant != choice["chosen"] and "outside FP32 tolerance" in choice["rejected"][variant]
            if not spec.classifier:  # MiniLM's INT8 variants: judged by their embeddings' direction
                assert result["min_cosine"] is not None and result["min_cosine"] < tol.min_cosine
            continue
        session = ort_session(artifacts / name / "variants" / variant / "model.onnx")
        matches = rows = 0
        for batch in (1, spec.serving.max_batch_size):
            x = spec.example_inputs(batch, spec.default_seq(), rng)
            expected, got = run_torch(module, spec, x)[out], run_ort(session, spec, x)[out]
            assert np.all(np.abs(got - expected) <= tol.atol + tol.rtol * np.abs(expected)), variant
            matches += int((got.argmax(1) == expected.argmax(1)).sum())
            rows += batch
        if spec.classifier:
            assert result["top1_agreement"] >= tol.min_top1
            assert matches / rows >= tol.min_top1 - 0.1  # fewer rows than the report's 1,000: looser
        else:
            assert result["top1_agreement"] is None and result["min_cosine"] >= tol.min_cosine


@pytest.mark.parametrize("name", model_names("onnx"))
def test_choice_is_recorded_with_reasons_and_files(artifacts, name):
    spec = get_spec(name)
    loaded = ModelArtifacts.load(artifacts, spec)
    manifest = loaded.manifest
    choice = json.loads((artifacts / name / "variants" / "choice.json").read_text())
    assert choice == manifest.optimize.raw
    assert manifest.optimize.chosen == choice["chosen"] and set(manifest.optimize.variants) == set(choice["variants"])
    assert choice["chosen"] in choice["variants"] and choice["variants"][choice["chosen"]]["parity_ok"]
    # No accuracy budget was given: the pick is within FP32 tolerance of PyTorch, for the latency objective.
    assert choice["variants"][choice["chosen"]]["fp32_exact"] and not choice["accuracy"]["lossy_pick"]
    assert choice["chosen"] in choice["why"] and choice["objective"]["name"] == "latency"
    for name, variant in choice["variants"].items():  # whatever was faster but lossy was rejected, saying why
        if variant.get("built") and not variant["fp32_exact"]:
            assert "outside FP32 tolerance" in choice["rejected"][name]
    for int8 in (choice["variants"]["int8"], choice["variants"]["int8_static"]):
        assert (int8["top1_agreement"] if spec.classifier else int8["min_cosine"]) is not None
    assert {f"variants/{v}/model.onnx" for v in VARIANTS} <= set(manifest.files)
    variant, path = chosen_variant(loaded)
    assert variant == choice["chosen"] and path.is_file()


def test_unknown_variant_names_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="'mlp': expected a variant from fp32, ort_opt, int8, int8_static, got 'fp16', 'trt'"):
        optimize_model(get_spec("mlp"), tmp_path, variants=("int8", "fp16", "trt"))
    assert list(tmp_path.iterdir()) == []


def _op_types(path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_the_int8_variants_quantize_the_way_they_are_named(artifacts):
    variants = artifacts / "cnn" / "variants"
    dynamic, static = _op_types(variants / "int8" / "model.onnx"), _op_types(variants / "int8_static" / "model.onnx")
    assert "DynamicQuantizeLinear" in dynamic  # activations quantized at run time
    assert {"QuantizeLinear", "DequantizeLinear"} <= static and "DynamicQuantizeLinear" not in static
    assert "Conv" in static  # QDQ: the float op between its Q/DQ pairs, fused by ORT when the session loads

