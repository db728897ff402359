import os

# Triton kernels run in Triton's CPU interpreter here; it must be switched on before any
# @triton.jit function is defined, so before anything imports tritonize.kernels.
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
        optimize_model(get_spec(name), root, latency_iters=20)
    return root
