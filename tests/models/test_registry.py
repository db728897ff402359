import numpy as np
import pytest
import torch

from tritonize.models import REGISTRY, TensorSpec, UnknownModelError, get_spec, model_names
from tritonize.export.runtime import run_torch


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_factory_weights_are_deterministic(name):
    a, b = get_spec(name).factory().state_dict(), get_spec(name).factory().state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


# minilm_flash runs six layers of flash attention in Triton's CPU interpreter, tens of seconds a call, and
# tests/kernels/test_kernel_models.py already runs it at 3 rows and compares every output with minilm's,
# whose outputs are checked against the specs here: its graph around the kernel is minilm's.
@pytest.mark.parametrize("name,batch", [(n, b) for n in sorted(REGISTRY) if n != "minilm_flash" for b in (1, 5)])
def test_outputs_match_the_output_specs(name, batch):
    spec = get_spec(name)
    rng = np.random.default_rng()
    seqs = spec.seq_lens if spec.has_seq else [None]
    module = spec.factory()
    for seq in seqs:
        outputs = run_torch(module, spec, spec.example_inputs(batch, seq, rng))
        for t in spec.outputs:
            assert outputs[t.name].shape == t.concrete_shape(batch, seq)
            assert np.isfinite(outputs[t.name]).all()


def test_seed_models_are_registered_with_their_shapes():
    assert {"mlp", "cnn", "lstm", "transformer"} <= set(model_names("onnx"))
    assert get_spec("mlp").inputs[0].shape == ("batch", 784)
    assert get_spec("cnn").inputs[0].shape == ("batch", 3, 24, 24)
    cnn = get_spec("cnn").factory()
    assert cnn.fc1.in_features == 64 * 6 * 6 and cnn.block1.conv.out_channels == 32
    lstm = get_spec("lstm").factory().lstm
    assert (lstm.input_size, lstm.hidden_size, lstm.num_layers) == (10, 8, 2)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(UnknownModelError) as e:
        get_spec("resnet")
    assert "'resnet'" in str(e.value) and all(n in str(e.value) for n in REGISTRY)


def test_example_masks_keep_at_least_one_token_and_use_the_full_length():
    spec = get_spec("transformer")
    x = spec.example_inputs(64, 17, np.random.default_rng())
    mask = x["attention_mask"]
    assert mask.shape == (64, 17) and mask.dtype == np.int64
    assert mask.sum(1).min() >= 1 and mask.sum(1).max() == 17
    assert x["input_ids"].max() < 1000 and x["input_ids"].min() >= 0


def test_bad_sequence_length_and_tensor_specs_are_rejected():
    with pytest.raises(ValueError, match=r"sequence length must be in \[1, 128\], got 500"):
        get_spec("transformer").example_inputs(1, 500)
    with pytest.raises(ValueError, match="first axis must be 'batch'"):
        TensorSpec("x", "float32", (3, "batch"))
    with pytest.raises(ValueError, match="dtype must be one of"):
        TensorSpec("x", "float128", ("batch", 3))


def test_triton_dims_mark_dynamic_axes():
    ids = get_spec("transformer").inputs[0]
    assert ids.dims_without_batch() == [-1] and ids.triton_dtype == "INT64"
    assert get_spec("cnn").inputs[0].dims_without_batch() == [3, 24, 24]
    text = get_spec("minilm").text.input
    assert (text.triton_dtype, text.wire_dtype) == ("STRING", "BYTES")
