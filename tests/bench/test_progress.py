"""bench/suite/progress.py: what the suite reports to, and the rich bars the command line shows."""
import io

import pytest
from rich.console import Console

from tritonize.bench.suite.progress import CallbackProgress, NoProgress, Progress, RichStageProgress, as_progress


def test_a_callable_gets_one_line_per_stage_and_step():
    lines = []
    progress = as_progress(lines.append)
    progress.stage("served: concurrency sweeps", 2)
    progress.advance("mlp grpc concurrency 1: 1000 infer/s")
    assert lines == ["served: concurrency sweeps", "served: concurrency sweeps: mlp grpc concurrency 1: 1000 infer/s"]
    assert isinstance(as_progress(None), NoProgress) and isinstance(progress, CallbackProgress)
    rich = RichStageProgress(Console(file=io.StringIO()))
    assert as_progress(rich) is rich and isinstance(rich, Progress)
    with pytest.raises(TypeError, match="progress expects a Progress .* got int"):
        as_progress(3)


def test_rich_shows_one_bar_per_stage_each_finished_with_its_last_step():
    out = io.StringIO()
    console = Console(file=out, width=140, force_terminal=False)
    with RichStageProgress(console) as progress:
        progress.stage("in-process latency", 3)
        for i in range(3):
            progress.advance(f"[mlp-1-backend{i}] passed")
        progress.stage("dynamic-batching sweep of mlp", 12)  # ends early: still shown as done
        progress.advance("delay 0 us, 1 instances")
    text = out.getvalue()
    final = text[text.rindex("in-process latency"):]  # the last frame: every bar, finished
    assert "3/3" in final and "12/12" in final and "[mlp-1-backend2] passed" in final
    assert "dynamic-batching sweep of mlp" in final and "delay 0 us, 1 instances" in final
