"""Options and fixtures of the pytest-benchmark suite (`tritonize bench`, or `pytest bench/`)."""
import os
from pathlib import Path

import pytest
import torch

# Without a GPU the Triton kernels can only run in the interpreter; it must be on before they load.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_addoption(parser):
    group = parser.getgroup("tritonize")
    group.addoption("--artifacts", default="artifacts", help="artifact root from `tritonize export/optimize`")
    group.addoption("--models", default="", help="comma-separated models (default: all exported)")
    group.addoption("--batches", default="1,32", help="comma-separated batch sizes (default: 1,32)")
    group.addoption("--quick", action="store_true", help="fewer rows: no torch.compile")


@pytest.fixture(scope="session")
def artifacts_root(pytestconfig) -> Path:
    return Path(pytestconfig.getoption("--artifacts"))


def pytest_generate_tests(metafunc):
    from tritonize.models import model_names

    config = metafunc.config
    if "model_name" in metafunc.fixturenames:
        chosen = [m for m in config.getoption("--models").split(",") if m] or model_names()
        metafunc.parametrize("model_name", chosen)
    if "batch" in metafunc.fixturenames:
        metafunc.parametrize("batch", [int(b) for b in config.getoption("--batches").split(",")])
