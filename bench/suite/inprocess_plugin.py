"""Options and fixtures of the in-process pytest-benchmark suite (inprocess_cases.py), as a pytest
plugin: `pytest .../inprocess_cases.py -p tritonize.bench.suite.inprocess_plugin` (what
`tritonize bench` runs, see inprocess.py). A plugin, not a conftest.py, so that no pytest file ships.

With `--events-fd N` every finished test is also written to file descriptor N as one JSON line
(`{"test": ..., "outcome": "passed" | "skipped" | "failed", "reason": ...}`): the suite
(bench/suite/inprocess.py) runs this benchmark in a child process with all of pytest's own output
captured, and follows its progress and skip reasons through that descriptor."""
import json
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
    group.addoption("--events-fd", type=int, default=None, help="write one JSON line per finished test to this fd")


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


class _Events:
    """Each finished test as a JSON line: its worst outcome over setup, call and teardown, and for a
    skip or a failure the reason (a failure's text is cut to its end, where the error is)."""

    def __init__(self, stream):
        self.stream, self.tests = stream, {}

    def pytest_runtest_logreport(self, report):
        test = self.tests.setdefault(report.nodeid, {"test": report.nodeid, "outcome": "passed", "reason": ""})
        if report.failed:
            test.update(outcome="failed", reason=report.longreprtext[-3000:])
        elif report.skipped and test["outcome"] == "passed":
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            test.update(outcome="skipped", reason=reason.removeprefix("Skipped: "))

    def pytest_runtest_logfinish(self, nodeid, location):
        self.stream.write(json.dumps(self.tests.pop(nodeid, {"test": nodeid, "outcome": "passed", "reason": ""})) + "\n")
        self.stream.flush()


def pytest_configure(config):
    fd = config.getoption("--events-fd", None)
    if fd is not None:
        config.pluginmanager.register(_Events(os.fdopen(fd, "w", buffering=1)), "tritonize-events")
