import os

import torch

# Without a GPU, Triton kernels run in Triton's CPU interpreter; it must be switched on before any
# @triton.jit function is defined, so before anything imports tritonize.kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from tritonize.models import get_spec, model_names  # noqa: E402


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """Every exportable model exported and optimized once, for all tests that need artifacts."""
    from tritonize.export.optimize import optimize_model
    from tritonize.export.stage import export_model

    root = tmp_path_factory.mktemp("artifacts")
    for name in model_names("onnx"):
        export_model(get_spec(name), root)
        optimize_model(get_spec(name), root, latency_iters=20, agreement_rows=256)
    return root


@pytest.fixture(scope="session")
def cpu_repository(artifacts, tmp_path_factory):
    """A CPU-target model repository of every model, kernel models included."""
    from tritonize.model_repository.writer import build_repository

    out = tmp_path_factory.mktemp("serving") / "model_repository"
    build_repository([get_spec(n) for n in model_names()], artifacts, out, "cpu")
    return out


@pytest.fixture(scope="session")
def server(cpu_repository):
    """One real tritonserver for all serving tests, on free loopback ports."""
    from tritonize.serving.server import TritonServer

    with TritonServer(cpu_repository) as s:
        yield s
