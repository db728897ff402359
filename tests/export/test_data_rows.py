"""--data: parity and accuracy judged on the user's own rows, recorded with their SHA-256, so that a
variant is kept or refused on what the user's data says rather than on random inputs."""
import textwrap

import numpy as np
import pytest

from tritonize.cli import main
from tritonize.models import registry

# Two logits that differ by a hair on random inputs (INT8's rounding flips the decision there) and by
# a wide margin on the user's rows, which lie along the direction that separates them.
NEAR_TIE = textwrap.dedent('''
    import torch
    from tritonize import ModelSpec, TensorSpec

    def build():
        torch.manual_seed(0)
        net = torch.nn.Linear(16, 2, bias=False)
        with torch.no_grad():
            direction = torch.randn(16)
            net.weight[1] = net.weight[0] + 1e-3 * direction
        return net.eval()

    SPEC = ModelSpec(name="near_tie", factory=build, classifier=True,
                     inputs=[TensorSpec("x", "float32", ("batch", 16))], outputs=[TensorSpec("y", "float32", ("batch", 2))])
''')


@pytest.fixture
def near_tie(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_RESOLVED", {})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "near_tie.py").write_text(NEAR_TIE)
    reference = "near_tie.py:SPEC"
    spec = registry.get_spec(reference)
    weight = spec.factory().weight.detach().numpy()
    direction = (weight[1] - weight[0]) / np.linalg.norm(weight[1] - weight[0])
    rng = np.random.default_rng(3)
    signs = rng.choice([-1.0, 1.0], size=(256, 1))
    rows = (signs * 1e4 * direction + 0.01 * rng.standard_normal((256, 16))).astype(np.float32)
    np.savez(tmp_path / "rows.npz", x=rows)
    assert main(["export", reference, "--out", "art", "--data", "rows.npz"]) == 0
    return reference, tmp_path


def _choice(folder):
    import json

    return json.loads((folder / "art" / "near_tie" / "variants" / "choice.json").read_text())


def test_int8_refused_on_random_rows_is_kept_on_the_users_rows_and_the_choice_says_why(near_tie, capsys):
    reference, folder = near_tie
    assert main(["optimize", reference, "--out", "art", "--variants", "fp32", "int8"]) == 0
    random_choice = _choice(folder)
    assert random_choice["variants"]["int8"]["parity_ok"] is False and "int8" in random_choice["rejected"]
    assert random_choice["data"]["data"] == "random example inputs"

    assert main(["optimize", reference, "--out", "art", "--variants", "fp32", "int8", "--data", "rows.npz"]) == 0
    choice = _choice(folder)
    assert choice["variants"]["int8"]["parity_ok"] is True and "int8" not in choice["rejected"]
    assert choice["variants"]["int8"]["top1_agreement"] >= 0.9
    assert choice["data"]["rows"] == 256 and len(choice["data"]["sha256"]) == 64
    assert choice["data"]["data"] == str((folder / "rows.npz").resolve()) and "judged on your data" in choice["why"]
    assert f"judged on {(folder / 'rows.npz').resolve()}" in capsys.readouterr().out.replace("\n", "")


def test_data_that_does_not_fit_the_model_is_refused_before_any_work(near_tie, capsys):
    reference, folder = near_tie
    np.savez(folder / "wrong.npz", x=np.zeros((4, 15), np.float32))
    before = _choice(folder) if (folder / "art" / "near_tie" / "variants").exists() else None
    assert main(["optimize", reference, "--out", "art", "--data", "wrong.npz"]) == 2
    err = capsys.readouterr().err
    assert "data wrong.npz: model 'near_tie' expects x float32 [batch,16]; got x with axis 1 of 15" in err
    assert (_choice(folder) if before else None) == before
