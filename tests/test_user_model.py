"""A user's own model, written outside the project, through every stage as a built-in one goes:
export -> optimize -> repo -> a real tritonserver -> TritonClient, named only by its reference."""
import textwrap

import numpy as np
import pytest

from tritonize.cli import main
from tritonize.client import TritonClient
from tritonize.export.runtime import run_torch
from tritonize.models import registry
from tritonize.models.registry import get_spec
from tritonize.serving.server import TritonServer

USER_FILE = textwrap.dedent('''
    """Somebody's model: an image, a token sequence and a per-row scale in; class scores and a per-row norm out."""
    import torch
    from torch import nn

    from tritonize import ModelSpec, TensorSpec


    class ImageAndTokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.image = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.tokens = nn.Embedding(50, 4)
            self.head = nn.Linear(8, 3)

        def forward(self, image, ids, scale):
            features = torch.cat([self.image(image), self.tokens(ids).mean(dim=1)], dim=1)
            return self.head(features) * scale[:, None], features.norm(dim=1)


    def build():
        torch.manual_seed(0)
        return ImageAndTokens()


    def spec():
        return ModelSpec(
            name="image_and_tokens", factory=build,
            inputs=[TensorSpec("image", "float32", ("batch", 3, 8, 8)),
                    TensorSpec("ids", "int64", ("batch", "seq"), kind="token_ids", vocab_size=50),
                    TensorSpec("scale", "float32", ("batch",))],
            outputs=[TensorSpec("scores", "float32", ("batch", 3)), TensorSpec("norm", "float32", ("batch",))],
            seq_lens=(1, 4, 9), max_seq_len=16)
''')


@pytest.mark.server
def test_a_users_model_file_goes_through_every_stage_to_a_real_server(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(registry, "_RESOLVED", {})
    home = tmp_path_factory.mktemp("users_project")  # outside the checkout, as a user's own folder
    (home / "my_model.py").write_text(USER_FILE)
    monkeypatch.chdir(home)
    reference = "my_model.py:spec"
    assert main(["export", reference, "--artifacts", "art"]) == 0
    assert main(["optimize", reference, "--artifacts", "art", "--variants", "fp32", "int8"]) == 0
    assert main(["repo", reference, "--artifacts", "art", "--out", "repo", "--variant", "image_and_tokens=fp32"]) == 0

    spec = get_spec(reference)
    module = spec.factory()
    rng = np.random.default_rng(7)  # fresh inputs, not the ones export checked
    tolerance = spec.tolerance("fp32")
    with TritonServer(home / "repo") as server, TritonClient(server.grpc_url) as client:
        for batch, seq in ((1, 1), (5, 7), (33, 16)):
            inputs = spec.example_inputs(batch, seq, rng)
            served = client.infer("image_and_tokens", inputs)
            expected = run_torch(module, spec, inputs)
            assert served["scores"].shape == (batch, 3)
            # A per-row value is served as Triton's dims [1] (reshaped to [batch] for the model itself):
            # the client sends the [batch] scale as [batch, 1], and the [batch] norm comes back so.
            assert inputs["scale"].shape == (batch,) and served["norm"].shape == (batch, 1)
            for name, want in expected.items():
                got = served[name].reshape(want.shape)
                assert np.allclose(got, want, atol=tolerance.atol, rtol=tolerance.rtol), (name, batch, seq)
