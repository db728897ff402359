import dataclasses
import shutil

import pytest

from tritonize.model_artifacts import ModelArtifacts
from tritonize.export.optimize import VARIANTS, optimize_model
from tritonize.export.stage import export_model
from tritonize.models import get_spec
from tritonize.pipeline.current import ensure_artifacts
from tritonize.pipeline.main_job import RunOptions, run_main_job

pytestmark = pytest.mark.server


def test_main_job_serves_what_it_exported_and_reuses_current_artifacts(artifacts, tmp_path):
    root = tmp_path / "artifacts"
    shutil.copytree(artifacts / "mlp", root / "mlp")
    shutil.copytree(artifacts / "cnn", root / "cnn")
    opts = RunOptions(models=("mlp", "cnn_fused"), artifacts=root, repository=tmp_path / "repo", bench=False)
    report = run_main_job(opts)
    assert report.done == {"mlp": "reused", "cnn": "reused"}
    assert [c.model for c in report.served] == ["mlp", "cnn_fused"]
    assert all(c.ok for c in report.served), report.served
    assert report.served[0].max_abs_err == 0.0  # the same ONNX file through the same runtime
    # No accuracy budget: what serves is within FP32 tolerance, and the run's table says so.
    chosen = ModelArtifacts.load(root, get_spec("mlp")).manifest.optimize.chosen
    assert [c.served for c in report.served] == [f"{chosen} (exact)", "kernels (torch)"]
    assert (tmp_path / "repo" / "cnn_fused" / "config.pbtxt").is_file()


def test_stale_or_unoptimized_artifacts_are_rebuilt(artifacts, tmp_path):
    shutil.copytree(artifacts / "mlp", tmp_path / "mlp")
    changed = dataclasses.replace(get_spec("mlp"), seed=7)  # another description: its artifacts are stale
    done = ensure_artifacts(changed, tmp_path, force=False, step=lambda _: None).done
    assert done == f"rebuilt: {tmp_path / 'mlp'} was produced from another model description (expected " \
                   f"mlp@{changed.fingerprint()}, found mlp@{get_spec('mlp').fingerprint()})"
    assert ModelArtifacts.load(tmp_path, changed).manifest.optimize.chosen
    assert ensure_artifacts(changed, tmp_path, force=False, step=lambda _: None).done == "reused"
    assert ensure_artifacts(changed, tmp_path, force=True, step=lambda _: None).done == "rebuilt (--force)"


def test_a_current_export_is_only_optimized_and_a_missing_one_built(tmp_path):
    spec = get_spec("mlp")
    export_model(spec, tmp_path)
    exported = (tmp_path / "mlp" / "model.onnx").stat().st_mtime_ns
    assert ensure_artifacts(spec, tmp_path, force=False, step=lambda _: None).done == "optimized (the export was current)"
    assert (tmp_path / "mlp" / "model.onnx").stat().st_mtime_ns == exported
    assert ModelArtifacts.load(tmp_path, spec).manifest.optimize.chosen
    assert ensure_artifacts(spec, tmp_path / "fresh", force=False, step=lambda _: None).done == "built"


def test_artifacts_optimized_before_a_variant_existed_are_optimized_again(artifacts, tmp_path):
    shutil.copytree(artifacts / "mlp", tmp_path / "mlp")
    spec = get_spec("mlp")
    optimize_model(spec, tmp_path, variants=("fp32", "int8"))  # as an older `optimize` left them
    assert set(ModelArtifacts.load(tmp_path, spec).manifest.optimize.variants) == {"fp32", "int8"}
    done = ensure_artifacts(spec, tmp_path, force=False, step=lambda _: None).done
    assert done == "optimized again (the export was current; no ort_opt, int8_static variant)"
    assert set(ModelArtifacts.load(tmp_path, spec).manifest.optimize.variants) == set(VARIANTS)
    assert ensure_artifacts(spec, tmp_path, force=False, step=lambda _: None).done == "reused"
