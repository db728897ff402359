import contextlib
import functools
import os
import subprocess
import sys

import pytest

from tritonize.serving.server import free_port

# Two Python-backend models that need no artifacts, so lifecycle tests start in a second or two:
# `echo` answers its input, `slow` sleeps for as many seconds as its input says, then answers it.
CONFIG = """\
name: "{name}"
backend: "python"
max_batch_size: 0
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 1 ] }} ]
output [ {{ name: "y" data_type: TYPE_FP32 dims: [ 1 ] }} ]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
"""
MODEL = """\
import time

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            if {sleeps}:
                time.sleep(float(x[0]))
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("y", x)]))
        return responses
"""


@contextlib.contextmanager
def _serve_cli(repository, *flags, env=None, base_env=None, fixed_ports=True):
    """`tritonize serve` in a child process on free ports (chosen here, or by serve itself with
    `fixed_ports=False`, as replicas need); yields it with the lines it printed up to "Ctrl-C" (the ready
    message). `env` is added to `base_env` (default: os.environ). The test stops it; a child still
    running at the end is killed."""
    ports = [f"--{kind}-port={free_port()}" for kind in ("http", "grpc", "metrics")] if fixed_ports else []
    proc = subprocess.Popen([sys.executable, "-P", "-m", "tritonize.cli", "serve", "--repo", str(repository), *flags, *ports],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**(os.environ if base_env is None else base_env), "COLUMNS": "200", **(env or {})})
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C" in line:
                break
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "model_repository"
    for name, sleeps in (("echo", False), ("slow", True)):
        (root / name / "1").mkdir(parents=True)
        (root / name / "config.pbtxt").write_text(CONFIG.format(name=name))
        (root / name / "1" / "model.py").write_text(MODEL.format(sleeps=sleeps))
    return root


@pytest.fixture
def serve_cli(cpu_repository):
    return functools.partial(_serve_cli, cpu_repository)


@pytest.fixture
def serve_tiny(tiny_repository):
    return functools.partial(_serve_cli, tiny_repository)


@pytest.fixture
def serve_any():
    """`tritonize serve` in a child process, on any repository (a folder or s3://...)."""
    return _serve_cli
