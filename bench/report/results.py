"""The whole benchmark run as one typed record: what results.json holds and the report reads.

Built up by the suite while it measures (rows appended, `skip()` for every part that did not run and
why), written with `to_json()` and read back with `SuiteResults.read(folder)`; the report, the CSV,
the plots and the tests read attributes of it. Each part's own type lives beside the code that
measures it (load/served.py, load/perf_analyzer.py, suite/sweep.py, suite/inprocess.py, suite/slo.py), or
for the project's studies, which are not installed, in report/project.py.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ...artifacts import RESULTS_FILE, write_json
from ..load.perf_analyzer import PerfAnalyzerRow
from ..load.served import ServedRow
from ..record import Record
from ..suite.inprocess import InProcessRow
from ..suite.options import SuiteOptions
from ..suite.slo import SloVerdict
from ..suite.sweep import SweepResult
from ..suite.variants import VariantRow
from .project import ProjectResults
from .provenance import Machine


@dataclass
class SuiteResults(Record):
    started: str  # ISO time, UTC
    date: str
    machine: Machine
    versions: dict[str, str]
    git_commit: str
    options: SuiteOptions
    variants: list[VariantRow] = field(default_factory=list)  # optimize's variants, as it measured them
    inprocess: list[InProcessRow] = field(default_factory=list)
    placement: str | None = None  # how the served part split the cores; None when nothing was served
    served: list[ServedRow] = field(default_factory=list)
    perf_analyzer: list[PerfAnalyzerRow] | None = None  # None: not run (the reason is in `skipped`)
    sweep: SweepResult | None = None
    slos: list[SloVerdict] = field(default_factory=list)  # the user's SLOs judged per model and protocol
    project: ProjectResults | None = None  # the project's own benchmark, when asked for (--project)
    skipped: dict[str, str] = field(default_factory=dict)  # what did not run -> why

    def skip(self, what: str, why: str) -> None:
        self.skipped[what] = why

    @property
    def quick(self) -> bool:
        return self.options.quick

    def write(self, folder: Path) -> Path:
        path = Path(folder) / RESULTS_FILE
        write_json(path, self.to_json())
        return path

    @classmethod
    def read(cls, folder: Path) -> "SuiteResults":
        """A report folder's results.json; a ValueError names the file and what in it is not a result."""
        path = Path(folder) / RESULTS_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"expected a benchmark results file at {path}: {e}") from None
        return cls.from_json(data, where=str(path))
