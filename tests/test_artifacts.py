"""Whole folders are written beside their place and swapped in; a folder tritonize did not write is
never replaced, by any stage."""
import datetime as dt
import socket

import pytest

from tritonize.artifacts import atomic_dir
from tritonize.bench.suite import SuiteOptions, run_suite
from tritonize.export.stage import export_model
from tritonize.models import get_spec
from tritonize.cli.pipeline import RunOptions, run_main_job
from tritonize.model_repository.writer import build_repository


def test_a_folder_is_swapped_in_whole_and_a_failure_leaves_the_old_one(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final, marker="index.json") as tmp:
        (tmp / "index.json").write_text("1")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(final, marker="index.json") as tmp:
            (tmp / "index.json").write_text("2")
            raise RuntimeError("boom")
    assert (final / "index.json").read_text() == "1" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with atomic_dir(final, marker="index.json") as tmp:  # one it wrote before is replaced
        (tmp / "index.json").write_text("3")
    assert [p.name for p in final.iterdir()] == ["index.json"] and (final / "index.json").read_text() == "3"


@pytest.fixture
def foreign(tmp_path):
    """A user's folder with a file in it, where a stage is about to write; afterwards it must be as it
    was, with no temp folder left beside it."""
    made = []

    def make(path):
        path.mkdir(parents=True)
        (path / "notes.txt").write_text("keep me")
        made.append(path)
        return path

    yield make
    for folder in made:
        assert [p.name for p in folder.iterdir()] == ["notes.txt"] and (folder / "notes.txt").read_text() == "keep me"
        assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]


def test_atomic_dir_refuses_a_folder_without_its_marker(foreign, tmp_path):
    folder = foreign(tmp_path / "mine")
    with pytest.raises(FileExistsError, match=f"{folder} exists and holds files but no index.json"):
        with atomic_dir(folder, marker="index.json"):
            pytest.fail("the body must not run")


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "out").write_text("a file")
    with pytest.raises(FileExistsError, match="is not a folder"):
        with atomic_dir(tmp_path / "out", marker="index.json"):
            pytest.fail("the body must not run")


def test_repo_refuses_to_replace_a_foreign_folder(artifacts, foreign, tmp_path):
    with pytest.raises(FileExistsError, match="no repository.json"):
        build_repository([get_spec("mlp")], artifacts, foreign(tmp_path / "repo"))


def test_export_refuses_to_replace_a_foreign_model_folder(foreign, tmp_path):
    foreign(tmp_path / "mlp")
    with pytest.raises(FileExistsError, match="no manifest.json"):
        export_model(get_spec("mlp"), tmp_path, step=lambda _: pytest.fail("no export work may start"))


def test_run_refuses_a_foreign_repository_before_exporting(foreign, tmp_path):
    with pytest.raises(FileExistsError, match="no repository.json"):
        run_main_job(RunOptions(models=("mlp",), artifacts=tmp_path / "artifacts", repository=foreign(tmp_path / "repo"),
                                results=tmp_path / "results"),
                     step=lambda msg: pytest.fail(f"no work may start, got {msg!r}"))
    assert not (tmp_path / "artifacts").exists()


def test_bench_refuses_a_foreign_report_folder_before_measuring(foreign, tmp_path):
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    foreign(tmp_path / f"{socket.gethostname()}-{today}")  # where today's report of this host goes
    with pytest.raises(FileExistsError, match="no results.json"):
        run_suite(SuiteOptions(models=["mlp"], artifacts=tmp_path / "artifacts", results_root=tmp_path),
                  progress=lambda msg: pytest.fail(f"no measuring may start, got {msg!r}"))
