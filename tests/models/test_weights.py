"""A user's trained weights from a file: safetensors or a tensors-only torch state dict, fitted exactly
to the factory's module, recorded in the manifest; nothing is ever unpickled."""
import pickle

import pytest
import torch
from safetensors.torch import save_file

from tritonize import ModelSpec, TensorSpec
from tritonize.model_artifacts import ModelArtifacts
from tritonize.export.stage import export_model, load_module
from tritonize.models.weights import WeightsError, load_weights


def net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).eval()


def trained():
    module = net()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)  # weights the factory does not make
    return module.state_dict()


def spec(weights=None):
    return ModelSpec(name="weighted", factory=net, weights=weights, inputs=[TensorSpec("x", "float32", ("batch", 4))],
                     outputs=[TensorSpec("y", "float32", ("batch", 2))])


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_from_a_file_are_what_gets_exported_and_recorded(tmp_path, suffix):
    path = tmp_path / f"trained{suffix}"
    save_file(trained(), str(path)) if suffix == ".safetensors" else torch.save({"state_dict": trained()}, path)
    export_model(spec(path), tmp_path / "art")
    exported = load_module(spec(path), tmp_path / "art" / "weighted").state_dict()
    assert all(torch.equal(exported[k], v) for k, v in trained().items())
    recorded = ModelArtifacts.load(tmp_path / "art", spec(path)).manifest.weights
    assert recorded["file"] == str(path) and len(recorded["sha256"]) == 64
    other = trained()
    other["0.bias"] += 1
    save_file(other, str(path)) if suffix == ".safetensors" else torch.save(other, path)
    with pytest.raises(Exception, match="exported with other weights than .*trained"):
        ModelArtifacts.load(tmp_path / "art", spec(path))


def test_weights_that_do_not_fit_are_listed_in_one_error(tmp_path):
    state = trained()
    del state["2.bias"]
    state["head.weight"] = torch.zeros(2, 3)
    state["0.weight"] = torch.zeros(5, 4)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsError) as bad:
        load_weights(net(), path, "'weighted'")
    message = str(bad.value)
    assert "missing (1): 2.bias" in message and "unexpected (1): head.weight" in message
    assert "shape mismatch (1): 0.weight [5, 4] (the model has [3, 4])" in message


class _RunsCode:
    def __reduce__(self):
        return (open, ("/tmp/tritonize-weights-unpickled", "w"))


def test_a_checkpoint_that_would_run_code_is_refused_not_unpickled(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"0.weight": _RunsCode()}, protocol=2).replace(b"/tmp/tritonize-weights-unpickled",
                                                                       str(marker).encode()))
    with pytest.raises(WeightsError, match="cannot be read as tensors only"):
        load_weights(net(), path, "'weighted'")
    assert not marker.exists()


def test_missing_files_and_unknown_formats_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(net(), tmp_path / "none.safetensors", "'weighted'")
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"expected .safetensors, .pt, .pth, .bin, got .npz"):
        load_weights(net(), tmp_path / "w.npz", "'weighted'")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(WeightsError, match="holds a list, expected a state dict"):
        load_weights(net(), tmp_path / "list.pt", "'weighted'")
