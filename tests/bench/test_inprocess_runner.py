"""The in-process benchmark runner: pytest-benchmark in a child process, none of its output on the
user's terminal, failures reported with their reasons."""
import pytest

from tritonize.bench.suite.options import SuiteOptions
from tritonize.bench.suite.inprocess import InProcessFailed, expected_tests, run_inprocess


@pytest.mark.server
def test_the_inprocess_runner_prints_nothing(artifacts, tmp_path, capfd):
    opts = SuiteOptions.quick_defaults(models=["mlp"], artifacts=artifacts)
    rows, skipped = run_inprocess(opts, tmp_path)
    assert rows and all(r.model == "mlp" and r.rounds > 0 for r in rows)
    assert len(rows) + len(skipped) == expected_tests(opts)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_a_failing_inprocess_run_raises_with_the_failures_and_the_output(tmp_path, capfd):
    opts = SuiteOptions.quick_defaults(models=["nosuch"], artifacts=tmp_path)  # every test fails to find the model
    with pytest.raises(InProcessFailed, match="pytest exit code 1") as failed:
        run_inprocess(opts, tmp_path / "work")
    assert "[nosuch-1-torch_eager]" in str(failed.value) and "nosuch" in str(failed.value).split("End of pytest")[1]
    assert capfd.readouterr() == ("", "")
