"""The typed artifacts object: strict on read, with the path of a bad field named; and one
verification per model per command (`tritonize run` reads each manifest once and hashes each file once)."""
import collections
import json
import re
import shutil
from pathlib import Path

import pytest

from tritonize import model_artifacts
from tritonize.model_artifacts import Manifest
from tritonize.models import get_spec
from tritonize.pipeline.main_job import RunOptions, run_main_job

GOOD = {"model": "mlp", "spec_fingerprint": "abc", "files": {"model.onnx": "0" * 64}, "created": "now",
        "versions": {}, "export": {"exporter": "dynamo", "opset": 18},
        "parity": {"ok": True, "max_abs_err": 1e-6, "cases": 4},
        "optimize": {"chosen": "fp32", "why": "the only one",
                     "variants": {"fp32": {"built": True, "parity_ok": True, "threads": None}}}}


def _with(path: str, value) -> dict:
    """GOOD with the field at dotted `path` set to `value`."""
    import copy

    data = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


def test_a_manifest_reads_by_attribute():
    manifest = Manifest.parse(GOOD)
    assert manifest.optimize.chosen == "fp32" and manifest.files == {"model.onnx": "0" * 64}
    fp32 = manifest.optimize.variants["fp32"]
    assert fp32.built and fp32.parity_ok and fp32.threads is None and fp32.measured_threads
    assert manifest.tensorrt == {} and manifest.to_json() is GOOD
    assert (manifest.export.exporter, manifest.export.opset, manifest.export.cases) == ("dynamo", 18, 4)


@pytest.mark.parametrize("path, value, message", [
    ("optimize.chosen", ["fp32"], 'optimize.chosen: expected a variant name, got ["fp32"]'),
    ("optimize.variants.fp32.parity_ok", "yes", 'optimize.variants.fp32.parity_ok: expected true or false, got "yes"'),
    ("optimize.variants.fp32", 3, "optimize.variants.fp32: expected a variant's report (an object), got 3"),
    ("optimize.variants.fp32.threads", [1], "optimize.variants.fp32.threads: expected a thread profile, got [1]"),
    ("optimize", "fp32", 'optimize: expected optimize\'s report (an object), got "fp32"'),
    ("files", {"model.onnx": 1}, 'files: expected an object mapping each file to its SHA-256, got {"model.onnx": 1}'),
    ("tensorrt", [], "tensorrt: expected the engines by precision, got []"),
    ("model", None, "model: expected the model's name, got nothing"),
    ("export.opset", "18", 'export.opset: expected an opset number, got "18"'),
    ("parity.cases", True, "parity.cases: expected a count, got true"),
])
def test_a_bad_field_is_refused_with_its_path(path, value, message):
    with pytest.raises(ValueError) as caught:
        Manifest.parse(_with(path, value))
    assert str(caught.value) == message


def test_a_bad_field_in_a_folder_names_the_file_and_the_field(artifacts, tmp_path):

    from tritonize.artifacts import ArtifactError
    from tritonize.model_artifacts import ModelArtifacts

    shutil.copytree(artifacts / "mlp", tmp_path / "mlp")
    path = tmp_path / "mlp" / "manifest.json"
    data = json.loads(path.read_text())
    data["optimize"]["variants"]["int8"]["built"] = "yes"
    path.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=re.escape(f"{path}: optimize.variants.int8.built: expected true or "
                                                      f'false, got "yes"; run `tritonize export mlp')):
        ModelArtifacts.load(tmp_path, get_spec("mlp"))


@pytest.fixture
def counted(monkeypatch):
    """Every manifest read and every file digest of an artifact folder in this process, by path (a
    folder being built, `.mlp.tmp-1a2b3c4d`, counts as the folder it becomes)."""
    reads, digests = collections.Counter(), collections.Counter()
    read, digest = model_artifacts._read_manifest, model_artifacts._digest

    def final(path: Path) -> str:
        return re.sub(r"/\.([^/]+)\.tmp-[0-9a-f]{8}(?=/)", r"/\1", str(path))

    def counting_read(path):
        reads[final(path)] += 1
        return read(path)

    def counting_digest(path):
        digests[final(path)] += 1
        return digest(path)

    monkeypatch.setattr(model_artifacts, "_read_manifest", counting_read)
    monkeypatch.setattr(model_artifacts, "_digest", counting_digest)
    return reads, digests


@pytest.mark.server
def test_run_verifies_each_model_once(artifacts, tmp_path, counted):
    reads, digests = counted
    root = tmp_path / "artifacts"
    shutil.copytree(artifacts / "mlp", root / "mlp")
    listed = Manifest.parse(json.loads((root / "mlp" / "manifest.json").read_text())).files
    opts = RunOptions(models=("mlp",), artifacts=root, repository=tmp_path / "repo", bench=False)
    assert run_main_job(opts).done == {"mlp": "reused"}
    assert dict(reads) == {str(root / "mlp" / "manifest.json"): 1}
    assert dict(digests) == {str(root / "mlp" / name): 1 for name in listed}


@pytest.mark.server
def test_a_run_that_builds_the_artifacts_hashes_each_file_once_and_reads_no_manifest(tmp_path, counted):
    reads, digests = counted
    root = tmp_path / "artifacts"
    opts = RunOptions(models=("mlp",), artifacts=root, repository=tmp_path / "repo", bench=False)
    assert run_main_job(opts).done == {"mlp": "built"}
    listed = Manifest.parse(json.loads((root / "mlp" / "manifest.json").read_text())).files
    assert not reads  # export wrote the manifest and handed it on
    assert dict(digests) == {str(root / "mlp" / name): 1 for name in listed}
