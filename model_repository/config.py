"""Triton model configs built with Triton's own protobuf schema, from the model description.

Targets differ in one place only (`TARGETS`): which backend/platform runs the model, what kind of
instance, and which accelerator settings. Everything else (names, dtypes, dims, batching) comes from
the `ModelSpec`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from ..models.spec import SEQ, ModelSpec, ServingHints, TensorSpec


@dataclass(frozen=True)
class Target:
    name: str
    instance_kind: int
    # How the chosen ONNX file is run: "python" (our onnxruntime runner, the only backend the
    # bundled CPU server has), "onnxruntime_onnx" or "tensorrt_plan" (Triton's own backends).
    runner: str


TARGETS = {
    "cpu": Target("cpu", mc.ModelInstanceGroup.KIND_CPU, runner="python"),
    "gpu": Target("gpu", mc.ModelInstanceGroup.KIND_GPU, runner="onnxruntime_onnx"),
}

MODEL_FILES = {"python": "model.py", "onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}

# CPU instances belong to this Triton host policy. It does nothing until a server is told its cores
# (`tritonize serve --instance-cpus`, see serving/placement.py); GPU instances keep the per-GPU
# policies Triton gives them.
INSTANCE_HOST_POLICY = "tritonize_instances"


def _instances(kind: int, count: int) -> mc.ModelInstanceGroup:
    group = mc.ModelInstanceGroup(kind=kind, count=count)
    if kind == mc.ModelInstanceGroup.KIND_CPU:
        group.host_policy = INSTANCE_HOST_POLICY
    return group


def _tensor(t: TensorSpec, message):
    dims = t.dims_without_batch()
    if dims:
        return message(name=t.name, data_type=mc.DataType.Value(f"TYPE_{t.triton_dtype}"), dims=dims)
    # One value per row (shape [batch]): a batching model's config cannot have empty dims, so Triton's
    # own form is dims [1], reshaped to no dims for the model, which then sees [batch].
    return message(name=t.name, data_type=mc.DataType.Value(f"TYPE_{t.triton_dtype}"), dims=[1],
                   reshape=mc.ModelTensorReshape(shape=[]))


def _warmup(spec: ModelSpec) -> mc.ModelWarmup:
    """One zero-filled batch-1 request at the default sequence length: zeros are valid for every
    input kind (token id 0, an all-padding mask is handled), and random token ids may not be."""
    seq = spec.default_seq()
    inputs = {t.name: mc.ModelWarmup.Input(data_type=mc.DataType.Value(f"TYPE_{t.triton_dtype}"),
                                           dims=list(t.concrete_shape(1, seq)[1:]) or [1], zero_data=True)
              for t in spec.inputs}
    return mc.ModelWarmup(name="zeros_batch1", batch_size=1, inputs=inputs)


def input_checks(spec: ModelSpec) -> str:
    """The config parameter `input_checks` (JSON): what the Python-backend runners check in every request
    that Triton cannot check against dims and dtypes (model_repository/backends/request_batching.py):
    each input's kind (token ids against vocab_size, masks of 0/1, finite dense floats), its sequence
    axis, and the model's max_seq_len, which sequence lengths must not exceed."""
    inputs = {}
    for t in spec.inputs:
        check = {"kind": t.kind}
        if t.kind == "token_ids":
            check["vocab_size"] = t.vocab_size
        if SEQ in t.shape:
            check["seq_axis"] = t.shape.index(SEQ)
        inputs[t.name] = check
    return json.dumps({"inputs": inputs, "max_seq_len": spec.max_seq_len}, sort_keys=True, separators=(",", ":"))


def queue_policy(hints: ServingHints) -> mc.ModelQueuePolicy:
    """The dynamic batcher's queue where the hints ask for one (ServingHints.queue_policy says why not by
    default): bounded (a request over the bound is refused at once, UNAVAILABLE), with a timeout after
    which a waiting request is dropped (REJECT). `allow_timeout_override` lets a request's own `timeout`
    apply, which Triton 2.51 takes only below the default (measured: a longer one is ignored)."""
    return mc.ModelQueuePolicy(timeout_action=mc.ModelQueuePolicy.REJECT, max_queue_size=hints.queue_size,
                               default_timeout_microseconds=hints.queue_timeout_us, allow_timeout_override=True)


def build_config(spec: ModelSpec, target: str, runner: str | None = None, parameters: dict[str, str] | None = None,
                 name: str | None = None) -> mc.ModelConfig:
    """The `ModelConfig` for one model on one target. `runner` overrides the target's (e.g. a
    `tensorrt_plan` where an engine was built); `parameters` reach a Python backend's model.py, beside
    `input_checks`, which every Python-backend runner gets."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {sorted(TARGETS)}, got {target!r}")
    t = TARGETS[target]
    runner = runner or t.runner
    hints = spec.serving
    config = mc.ModelConfig(
        name=name or spec.name,
        max_batch_size=hints.max_batch_size,
        input=[_tensor(i, mc.ModelInput) for i in spec.inputs],
        output=[_tensor(o, mc.ModelOutput) for o in spec.outputs],
        instance_group=[_instances(t.instance_kind, hints.instance_count)],
        dynamic_batching=mc.ModelDynamicBatching(preferred_batch_size=list(hints.preferred_batch_sizes),
                                                 max_queue_delay_microseconds=hints.max_queue_delay_us),
        model_warmup=[_warmup(spec)],
    )
    if hints.queue_policy:
        config.dynamic_batching.default_queue_policy.CopyFrom(queue_policy(hints))
    if runner == "python":
        config.backend = "python"
        config.parameters["input_checks"].string_value = input_checks(spec)
    else:
        config.platform = runner
        config.default_model_filename = MODEL_FILES[runner]
    if runner == "onnxruntime_onnx" and t.instance_kind == mc.ModelInstanceGroup.KIND_GPU:
        trt = mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator(
            name="tensorrt", parameters={"precision_mode": "FP16", "max_workspace_size_bytes": str(1 << 30)})
        config.optimization.execution_accelerators.gpu_execution_accelerator.append(trt)
    for key, value in (parameters or {}).items():
        config.parameters[key].string_value = str(value)
    return config


def to_pbtxt(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse_pbtxt(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


TOKENIZER_SUFFIX = "_tokenizer"
TEXT_SUFFIX = "_text"


def build_tokenizer_config(spec: ModelSpec, target: str, parameters: dict[str, str]) -> mc.ModelConfig:
    """`<model>_tokenizer`: BYTES text in, the model's token inputs out (a Python-backend model)."""
    text = spec.text
    config = mc.ModelConfig(
        name=spec.name + TOKENIZER_SUFFIX, backend="python", max_batch_size=spec.serving.max_batch_size,
        input=[_tensor(text.input, mc.ModelInput)],
        output=[_tensor(t, mc.ModelOutput) for t in spec.inputs],
        instance_group=[_instances(mc.ModelInstanceGroup.KIND_CPU, spec.serving.instance_count)],
    )
    for key, value in parameters.items():
        config.parameters[key].string_value = str(value)
    return config


def build_text_ensemble_config(spec: ModelSpec) -> mc.ModelConfig:
    """`<model>_text`: an ensemble, tokenizer -> model, so clients send strings and get the outputs."""
    step = mc.ModelEnsembling.Step
    tokenize = step(model_name=spec.name + TOKENIZER_SUFFIX, model_version=-1,
                    input_map={spec.text.input.name: spec.text.input.name},
                    output_map={t.name: f"tokens_{t.name}" for t in spec.inputs})
    encode = step(model_name=spec.name, model_version=-1,
                  input_map={t.name: f"tokens_{t.name}" for t in spec.inputs},
                  output_map={t.name: t.name for t in spec.outputs})
    return mc.ModelConfig(
        name=spec.name + TEXT_SUFFIX, platform="ensemble", max_batch_size=spec.serving.max_batch_size,
        input=[_tensor(spec.text.input, mc.ModelInput)],
        output=[_tensor(t, mc.ModelOutput) for t in spec.outputs],
        ensemble_scheduling=mc.ModelEnsembling(step=[tokenize, encode]),
    )
