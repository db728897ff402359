import filecmp
import shutil

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from tritonize.artifacts import ArtifactError
from tritonize.export.optimize import optimize_model
from tritonize.models import get_spec, model_names
from tritonize.model_repository.config import INSTANCE_HOST_POLICY, build_config, build_tokenizer_config, parse_pbtxt, to_pbtxt
from tritonize.model_repository.writer import build_repository

MODELS = model_names("onnx")
VARIANTS = model_names("torch")


@pytest.mark.parametrize("target", ["cpu", "gpu"])
@pytest.mark.parametrize("name", MODELS)
def test_configs_round_trip_through_the_schema(name, target):
    config = build_config(get_spec(name), target)
    assert parse_pbtxt(to_pbtxt(config)) == config


@pytest.mark.parametrize("name", MODELS)
def test_cpu_config_takes_its_facts_from_the_spec(name):
    spec = get_spec(name)
    config = build_config(spec, "cpu", parameters={"onnx_file": "model.onnx"})
    assert config.backend == "python" and not config.platform
    assert config.max_batch_size == spec.serving.max_batch_size
    assert [i.name for i in config.input] == spec.input_names
    assert [o.name for o in config.output] == spec.output_names
    for i, t in zip(config.input, spec.inputs):
        assert list(i.dims) == t.dims_without_batch()
        assert mc.DataType.Name(i.data_type) == f"TYPE_{t.triton_dtype}"
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert config.instance_group[0].host_policy == INSTANCE_HOST_POLICY  # cores given by `serve --instance-cpus`
    assert list(config.dynamic_batching.preferred_batch_size) == list(spec.serving.preferred_batch_sizes)
    assert config.model_warmup[0].batch_size == 1
    assert set(config.model_warmup[0].inputs) == set(spec.input_names)
    assert config.parameters["onnx_file"].string_value == "model.onnx"


def test_gpu_config_uses_onnxruntime_with_tensorrt_fp16():
    config = build_config(get_spec("cnn"), "gpu")
    assert config.platform == "onnxruntime_onnx" and config.default_model_filename == "model.onnx"
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert not config.instance_group[0].host_policy  # GPU instances keep Triton's per-GPU policies
    accel = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accel.name == "tensorrt" and accel.parameters["precision_mode"] == "FP16"


def test_the_tokenizer_instances_share_the_cpu_host_policy():
    config = build_tokenizer_config(get_spec("minilm"), "cpu", {})
    assert config.instance_group[0].host_policy == INSTANCE_HOST_POLICY


def test_unknown_target_is_rejected():
    with pytest.raises(ValueError, match="target must be one of \\['cpu', 'gpu'\\], got 'tpu'"):
        build_config(get_spec("mlp"), "tpu")


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_repository_layout_is_complete_and_regeneration_is_idempotent(artifacts, tmp_path, target):
    specs = [get_spec(n) for n in MODELS + VARIANTS]
    out = tmp_path / "repo"
    first = build_repository(specs, artifacts, out, target)
    snapshot = tmp_path / "first"
    import shutil

    shutil.copytree(out, snapshot)
    second = build_repository(specs, artifacts, out, target)
    assert first == second
    cmp = filecmp.dircmp(out, snapshot)
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    for name in MODELS:
        config = parse_pbtxt((out / name / "config.pbtxt").read_text())
        assert config.name == name
        files = {p.name for p in (out / name / "1").iterdir()}
        assert files == ({"model.py", "request_batching.py", "model.onnx"} if target == "cpu" else {"model.onnx"})
    for name in VARIANTS:
        config = parse_pbtxt((out / name / "config.pbtxt").read_text())
        assert config.backend == "python" and config.parameters["model"].string_value == name
        assert config.parameters["device"].string_value == ("cpu" if target == "cpu" else "cuda")
        assert config.instance_group[0].kind == (mc.ModelInstanceGroup.KIND_CPU if target == "cpu" else mc.ModelInstanceGroup.KIND_GPU)
        assert {p.name for p in (out / name / "1").iterdir()} == {"model.py", "request_batching.py", "weights.safetensors"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "repo"]  # no temporary folders left


def test_a_failed_build_leaves_the_old_repository_untouched(artifacts, tmp_path):
    out = tmp_path / "repo"
    build_repository([get_spec("mlp")], artifacts, out)
    before = (out / "mlp" / "config.pbtxt").read_text()
    with pytest.raises(ArtifactError, match="no artifact folder"):
        build_repository([get_spec("mlp"), get_spec("cnn")], tmp_path / "no-artifacts", out)
    assert (out / "mlp" / "config.pbtxt").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]


def test_variant_overrides_serve_the_named_variant_and_bad_ones_are_refused(artifacts, tmp_path):
    out = tmp_path / "repo"
    index = build_repository([get_spec("mlp"), get_spec("cnn_fused")], artifacts, out, variants={"mlp": "fp32"})
    assert index["models"]["mlp"]["variant"] == "fp32"
    assert filecmp.cmp(out / "mlp" / "1" / "model.onnx", artifacts / "mlp" / "variants" / "fp32" / "model.onnx",
                       shallow=False)
    with pytest.raises(ValueError, match="name models not in the repository: \\['cnn'\\]"):
        build_repository([get_spec("mlp")], artifacts, out, variants={"cnn": "fp32"})
    with pytest.raises(ValueError, match="'cnn_fused': a variant can only be chosen for ONNX models on the cpu target"):
        build_repository([get_spec("cnn_fused")], artifacts, out, variants={"cnn_fused": "fp32"})
    with pytest.raises(ValueError, match="'mlp': expected a variant from fp32, ort_opt, int8, int8_static, got 'fp16'"):
        build_repository([get_spec("mlp")], artifacts, out, variants={"mlp": "fp16"})
    missing = tmp_path / "missing_variant"
    shutil.copytree(artifacts / "mlp", missing / "mlp")
    optimize_model(get_spec("mlp"), missing, variants=("fp32",), agreement_rows=10, latency_iters=3)
    with pytest.raises(ArtifactError, match="no 'ort_opt' variant at .*tritonize optimize mlp --variants ort_opt"):
        build_repository([get_spec("mlp")], missing, out, variants={"mlp": "ort_opt"})
    assert (out / "mlp" / "1" / "model.onnx").is_file()  # the failed builds left the repository as it was
