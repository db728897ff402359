import contextlib
import functools
import os
import subprocess
import sys

import pytest

from tritonize.serving.server import free_port


@contextlib.contextmanager
def _serve_cli(repository, *flags):
    """`tritonize serve` in a child process on free ports; yields it with the lines it printed up to
    "Ctrl-C" (the ready message). The test stops it; a child still running at the end is killed."""
    ports = [f"--{kind}-port={free_port()}" for kind in ("http", "grpc", "metrics")]
    proc = subprocess.Popen([sys.executable, "-m", "tritonize.cli", "serve", "--repo", str(repository), *flags, *ports],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
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


@pytest.fixture
def serve_cli(cpu_repository):
    return functools.partial(_serve_cli, cpu_repository)
