"""In-process latency per model, batch size and backend (pytest-benchmark, grouped by model+batch).

Every backend row either runs or is skipped with its reason; nothing is left out silently. Threads:
each runtime gets the model's serving thread count, so the rows compare like with like.

Not named test_*.py, so that no pytest file ships: pytest collects it because it is named on the
command line, with its options and fixtures from inprocess_plugin.py given by `-p` (see inprocess.py)."""
import numpy as np
import pytest
import torch

from tritonize.artifacts import ONNX_FILE, ArtifactError
from tritonize.export.optimize import VARIANTS, variant_path
from tritonize.export.runtime import ort_session, run_ort, run_torch
from tritonize.export.stage import load_module
from tritonize.model_artifacts import ModelArtifacts
from tritonize.models import get_spec

BACKENDS = ["torch_eager", "torch_compile", *[f"ort_{v}" for v in VARIANTS], "ort_cuda", "ort_tensorrt", "tensorrt"]


def _base_spec(spec):
    return get_spec(spec.base_model) if spec.base_model else spec


# Each model's artifacts, loaded and verified once in this process, for all its backends and batch sizes.
_LOADED: dict[str, ModelArtifacts | ArtifactError] = {}


def _artifacts_or_skip(root, spec) -> ModelArtifacts:
    base = _base_spec(spec)
    if base.name not in _LOADED:
        try:
            _LOADED[base.name] = ModelArtifacts.load(root, base)
        except ArtifactError as e:
            _LOADED[base.name] = e
    loaded = _LOADED[base.name]
    if isinstance(loaded, ArtifactError):
        pytest.skip(str(loaded))
    return loaded


def _ort_gpu_or_skip(provider):
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        pytest.skip(f"{provider} is not available (onnxruntime {ort.__version__} offers "
                    f"{ort.get_available_providers()}); install the `gpu` extra on a machine with an NVIDIA GPU")


def _runner(backend, spec, artifacts: ModelArtifacts, batch):
    base, folder = artifacts.spec, artifacts.folder  # a kernel model's: its base model's
    torch.set_num_threads(spec.serving.ort_threads)
    if backend.startswith("torch"):
        if spec.runtime == "torch" and not torch.cuda.is_available():
            pytest.skip(f"{spec.name} runs Triton kernels, which only run in the interpreter without a GPU: "
                        "timing it there measures the interpreter")
        module = spec.factory()
        module.load_state_dict(load_module(base, folder).state_dict())
        if backend == "torch_compile":
            module = torch.compile(module)
        return lambda x: run_torch(module, spec, x)
    if spec.runtime != "onnx":
        pytest.skip(f"{spec.name} is not exported to ONNX (it runs custom kernels in PyTorch)")
    if backend == "tensorrt":
        from tritonize.export.tensorrt import built_engine, tensorrt_problem

        problem = tensorrt_problem()
        if problem:
            pytest.skip(f"{problem}; TensorRT rows need TensorRT and an NVIDIA GPU")
        engine = built_engine(artifacts)
        if engine is None:
            pytest.skip(f"no TensorRT engine for {spec.name}; run `tritonize optimize {spec.name} --tensorrt`")
        from polygraphy.backend.common import BytesFromPath
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        runner = TrtRunner(EngineFromBytes(BytesFromPath(str(engine[1]))))
        runner.activate()
        return lambda x: runner.infer(x)
    if backend in ("ort_cuda", "ort_tensorrt"):
        provider = {"ort_cuda": "CUDAExecutionProvider", "ort_tensorrt": "TensorrtExecutionProvider"}[backend]
        _ort_gpu_or_skip(provider)
        import onnxruntime as ort

        session = ort.InferenceSession(str(folder / ONNX_FILE), providers=[provider])
        return lambda x: run_ort(session, spec, x)
    variant = backend.removeprefix("ort_")
    path = variant_path(artifacts, variant)
    if not path.is_file():
        pytest.skip(f"no {variant} variant at {path}; run `tritonize optimize {base.name}`")
    session = ort_session(path, threads=spec.serving.ort_threads, spin=False)
    return lambda x: run_ort(session, spec, x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_latency(benchmark, request, artifacts_root, model_name, batch, backend):
    spec = get_spec(model_name)
    artifacts = _artifacts_or_skip(artifacts_root, spec)
    if backend == "torch_compile" and request.config.getoption("--quick"):
        pytest.skip("torch.compile rows are left out of --quick (compilation takes minutes on 2 cores)")
    if batch > spec.serving.max_batch_size:
        pytest.skip(f"batch {batch} is above {spec.name}'s max batch {spec.serving.max_batch_size}")
    run = _runner(backend, spec, artifacts, batch)
    x = spec.example_inputs(batch, spec.default_seq(), np.random.default_rng(0))
    for _ in range(3):
        run(x)  # warm-up (and compilation, for torch.compile) outside the timed rounds
    benchmark.group = f"{spec.name} batch {batch}"
    benchmark.extra_info.update(model=spec.name, batch=batch, backend=backend, seq=spec.default_seq())
    benchmark(run, x)

