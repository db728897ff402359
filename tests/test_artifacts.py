"""Whole folders are written beside their place and swapped in; a folder tritonize did not write is
never replaced, by any stage."""
import datetime as dt
import json
import shutil
import socket

import pytest
from tritonize.artifacts import VARIANTS, ArtifactError, atomic_dir, sha256
from tritonize.bench.suite.options import SuiteOptions
from tritonize.bench.suite.run import run_suite
from tritonize.cli import main
from tritonize.model_artifacts import ModelArtifacts
from tritonize.pipeline.main_job import RunOptions, run_main_job
from tritonize.export.optimize import optimize_model
from tritonize.export.stage import export_model
from tritonize.model_repository.writer import build_repository
from tritonize.models import get_spec


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


# A model's artifact folder holds only files its manifest lists, at paths inside the folder: what a
# stage reads is what export and optimize wrote and digested, whatever the manifest is edited to say.

@pytest.fixture(scope="module")
def exported_mlp(tmp_path_factory):
    """mlp exported and optimized (FP32 variant only: quick) by the real stages, once per module."""
    root = tmp_path_factory.mktemp("pristine")
    export_model(get_spec("mlp"), root)
    optimize_model(get_spec("mlp"), root, variants=("fp32",), latency_iters=2, agreement_rows=16)
    return root


@pytest.fixture
def art(exported_mlp, tmp_path):
    """A copy of that artifact root for one test to tamper with, and a file outside it (where
    ../../../elsewhere from the variants folder leads) that must never be served."""
    shutil.copytree(exported_mlp, tmp_path / "art")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "model.onnx").write_bytes(b"not the model")
    return tmp_path / "art"


def edit_manifest(art, change):
    path = art / "mlp" / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def repo_refuses(art, tmp_path, capsys, *expected):
    """`tritonize repo mlp` exits 2 with a message holding each of `expected`, and writes nothing."""
    out = tmp_path / "build" / "model_repository"
    assert main(["repo", "mlp", "--artifacts", str(art), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for text in expected:
        assert text in err
    build = tmp_path / "build"  # made only where the check comes after the repository's folder was started
    assert not out.exists() and (not build.exists() or not list(build.iterdir()))


def test_repo_serves_the_untampered_folder(art, tmp_path):
    out = tmp_path / "repo"
    assert main(["repo", "mlp", "--artifacts", str(art), "--out", str(out)]) == 0
    served = (out / "mlp" / "1" / "model.onnx").read_bytes()
    assert served == (art / "mlp" / "variants" / "fp32" / "model.onnx").read_bytes()


@pytest.mark.parametrize("chosen", ["../../../elsewhere", "/tmp", "int4"])
def test_a_chosen_variant_must_be_one_of_the_variants(chosen, art, tmp_path, capsys):
    edit_manifest(art, lambda m: m["optimize"].update(chosen=chosen))
    repo_refuses(art, tmp_path, capsys, f"{art / 'mlp' / 'manifest.json'} names {json.dumps(chosen)} as "
                                        f"optimize.chosen; expected one of {', '.join(VARIANTS)}")


def test_a_chosen_variant_must_be_listed(art, tmp_path, capsys):
    edit_manifest(art, lambda m: m["optimize"].update(chosen="int8"))  # a variant this optimize did not build
    repo_refuses(art, tmp_path, capsys, "names 'int8' as optimize.chosen but lists no variants/int8/model.onnx")


def _list_outside(m, name, file):
    m["files"][name] = sha256(file)


@pytest.mark.parametrize("name", ["../../elsewhere/model.onnx", "variants/../../../elsewhere/model.onnx",
                                  "ABSOLUTE", "./model.onnx"])
def test_a_listed_path_must_be_relative_and_inside_the_folder(name, art, tmp_path, capsys):
    name = str(tmp_path / "elsewhere" / "model.onnx") if name == "ABSOLUTE" else name
    edit_manifest(art, lambda m: _list_outside(m, name, tmp_path / "elsewhere" / "model.onnx"))
    repo_refuses(art, tmp_path, capsys, f"lists {json.dumps(name)} under 'files'; expected a path relative to "
                                        f"{art / 'mlp'}, without '..'")


def test_a_listed_file_must_not_lead_outside_through_a_link(art, tmp_path, capsys):
    served = art / "mlp" / "variants" / "fp32" / "model.onnx"
    served.unlink()
    served.symlink_to(tmp_path / "elsewhere" / "model.onnx")
    edit_manifest(art, lambda m: _list_outside(m, "variants/fp32/model.onnx", served))  # its digest, made true
    repo_refuses(art, tmp_path, capsys, "lists 'variants/fp32/model.onnx', which resolves to "
                                        f"{tmp_path / 'elsewhere' / 'model.onnx'}, outside {art / 'mlp'}")


def test_a_file_whose_entry_was_deleted_is_refused(art, tmp_path, capsys):
    served = art / "mlp" / "variants" / "fp32" / "model.onnx"
    served.write_bytes(b"another graph")  # an edit that its digest would catch, so the entry goes too
    edit_manifest(art, lambda m: m["files"].pop("variants/fp32/model.onnx"))
    repo_refuses(art, tmp_path, capsys, f"{served} is in the artifact folder but not listed in "
                                        f"{art / 'mlp' / 'manifest.json'}", "tritonize export mlp")


def test_an_added_file_is_refused(art, tmp_path, capsys):
    (art / "mlp" / "model.onnx.data").write_bytes(b"external weights nobody digested")
    repo_refuses(art, tmp_path, capsys, f"{art / 'mlp' / 'model.onnx.data'} is in the artifact folder but not listed")


def test_an_edited_file_is_still_refused_by_its_digest(art, tmp_path, capsys):
    (art / "mlp" / "weights.safetensors").write_bytes(b"edited")
    repo_refuses(art, tmp_path, capsys, "weights.safetensors does not match its manifest digest")


def test_temporary_names_and_the_timing_cache_need_no_entry(art, tmp_path):
    """What a running (or killed) stage leaves, which no stage reads, does not make a folder unusable."""
    folder = art / "mlp"
    (folder / ".variants.old-ab12cd34" / "fp32").mkdir(parents=True)
    (folder / ".variants.old-ab12cd34" / "fp32" / "model.onnx").write_bytes(b"old")
    (folder / ".manifest.json.0123abcd.tmp").write_text("{")
    (folder / "tensorrt").mkdir()
    (folder / "tensorrt" / "timing.cache").write_bytes(b"cache")
    assert ModelArtifacts.load(art, get_spec("mlp")).manifest.optimize.chosen == "fp32"
    (folder / "tensorrt" / "fp16").mkdir()
    (folder / "tensorrt" / "fp16" / "model.plan").write_bytes(b"an engine nobody listed")
    with pytest.raises(ArtifactError, match="tensorrt/fp16/model.plan is in the artifact folder but not listed"):
        ModelArtifacts.load(art, get_spec("mlp"))
    # A stage about to rebuild a sub-folder (here: that engine's) does not check what it replaces.
    assert ModelArtifacts.load(art, get_spec("mlp"), ignore_under="tensorrt/fp16")
