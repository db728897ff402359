"""examples/resnet18_transfer.py: its layout is torchvision's resnet18, its weights load from a file when
given, and a user takes it through export -> optimize -> repo -> a real tritonserver by its reference."""
import functools
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import tritonize.export.optimize
import tritonize.models.registry
from tritonize.cli import main
from tritonize.client import TritonClient
from tritonize.export.runtime import run_torch
from tritonize.models.registry import get_spec
from tritonize.serving.server import TritonServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "resnet18_transfer.py"
REFERENCE = f"{EXAMPLE}:SPEC"

# torchvision.models.resnet18().state_dict(), written out: every conv and fc tensor with its shape, in
# order. Each conv is followed by its BatchNorm (conv1 -> bn1, conv2 -> bn2, downsample.0 ->
# downsample.1), whose weight, bias, running_mean, running_var and num_batches_tracked make 122 tensors.
TORCHVISION_CONVS_AND_FC = """
conv1.weight 64 3 7 7
layer1.0.conv1.weight 64 64 3 3
layer1.0.conv2.weight 64 64 3 3
layer1.1.conv1.weight 64 64 3 3
layer1.1.conv2.weight 64 64 3 3
layer2.0.conv1.weight 128 64 3 3
layer2.0.conv2.weight 128 128 3 3
layer2.0.downsample.0.weight 128 64 1 1
layer2.1.conv1.weight 128 128 3 3
layer2.1.conv2.weight 128 128 3 3
layer3.0.conv1.weight 256 128 3 3
layer3.0.conv2.weight 256 256 3 3
layer3.0.downsample.0.weight 256 128 1 1
layer3.1.conv1.weight 256 256 3 3
layer3.1.conv2.weight 256 256 3 3
layer4.0.conv1.weight 512 256 3 3
layer4.0.conv2.weight 512 512 3 3
layer4.0.downsample.0.weight 512 256 1 1
layer4.1.conv1.weight 512 512 3 3
layer4.1.conv2.weight 512 512 3 3
fc.weight 1000 512
fc.bias 1000
"""
BN_OF = {"conv1": "bn1", "conv2": "bn2", "downsample.0": "downsample.1"}


def torchvision_resnet18_layout(num_classes: int = 1000) -> list[tuple[str, tuple[int, ...]]]:
    layout = []
    for line in TORCHVISION_CONVS_AND_FC.strip().splitlines():
        key, *dims = line.split()
        shape = tuple(map(int, dims))
        if key.startswith("fc."):
            shape = (num_classes, *shape[1:])
        layout.append((key, shape))
        if not key.startswith("fc."):
            name = key.removesuffix(".weight")
            conv = next(c for c in BN_OF if name == c or name.endswith("." + c))
            bn = name.removesuffix(conv) + BN_OF[conv]
            layout += [(f"{bn}.{p}", (shape[0],)) for p in ("weight", "bias", "running_mean", "running_var")]
            layout.append((f"{bn}.num_batches_tracked", ()))
    return layout


def load_example():
    spec = importlib.util.spec_from_file_location("resnet18_transfer_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def layout(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def test_the_state_dict_is_torchvision_resnet18s_with_a_two_class_head(monkeypatch):
    monkeypatch.delenv("RESNET18_WEIGHTS", raising=False)
    example = load_example()
    expected = torchvision_resnet18_layout()
    assert len(expected) == 122
    assert layout(example.ResNet18()) == expected  # names, order and shapes of the ImageNet network
    assert sum(p.numel() for p in example.ResNet18().parameters()) == 11_689_512  # torchvision's count
    model = example.build()
    assert layout(model) == torchvision_resnet18_layout(num_classes=2)
    assert not model.training
    # Deterministic, and BatchNorm's running statistics are real ones, not the initial 0 and 1.
    again = example.build().state_dict()
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())
    assert model.bn1.running_mean.abs().max() > 0 and not torch.allclose(model.layer4[1].bn2.running_var,
                                                                           torch.ones(512))


def test_weights_load_from_the_file_named_by_resnet18_weights(tmp_path, monkeypatch):
    example = load_example()
    torch.manual_seed(123)
    backbone = example.ResNet18().eval()  # as torchvision's ImageNet weights: a 1000-class fc
    save_file(backbone.state_dict(), str(tmp_path / "imagenet.safetensors"))
    monkeypatch.setenv("RESNET18_WEIGHTS", str(tmp_path / "imagenet.safetensors"))
    model = example.build()
    got, want = model.state_dict(), backbone.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in got.items() if not k.startswith("fc."))
    assert got["fc.weight"].shape == (2, 512)  # the new head, seeded

    tuned = {k: v + 1 if v.is_floating_point() else v for k, v in got.items()}  # a fine-tuned model, head too
    save_file(tuned, str(tmp_path / "tuned.safetensors"))
    monkeypatch.setenv("RESNET18_WEIGHTS", str(tmp_path / "tuned.safetensors"))
    assert all(torch.equal(v, tuned[k]) for k, v in example.build().state_dict().items())

    del tuned["layer1.0.bn1.running_var"]
    save_file(tuned, str(tmp_path / "broken.safetensors"))
    monkeypatch.setenv("RESNET18_WEIGHTS", str(tmp_path / "broken.safetensors"))
    with pytest.raises(RuntimeError, match="layer1.0.bn1.running_var"):
        example.build()


@pytest.mark.server
def test_the_example_goes_from_its_file_to_a_real_server(tmp_path_factory, monkeypatch):
    monkeypatch.setattr(tritonize.models.registry, "_RESOLVED", {})
    monkeypatch.delenv("RESNET18_WEIGHTS", raising=False)
    # `tritonize optimize` checks each variant on 1000 random rows and times the max batch 100 times:
    # ~2.5 minutes for fp32 + ort_opt at 224x224 on 2 CPU cores. CI checks fewer rows, and the FP32
    # export alone (each variant adds half a minute here; the other models' tests cover ort_opt).
    monkeypatch.setattr(tritonize.export.optimize, "optimize_model", functools.partial(
        tritonize.export.optimize.optimize_model, agreement_rows=32, latency_iters=5))
    home = tmp_path_factory.mktemp("users_project")  # the user's own folder, outside the checkout
    monkeypatch.chdir(home)
    assert main(["export", REFERENCE, "--artifacts", "art"]) == 0
    assert main(["optimize", REFERENCE, "--artifacts", "art", "--variants", "fp32"]) == 0
    assert main(["repo", REFERENCE, "--artifacts", "art", "--out", "repo"]) == 0  # optimize's pick

    spec = get_spec(REFERENCE)
    config = (home / "repo" / spec.name / "config.pbtxt").read_text()
    assert "max_batch_size: 16" in config
    served = json.loads((home / "repo" / "repository.json").read_text())["models"][spec.name]
    assert served["variant"] == "fp32"
    module = spec.factory()
    rng = np.random.default_rng(7)  # fresh inputs, not the ones export and optimize checked
    tolerance = spec.tolerance("fp32")
    with TritonServer(home / "repo") as server, TritonClient(server.grpc_url) as client:
        for batch in (1, 3):
            inputs = spec.example_inputs(batch, rng=rng)
            got = client.infer(spec.name, inputs)["logits"]
            want = run_torch(module, spec, inputs)["logits"]
            assert got.shape == (batch, 2)
            assert np.allclose(got, want, atol=tolerance.atol, rtol=tolerance.rtol), (batch, np.abs(got - want).max())
