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


# minilm_flash runs six layers of flash attention in Triton's CPU interpreter: seconds a row, so only at 3
# rows (rows of their own lengths and masks: what one row cannot show), not also at 1.
@pytest.mark.parametrize("name,batch", [pytest.param(n, b, marks=pytest.mark.heavy) if n == "minilm_flash" else (n, b)
                                        for n in VARIANTS for b in (1, 3) if (n, b) != ("minilm_flash", 1)])
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
