"""Models named by reference (`file.py:ATTR`, `package.module:ATTR`) as built-in ones are by name:
resolved once, remembered by name, recorded in the manifest, and every bad reference refused with one
message that names it."""
import sys
import textwrap

import pytest

from tritonize import ModelSpec, TensorSpec
from tritonize.model_artifacts import ModelArtifacts
from tritonize.cli import main
from tritonize.export.onnx_export import ExportError
from tritonize.export.stage import export_model
from tritonize.models import registry
from tritonize.models.references import ModelReferenceError
from tritonize.models.registry import UnknownModelError, get_spec

MODEL_FILE = textwrap.dedent('''
    import torch
    from torch import nn

    from tritonize import ModelSpec, TensorSpec


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return {forward}


    def build():
        torch.manual_seed(0)
        return Net()


    SPEC = ModelSpec(name="{name}", factory=build, inputs=[TensorSpec("x", "float32", ("batch", 4))],
                     outputs=[TensorSpec("y", "float32", ("batch", 2))])


    def make_spec():
        return SPEC


    NOT_A_SPEC = 42
''')


@pytest.fixture(autouse=True)
def fresh_names(monkeypatch):
    """Each test resolves its models afresh: the names remembered by one do not clash with another's."""
    monkeypatch.setattr(registry, "_RESOLVED", {})


def write_model(folder, name="user_net", forward="self.fc(x)", file="net.py"):
    path = folder / file
    path.write_text(MODEL_FILE.format(name=name, forward=forward))
    return path


def test_a_file_reference_resolves_to_its_spec_with_its_source_and_is_remembered_by_name(tmp_path):
    path = write_model(tmp_path)
    spec = get_spec(f"{path}:SPEC")
    assert isinstance(spec, ModelSpec) and spec.name == "user_net"
    assert spec.source.reference == f"{path}:SPEC" and spec.source.file == str(path.resolve())
    assert len(spec.source.sha256) == 64
    assert get_spec("user_net") is spec  # later stages look it up by name
    assert get_spec(f"{path}:make_spec").name == "user_net"  # a function returning the spec, same file: no clash


def test_a_module_reference_resolves_through_the_import_system(tmp_path, monkeypatch):
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write_model(package, name="pkg_net", file="nets.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        spec = get_spec("userpkg.nets:SPEC")
    finally:
        for name in ("userpkg", "userpkg.nets"):
            sys.modules.pop(name, None)
    assert spec.name == "pkg_net" and spec.source.file == str((package / "nets.py").resolve())


def test_only_the_four_essential_fields_are_required():
    spec = ModelSpec(name="tiny", factory=lambda: None, inputs=[TensorSpec("x", "float32", ("batch", 2))],
                     outputs=[TensorSpec("y", "float32", ("batch",))])
    assert spec.tolerance("fp32").atol > 0 and spec.tolerance("int8").atol > spec.tolerance("fp32").atol
    assert spec.classifier is False and spec.serving.max_batch_size > 0 and spec.description == ""
    with pytest.raises(ValueError, match="needs at least one input and one output"):
        ModelSpec(name="none", factory=lambda: None, inputs=[], outputs=[])
    with pytest.raises(ValueError, match="identifier"):
        ModelSpec(name="has space", factory=lambda: None, inputs=spec.inputs, outputs=spec.outputs)


@pytest.mark.parametrize("attr, message", [
    ("NOPE", r"has no attribute 'NOPE' \(it defines .*SPEC"),
    ("NOT_A_SPEC", "NOT_A_SPEC is a int, expected a tritonize ModelSpec or a function"),
    ("build", r"build\(\) returned a Net, expected a tritonize ModelSpec"),
])
def test_a_reference_to_something_else_than_a_spec_is_refused_naming_it(tmp_path, attr, message):
    path = write_model(tmp_path)
    with pytest.raises(ModelReferenceError, match=message) as refused:
        get_spec(f"{path}:{attr}")
    assert f"{path}:{attr}" in str(refused.value)


def test_missing_files_modules_and_broken_files_are_refused_naming_the_reference(tmp_path):
    with pytest.raises(ModelReferenceError, match="no file .*missing.py"):
        get_spec(f"{tmp_path}/missing.py:SPEC")
    with pytest.raises(ModelReferenceError, match=r"cannot import module 'no_such_package_xyz.models' \(No module named"):
        get_spec("no_such_package_xyz.models:SPEC")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('the user file fails')\n")
    with pytest.raises(ModelReferenceError, match="importing .*broken.py failed: RuntimeError: the user file fails"):
        get_spec(f"{broken}:SPEC")
    with pytest.raises(UnknownModelError, match="unknown model 'nosuch'.*FILE.py:ATTR"):
        get_spec("nosuch")


def test_a_name_already_taken_is_refused(tmp_path):
    with pytest.raises(ModelReferenceError, match="named 'mlp', a name a built-in model already has"):
        get_spec(f"{write_model(tmp_path, name='mlp')}:SPEC")
    first = write_model(tmp_path, name="twin", file="first.py")
    second = write_model(tmp_path, name="twin", file="second.py")
    get_spec(f"{first}:SPEC")
    with pytest.raises(ModelReferenceError, match="named 'twin', a name the model from .*first.py:SPEC already has"):
        get_spec(f"{second}:SPEC")


def test_the_cli_says_what_is_wrong_in_one_line_with_exit_code_2(tmp_path, capsys):
    path = write_model(tmp_path)
    assert main(["export", f"{path}:NOPE", "--artifacts", str(tmp_path / "art")]) == 2
    err = capsys.readouterr().err
    assert f"{path}:NOPE" in err and "Traceback" not in err and not (tmp_path / "art").exists()


def test_a_factory_that_raises_or_outputs_that_differ_from_the_spec_stop_the_export(tmp_path):
    raising = write_model(tmp_path, name="raising", forward="self.fc(x)", file="raising.py")
    raising.write_text(raising.read_text().replace("def build():", "def build():\n    raise OSError('no weights')"))
    with pytest.raises(ExportError, match=r"raising.py:SPEC'.*factory raised OSError: no weights"):
        export_model(get_spec(f"{raising}:SPEC"), tmp_path / "art")
    two = write_model(tmp_path, name="two_out", forward="(self.fc(x), x)", file="two.py")
    with pytest.raises(ExportError, match=r"expects 1 outputs \(y float32 \[batch,2\]\); forward\(\) returned 2"):
        export_model(get_spec(f"{two}:SPEC"), tmp_path / "art")
    wide = write_model(tmp_path, name="wide", forward="self.fc(x)[:, :, None]", file="wide.py")
    with pytest.raises(ExportError, match=r"output 'y' is float32 with 2 dims .*returned float32 \[2, 2, 1\]"):
        export_model(get_spec(f"{wide}:SPEC"), tmp_path / "art")
    assert not (tmp_path / "art").exists() or not any((tmp_path / "art").iterdir())


def test_the_manifest_records_the_source_and_an_edited_file_is_not_reused(tmp_path):
    path = write_model(tmp_path)
    spec = get_spec(f"{path}:SPEC")
    export_model(spec, tmp_path / "art")
    source = ModelArtifacts.load(tmp_path / "art", spec).manifest.source
    assert source == {"reference": f"{path}:SPEC", "file": str(path.resolve()), "sha256": spec.source.sha256}
    path.write_text(path.read_text() + "\n# an edit\n")
    edited = get_spec(f"{path}:SPEC")
    with pytest.raises(Exception, match=r"was exported from .*net.py as it was before it changed") as stale:
        ModelArtifacts.load(tmp_path / "art", edited)
    assert f"tritonize export {path}:SPEC" in str(stale.value)


def test_an_installed_package_registers_models_through_the_entry_point_group(tmp_path, monkeypatch):
    write_model(tmp_path, name="ep_net", file="ep_models.py")
    dist = tmp_path / "user_models-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: user-models\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[tritonize.models]\nep_net = ep_models:SPEC\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        spec = get_spec("ep_net")
    finally:
        sys.modules.pop("ep_models", None)
    assert spec.name == "ep_net" and spec.source.reference == "ep_models:SPEC"
    assert spec.source.file == str((tmp_path / "ep_models.py").resolve())
    with pytest.raises(UnknownModelError, match=r"an installed one \(ep_net\)"):
        get_spec("not_installed")


def test_tritonize_models_lists_the_built_in_ones_and_describes_a_reference(tmp_path, capsys):
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("mlp", "cnn", "minilm", "cnn_fused")) and "by reference" in listing
    path = write_model(tmp_path)
    assert main(["models", f"{path}:SPEC"]) == 0
    described = capsys.readouterr().out
    assert "user_net" in described and "inputs  x float32 [batch,4]" in described
    assert f"defined in {path.resolve()}" in described.replace("\n", "")


def test_a_model_no_exporter_can_export_names_the_operator_and_each_exporter(tmp_path):
    path = write_model(tmp_path, name="eig", forward="torch.linalg.eigvalsh(x.reshape(-1, 2, 2)).reshape(-1, 2)")
    with pytest.raises(ExportError) as failed:
        export_model(get_spec(f"{path}:SPEC"), tmp_path / "art")
    message = str(failed.value)
    assert message.startswith(f"model '{path}:SPEC': ONNX export failed: dynamo: ")
    assert "aten._linalg_eigh" in message and "legacy: UnsupportedOperatorError" in message
    assert "aten::linalg_eigvalsh" in message and "\x1b[" not in message
