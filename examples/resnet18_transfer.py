"""ResNet-18 transfer learning: a new 2-class head on the ResNet-18 backbone, served by Triton.

The network is ResNet-18 in plain PyTorch, with torchvision's parameter and buffer names (conv1, bn1,
layer1..layer4 of BasicBlocks, fc), so a torchvision resnet18 state dict loads into it unchanged. As in
transfer learning, its 1000-class ImageNet `fc` is replaced by a new 2-class head.

Weights: with no file given, every weight is drawn from a fixed seed and the BatchNorm running
statistics come from a few seeded training-mode passes, so each build is identical (tritonize rebuilds
the model at every stage and compares with it). To serve trained weights, name a .safetensors file in
the environment variable RESNET18_WEIGHTS: either a fine-tuned model's state dict (`fc` of 2 classes:
all of it is loaded) or an ImageNet backbone's (`fc` of 1000 classes: the backbone is loaded, the new head
stays seeded). Loading is strict: a missing, extra or misshapen tensor is an error. (tritonize's own
`ModelSpec(weights="file.safetensors")` is the other way to bring a trained state dict.)

    tritonize export examples/resnet18_transfer.py:SPEC --artifacts art
    tritonize optimize examples/resnet18_transfer.py:SPEC --artifacts art --variants fp32 ort_opt int8_static
    tritonize repo examples/resnet18_transfer.py:SPEC --artifacts art --out repo
    tritonize serve --repo repo
"""
import os

import torch
from torch import nn

from tritonize import ModelSpec, ServingHints, TensorSpec

NUM_CLASSES = 2


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, 2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, 2), BasicBlock(256, 256))
        self.layer4 = nn.Sequential(BasicBlock(256, 512, 2), BasicBlock(512, 512))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():  # torchvision's initialization
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@torch.no_grad()
def _settle_batchnorm(model: nn.Module, seed: int = 1, passes: int = 2) -> None:
    """Running statistics from seeded training-mode passes (an exact average: momentum None), so that
    eval-mode BatchNorm really normalizes, as it does after training. 112x112 keeps it quick."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.momentum = None
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(passes):
        model(torch.randn(8, 3, 112, 112, generator=generator))
    for m in norms:
        m.momentum = 0.1  # torchvision's, for whoever fine-tunes further


def build() -> nn.Module:
    """ResNet-18 with a new 2-class head, in eval mode: seeded, or loaded from RESNET18_WEIGHTS."""
    path = os.environ.get("RESNET18_WEIGHTS")
    state = None
    if path:
        from safetensors.torch import load_file

        state = load_file(path)
    with torch.random.fork_rng(devices=[]):  # seeded, without touching the caller's random state
        torch.manual_seed(0)
        model = ResNet18(num_classes=1000)  # the ImageNet architecture, as its weights are published
        if state is not None and state.get("fc.weight", torch.empty(NUM_CLASSES)).shape[0] != NUM_CLASSES:  # ImageNet
            model.load_state_dict(state, strict=True)
            state = None
        model.fc = nn.Linear(512, NUM_CLASSES)  # the transfer-learning head
        if state is not None:  # a fine-tuned model: its own head too
            model.load_state_dict(state, strict=True)
        elif not path:
            _settle_batchnorm(model)
    return model.eval()


SPEC = ModelSpec(
    name="resnet18_transfer",
    factory=build,
    inputs=[TensorSpec("image", "float32", ("batch", 3, 224, 224))],
    outputs=[TensorSpec("logits", "float32", ("batch", NUM_CLASSES))],
    description="ResNet-18 transfer learning, a new classification head on the ResNet-18 backbone",
    classifier=True,
    # A CNN gains from batching: let the dynamic batcher gather requests up to 16 images for a millisecond.
    serving=ServingHints(max_batch_size=16, preferred_batch_sizes=(4, 8, 16), max_queue_delay_us=1000),
)
