"""In-process latency: pytest-benchmark over inprocess_cases.py, run silently for the suite.

The benchmark stays a pytest-benchmark suite (`pytest bench/suite/inprocess_cases.py -p
tritonize.bench.suite.inprocess_plugin --artifacts DIR` runs it by hand, with its table), but the
suite runs it in a child process: pytest's console output, its warnings and
pytest-benchmark's own lines go to a file instead of the user's terminal, the rows come back through
pytest-benchmark's JSON, and each finished test (with a skip's reason) through a pipe that
inprocess_plugin.py writes one JSON line per test to, which drives the progress bar.

Its two files are named so that no pytest file ships in the wheel (no test_*.py, no conftest.py):
pytest gets the cases file by path and the plugin by `-p` (what a conftest.py beside them did), and
collects the cases file's test functions because it is named on the command line. The child process
also keeps the benchmark's thread settings (torch.set_num_threads per model) out of the suite's
process. When the run fails, the error carries the failed tests' reasons and the end of the output.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..record import Record
from .options import SuiteOptions
from .progress import NoProgress, Progress

HERE = Path(__file__).parent
CASES = HERE / "inprocess_cases.py"
PLUGIN = f"{__package__}.inprocess_plugin"
BATCHES = (1, 32)
OUTPUT_TAIL = 4000  # characters of the child's output kept in an error


@dataclass
class InProcessRow(Record):
    """One backend's latency for one model and batch: pytest-benchmark's statistics, in microseconds."""
    model: str
    batch: int
    backend: str
    median_us: float
    iqr_us: float
    mean_us: float
    stddev_us: float
    min_us: float
    rounds: int


class InProcessFailed(RuntimeError):
    pass


def expected_tests(opts: SuiteOptions) -> int:
    """How many rows the benchmark has: each model x batch x backend runs or is skipped."""
    from .inprocess_cases import BACKENDS

    return len(opts.models) * len(BATCHES) * len(BACKENDS)


def command(opts: SuiteOptions, work: Path, events_fd: int) -> list[str]:
    ini = work / "pytest.ini"  # an empty config: the project's own pytest settings are not the benchmark's
    ini.write_text("[pytest]\n")
    args = [sys.executable, "-P", "-m", "pytest", str(CASES), "-p", PLUGIN, "-c", str(ini), f"--rootdir={HERE}",
            "-q", "-p", "no:cacheprovider", "--import-mode=importlib", f"--artifacts={opts.artifacts}",
            f"--models={','.join(opts.models)}", f"--batches={','.join(map(str, BATCHES))}",
            f"--benchmark-json={work / 'pytest-benchmark.json'}", "--benchmark-disable-gc",
            f"--events-fd={events_fd}"]
    if opts.quick:
        args += ["--quick", "--benchmark-max-time=0.2", "--benchmark-min-rounds=10"]
    else:
        args += ["--benchmark-min-rounds=20"]
    return args


def _row_name(nodeid: str) -> str:
    return nodeid.split("::")[-1].removeprefix("test_latency")


def run_inprocess(opts: SuiteOptions, work: Path,
                  progress: Progress | None = None) -> tuple[list[InProcessRow], dict[str, str]]:
    """The in-process rows, sorted by model, batch and median, and each skipped row's reason."""
    progress = progress or NoProgress()
    progress.stage("in-process latency", expected_tests(opts))
    work.mkdir(parents=True, exist_ok=True)
    out, log = work / "pytest-benchmark.json", work / "pytest-output.txt"
    read_end, write_end = os.pipe()
    skipped: dict[str, str] = {}
    failed: list[str] = []
    try:
        with open(log, "w") as output:
            proc = subprocess.Popen(command(opts, work, write_end), stdin=subprocess.DEVNULL, stdout=output,
                                    stderr=subprocess.STDOUT, pass_fds=(write_end,))
        os.close(write_end)
        write_end = -1
        try:
            with os.fdopen(read_end, "r") as events:
                read_end = -1
                for line in events:
                    event = json.loads(line)
                    name = _row_name(event["test"])
                    if event["outcome"] == "skipped":
                        skipped[f"in-process {name}"] = event["reason"]
                    elif event["outcome"] == "failed":
                        failed.append(f"{name}: {event['reason'].strip()[-600:]}")
                    progress.advance(f"{name} {event['outcome']}")
            code = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted while it ran: it must not outlive the suite
                proc.kill()
                proc.wait()
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    if code not in (0, 5) or not out.exists():
        tail = log.read_text(errors="replace")[-OUTPUT_TAIL:]
        failures = "\n".join(failed[:5]) or "no test failed; see the output"
        raise InProcessFailed(f"the in-process benchmarks failed (pytest exit code {code}).\nFailed tests:\n"
                              f"{failures}\nEnd of pytest's output:\n{tail}")
    rows = []
    for b in json.loads(out.read_text())["benchmarks"]:
        s, info = b["stats"], b["extra_info"]
        rows.append(InProcessRow(model=info["model"], batch=info["batch"], backend=info["backend"],
                                 median_us=s["median"] * 1e6, iqr_us=s["iqr"] * 1e6, mean_us=s["mean"] * 1e6,
                                 stddev_us=s["stddev"] * 1e6, min_us=s["min"] * 1e6, rounds=s["rounds"]))
    rows.sort(key=lambda r: (r.model, r.batch, r.median_us))
    return rows, skipped
