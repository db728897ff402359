import pytest

from tritonize.models import get_spec, model_names
from tritonize.repository.writer import build_repository
from tritonize.server import TritonServer


@pytest.fixture(scope="session")
def cpu_repository(artifacts, tmp_path_factory):
    out = tmp_path_factory.mktemp("serving") / "model_repository"
    build_repository([get_spec(n) for n in model_names("onnx")], artifacts, out, "cpu")
    return out


@pytest.fixture(scope="session")
def server(cpu_repository):
    """One real tritonserver for all serving tests, on free loopback ports."""
    with TritonServer(cpu_repository) as s:
        yield s
