import dataclasses
import json

import numpy as np
import onnx
import pytest

from tritonize.artifacts import ArtifactError
from tritonize.model_artifacts import ModelArtifacts
from tritonize.cli import main
from tritonize.export.parity import ParityError
from tritonize.export.runtime import ort_session, run_ort, run_torch
from tritonize.export.stage import export_model, load_module
from tritonize.models import REGISTRY, Tolerance, get_spec, model_names

EXPORTED = model_names("onnx")


@pytest.mark.parametrize("name", EXPORTED)
def test_onnx_matches_pytorch_on_fresh_inputs(artifacts, name):
    spec = get_spec(name)
    module = load_module(spec, artifacts / name)
    session = ort_session(artifacts / name / "model.onnx")
    rng = np.random.default_rng()
    tol = spec.tolerance("fp32")
    batches = [1, 3, spec.serving.max_batch_size]
    seqs = [1, 9, spec.max_seq_len] if spec.has_seq else [None]
    for batch in batches:
        for seq in seqs:
            x = spec.example_inputs(batch, seq, rng)
            expected, got = run_torch(module, spec, x), run_ort(session, spec, x)
            for out in spec.output_names:
                np.testing.assert_allclose(got[out], expected[out], atol=tol.atol, rtol=tol.rtol)


@pytest.mark.parametrize("name", EXPORTED)
def test_export_writes_dynamic_axes_weights_and_a_parity_report(artifacts, name):
    spec = get_spec(name)
    folder = artifacts / name
    manifest = ModelArtifacts.load(artifacts, spec).manifest
    assert {"model.onnx", "weights.safetensors", "parity.json"} <= set(manifest.files)
    graph = onnx.load(str(folder / "model.onnx")).graph
    for t, v in zip(spec.inputs, graph.input):
        assert v.name == t.name
        for axis in t.dynamic_axes:
            assert v.type.tensor_type.shape.dim[axis].dim_param, f"{t.name} axis {axis} is not dynamic"
    report = json.loads((folder / "parity.json").read_text())
    assert report["ok"] and report["max_abs_err"] <= spec.tolerance("fp32").atol
    assert len({c["batch"] for c in report["cases"]}) >= 3
    if spec.has_seq:
        assert len({c["seq"] for c in report["cases"]}) >= 3


def test_a_corrupted_or_missing_artifact_is_refused(artifacts, tmp_path):
    spec = get_spec("mlp")
    export_model(spec, tmp_path)
    onnx_file = tmp_path / "mlp" / "model.onnx"
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="model.onnx does not match its manifest digest"):
        ModelArtifacts.load(tmp_path, spec)
    onnx_file.unlink()
    with pytest.raises(ArtifactError, match="model.onnx is listed in the manifest but missing"):
        ModelArtifacts.load(tmp_path, spec)
    (tmp_path / "mlp" / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="manifest.json is missing"):
        ModelArtifacts.load(tmp_path, spec)
    with pytest.raises(ArtifactError, match="no artifact folder.*tritonize export cnn"):
        ModelArtifacts.load(tmp_path, get_spec("cnn"))


def test_artifacts_of_another_spec_are_refused(artifacts):
    changed = dataclasses.replace(get_spec("mlp"), seed=99)
    with pytest.raises(ArtifactError, match="produced from another model description"):
        ModelArtifacts.load(artifacts, changed)


def test_failed_parity_exits_with_shape_and_error_and_leaves_nothing(tmp_path):
    strict = dataclasses.replace(get_spec("transformer"), tolerances={"fp32": Tolerance(atol=0.0, rtol=0.0)})
    with pytest.raises(ParityError, match=r"worst at input shape batch \d+, seq \d+: output 'logits' max abs error"):
        export_model(strict, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cli_unknown_model_lists_known_ones(capsys):
    assert main(["export", "nosuchmodel"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'nosuchmodel'" in err and all(n in err for n in REGISTRY if n in EXPORTED)


def test_cli_optimize_without_export_says_how(tmp_path, capsys):
    assert main(["optimize", "cnn", "--artifacts", str(tmp_path)]) == 2
    assert "tritonize export cnn" in capsys.readouterr().err


def test_cli_an_unwritable_output_is_an_error_not_a_traceback(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["export", "mlp", "--artifacts", str(blocker / "artifacts")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and str(blocker / "artifacts") in err and "Traceback" not in err
    assert blocker.read_text() == ""


def test_legacy_exporter_is_an_option(tmp_path):
    manifest = export_model(get_spec("mlp"), tmp_path, exporter="legacy").manifest
    assert manifest.export.exporter == "legacy" and manifest.export.parity_ok
