"""A ModelSpec is checked when it is made: a spec with a sequence axis gets defaults for the lengths it
leaves out, and a wrong field is one line naming it (models/spec_checks.py)."""
import re
import textwrap

import pytest

from tritonize.cli import main
from tritonize.models import ModelSpec, TensorSpec, Tolerance, registry
from tritonize.models.spec_checks import DEFAULT_MAX_SEQ_LEN


def _spec(**fields):
    base = dict(name="m", factory=lambda: None, inputs=[TensorSpec("x", "float32", ("batch", "seq", 4))],
                outputs=[TensorSpec("y", "float32", ("batch", 2))])
    return ModelSpec(**{**base, **fields})


def test_a_sequence_model_gets_lengths_it_left_out():
    spec = _spec()
    assert spec.max_seq_len == DEFAULT_MAX_SEQ_LEN == 512 and spec.seq_lens == (1, 16, 512)
    assert spec.default_seq() == 16 and spec.check_seq(None) == 16
    assert _spec(max_seq_len=8).seq_lens == (1, 8)
    assert _spec(seq_lens=(2, 3)).max_seq_len == 512 and _spec(seq_lens=(2, 3)).seq_lens == (2, 3)
    assert _spec(seq_lens=(1, 7, 32), max_seq_len=256).seq_lens == (1, 7, 32)  # as given


@pytest.mark.parametrize("fields, message", [
    (dict(seq_lens=(0, 4)), "model 'm': seq_lens must be sequence lengths in [1, max_seq_len=512] to check parity at, "
                            "got (0, 4)"),
    (dict(seq_lens=(4, 900)), "got (4, 900)"),
    (dict(max_seq_len=-1), "model 'm': max_seq_len must be an int >= 1 (the longest sequence a request may carry), "
                           "got -1"),
    (dict(inputs=[TensorSpec("x", "float32", ("batch", 4))], seq_lens=(1, 2)),
     "model 'm': seq_lens and max_seq_len are for inputs with a 'seq' axis, and no input has one"),
    (dict(outputs=[TensorSpec("x", "float32", ("batch", 2))]),
     "model 'm': every input and output needs a name of its own; x appears more than once"),
    (dict(outputs=[("y", "float32")]), "model 'm': outputs must be TensorSpecs, got tuple"),
    (dict(tolerances={"int8": Tolerance(0.5, 0.1)}), "model 'm': tolerances must map precisions to Tolerance and "
                                                    "include 'fp32'"),
    (dict(runtime="tensorrt"), "model 'm': runtime must be one of onnx, torch, got 'tensorrt'"),
    (dict(runtime="torch"), "model 'm': a model with runtime 'torch' serves the weights of another model"),
    (dict(seed="1"), "model 'm': seed must be an int, got '1'"),
    (dict(classifier=1), "model 'm': classifier must be True or False, got 1"),
    (dict(serving={"max_batch_size": 8}), "model 'm': serving must be a ServingHints, got dict"),
])
def test_a_wrong_field_is_one_line_naming_it(fields, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        _spec(**fields)


GRU = textwrap.dedent('''
    import torch
    from tritonize import ModelSpec, TensorSpec

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = torch.nn.GRU(4, 8, batch_first=True)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, x):
            out, _ = self.gru(x)
            return self.head(out[:, -1])

    def build():
        torch.manual_seed(0)
        return Net().eval()

    SPEC = ModelSpec(name="gru_first", factory=build, inputs=[TensorSpec("x", "float32", ("batch", "seq", 4))],
                     outputs=[TensorSpec("y", "float32", ("batch", 2))])
''')


def test_a_first_sequence_spec_exports_with_the_defaults(tmp_path, monkeypatch, capsys):
    """The spec a new user writes first (a "seq" axis, no lengths) exports and passes parity."""
    monkeypatch.setattr(registry, "_RESOLVED", {})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gru.py").write_text(GRU)
    # The legacy exporter: the dynamo exporter takes minutes over a GRU on 2 cores (the lengths do not matter).
    assert main(["export", "gru.py:SPEC", "--artifacts", "art", "--exporter", "legacy"]) == 0, capsys.readouterr().err
    assert (tmp_path / "art" / "gru_first" / "model.onnx").is_file()
