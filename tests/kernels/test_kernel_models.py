"""Kernel variants of the seed models: same weights as the plain model, same outputs."""
import numpy as np
import pytest
import torch

from tritonize.export.runtime import run_torch
from tritonize.models import get_spec, model_names

VARIANTS = model_names("torch")


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_shares_the_base_models_weights(name):
    spec = get_spec(name)
    base = get_spec(spec.base_model)
    ours, theirs = spec.factory().state_dict(), base.factory().state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert spec.inputs == base.inputs and spec.outputs == base.outputs


# minilm_flash runs six layers of flash attention in Triton's CPU interpreter: seconds a row, so only at 2
# rows (rows of their own lengths and masks: what one row cannot show), not also at 1 or 3.
@pytest.mark.parametrize("name,batch", [pytest.param(n, 2, marks=pytest.mark.heavy) for n in VARIANTS if n == "minilm_flash"]
                         + [(n, b) for n in VARIANTS if n != "minilm_flash" for b in (1, 3)])
def test_variant_matches_the_plain_model(name, batch):
    spec = get_spec(name)
    base = get_spec(spec.base_model)
    rng = np.random.default_rng()
    seqs = [1, 17, 64] if spec.has_seq else [None]
    variant_module, base_module = spec.factory(), base.factory()
    for seq in seqs:
        x = spec.example_inputs(batch, seq, rng)
        out = spec.output_names[0]
        np.testing.assert_allclose(run_torch(variant_module, spec, x)[out], run_torch(base_module, base, x)[out],
                                   atol=1e-4, rtol=1e-4)
