"""The TensorRT stage: everything but the build runs here; the build runs where TensorRT and a GPU are."""
import dataclasses

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from tritonize.cli import main
from tritonize.export.tensorrt import (PRECISIONS, TensorRTUnavailable, create_config, parity_shapes, profile_shapes,
                                       require_tensorrt, tensorrt_problem)
from tritonize.model_artifacts import ModelArtifacts
from tritonize.models import get_spec, model_names
from tritonize.model_repository.config import build_config, parse_pbtxt, to_pbtxt

MODELS = model_names("onnx")
NO_TENSORRT = tensorrt_problem()
needs_tensorrt = pytest.mark.skipif(NO_TENSORRT is not None, reason=f"needs TensorRT and a GPU: {NO_TENSORRT}")


@pytest.mark.parametrize("name", MODELS)
def test_profiles_cover_every_shape_the_model_is_served_at(name):
    spec = get_spec(name)
    shapes = profile_shapes(spec)
    assert set(shapes) == set(spec.input_names)
    for t in spec.inputs:
        lo, opt, hi = shapes[t.name]
        assert len(lo) == len(opt) == len(hi) == len(t.shape)
        assert all(a <= b <= c for a, b, c in zip(lo, opt, hi))
        for i, axis in enumerate(t.shape):
            if axis == "batch":
                assert (lo[i], hi[i]) == (1, spec.serving.max_batch_size)
            elif axis == "seq":
                assert (lo[i], hi[i]) == (1, spec.max_seq_len)
            else:
                assert lo[i] == opt[i] == hi[i] == axis
    if name == "transformer":  # inputs that share their dynamic axes share their sizes
        assert shapes["input_ids"] == shapes["attention_mask"]


def test_profile_optimum_is_the_largest_preferred_batch():
    spec = get_spec("cnn")
    preferred = dataclasses.replace(spec, serving=dataclasses.replace(spec.serving, preferred_batch_sizes=(4, 8)))
    assert profile_shapes(preferred)["x"][1][0] == 8
    assert profile_shapes(spec)["x"][1][0] == spec.serving.max_batch_size // 2  # none preferred: half the max
    assert parity_shapes(get_spec("transformer")) == [(1, 1), (16, 17), (32, 128)]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_flags_and_tolerances(precision):
    spec = get_spec("mlp")
    config = create_config(spec, precision)
    assert config.fp16 == (precision == "fp16") and config.bf16 == (precision == "bf16") and not config.tf32
    assert config.profiles[0]["x"].max == (64, 784)
    tol = spec.tolerance(precision)
    assert tol.atol >= spec.tolerance("fp32").atol
    with pytest.raises(ValueError, match="precision must be one of"):
        create_config(spec, "int4")


@pytest.mark.parametrize("name", MODELS)
def test_tensorrt_plan_configs_parse_against_the_schema(name):
    config = build_config(get_spec(name), "gpu", runner="tensorrt_plan")
    assert parse_pbtxt(to_pbtxt(config)) == config
    assert config.platform == "tensorrt_plan" and config.default_model_filename == "model.plan"
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator


@pytest.mark.skipif(NO_TENSORRT is None, reason="TensorRT is present here")
def test_missing_tensorrt_fails_loudly_with_how_to_get_it(capsys, artifacts):
    with pytest.raises(TensorRTUnavailable, match="nvcr.io/nvidia/tensorrt"):
        require_tensorrt()
    assert main(["optimize", "mlp", "--artifacts", str(artifacts), "--tensorrt"]) == 2
    err = capsys.readouterr().err
    assert "TensorRT" in err and "pip install tensorrt" in err and err.count("error:") == 1


@pytest.mark.tensorrt
@pytest.mark.gpu
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_builds_passes_parity_and_is_served_as_a_plan(artifacts, tmp_path, precision):
    import shutil

    from tritonize.export.tensorrt import build_engine, built_engine
    from tritonize.model_repository.writer import build_repository

    root = tmp_path / "artifacts"
    shutil.copytree(artifacts / "mlp", root / "mlp")
    info = build_engine(get_spec("mlp"), root, precision)
    assert info["parity"]["ok"] and info["tensorrt"] and info["gpu"]
    assert built_engine(ModelArtifacts.load(root, get_spec("mlp")))[0] == precision
    build_repository([get_spec("mlp")], root, tmp_path / "repo", "gpu")
    config = parse_pbtxt((tmp_path / "repo" / "mlp" / "config.pbtxt").read_text())
    assert config.platform == "tensorrt_plan" and (tmp_path / "repo" / "mlp" / "1" / "model.plan").is_file()
