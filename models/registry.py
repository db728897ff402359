"""The registry: every model tritonize knows, each described once."""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import torch
from torch import nn

from . import minilm, nets
from .spec import BATCH, DEFAULT_TOLERANCES, SEQ, ModelSpec, ServingHints, TensorSpec, TextFrontend, Tolerance

FP32, INT8, FP16, BF16 = (DEFAULT_TOLERANCES[p] for p in ("fp32", "int8", "fp16", "bf16"))
# Random inputs to random-weight models give small logit margins, so INT8's top-1 agreement on the
# seed classifiers is a worst case.


def seeded(seed: int, build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """A factory whose weights are the same on every call and machine (fixed seed, eval mode)."""

    def factory() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build()
        return model.eval()

    return factory


def _logits(n: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec("logits", "float32", (BATCH, n)),)


TOLERANCES = {"fp32": FP32, "int8": INT8, "fp16": FP16, "bf16": BF16}

_SPECS = [
    ModelSpec(
        name="mlp",
        description="MLP 784-128-64-10 on flattened 28x28 images",
        factory=seeded(1, nets.MLP),
        inputs=(TensorSpec("x", "float32", (BATCH, 784)),),
        outputs=_logits(10),
        tolerances=TOLERANCES,
        classifier=True,
        # Batching from the sweep (docs/tuning.md): no preferred sizes, so that the batcher sends whatever
        # waits, up to 64 (with (8, 32) it sent batches of 8 whenever 8-31 waited); no delay, one instance.
        serving=ServingHints(max_batch_size=64),
        seed=1,
    ),
    ModelSpec(
        name="cnn",
        description="2x (conv3x3 + ReLU + maxpool2), 3->32->64 channels, FC 2304->128->10 on 3x24x24 images",
        factory=seeded(2, nets.CNN),
        inputs=(TensorSpec("x", "float32", (BATCH, 3, 24, 24)),),
        outputs=_logits(10),
        tolerances=TOLERANCES,
        classifier=True,
        # Batching from the sweep (docs/tuning.md): no delay (the requests that arrive while the instance
        # runs queue up and are batched anyway, and a delay holds a lone request for its whole length), no
        # preferred sizes (with (8, 32) the batcher sent 8 whenever 8-31 waited), one instance (two did
        # more at 32 clients but less for a lone one). The sweep's pick of max batch 16 measured the same
        # as 64 at 32 clients; 64 stays, since it is also the most rows one request may carry.
        serving=ServingHints(max_batch_size=64),
        seed=2,
    ),
    ModelSpec(
        name="lstm",
        description="2-layer LSTM (input 10, hidden 8) over a variable-length sequence, 2 classes",
        factory=seeded(3, nets.LSTMClassifier),
        inputs=(TensorSpec("x", "float32", (BATCH, SEQ, 10)),),
        outputs=_logits(2),
        tolerances=TOLERANCES,
        classifier=True,
        serving=ServingHints(max_batch_size=32),
        seed=3,
        seq_lens=(1, 7, 32),
        max_seq_len=256,
    ),
    ModelSpec(
        name="transformer",
        description="token ids -> embedding + sinusoidal positions -> 2 encoder layers (4 heads, d=64) -> mean pool -> 2 classes",
        factory=seeded(4, nets.TransformerClassifier),
        inputs=(
            TensorSpec("input_ids", "int64", (BATCH, SEQ), kind="token_ids", vocab_size=1000),
            TensorSpec("attention_mask", "int64", (BATCH, SEQ), kind="mask"),
        ),
        outputs=_logits(2),
        tolerances=TOLERANCES,
        classifier=True,
        serving=ServingHints(max_batch_size=32),
        seed=4,
        seq_lens=(1, 17, 64),
        max_seq_len=128,
    ),
]


# Sentence embeddings are judged by their direction (cosine), the way they are used.
EMBEDDING_TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3, min_cosine=0.9999),
    # Dynamic INT8 measured 0.956 worst-case cosine on random tokens: reported, but not served by default.
    "int8": Tolerance(atol=0.1, rtol=1.0, min_cosine=0.99),
    "fp16": Tolerance(atol=1e-2, rtol=1e-1, min_cosine=0.999),
    "bf16": Tolerance(atol=3e-2, rtol=3e-1, min_cosine=0.995),
}


def _minilm_spec() -> ModelSpec:
    max_len = minilm.pipeline().max_seq_len
    return ModelSpec(
        name="minilm",
        description="all-MiniLM-L6-v2 (pretrained BERT encoder) + mean pooling + L2 norm: sentence embeddings",
        factory=minilm.load_encoder,
        inputs=(TensorSpec(minilm.INPUT_NAMES[0], "int64", (BATCH, SEQ), kind="token_ids", vocab_size=30522),
                TensorSpec(minilm.INPUT_NAMES[1], "int64", (BATCH, SEQ), kind="mask")),
        outputs=(TensorSpec(minilm.OUTPUT_NAME, "float32", (BATCH, minilm.EMBEDDING_DIM)),),
        tolerances=EMBEDDING_TOLERANCES,
        serving=ServingHints(max_batch_size=32, preferred_batch_sizes=(8,)),
        classifier=False,
        seq_lens=(1, 17, 128),
        max_seq_len=max_len,
        text=TextFrontend(TensorSpec("text", "bytes", (BATCH, 1), kind="text", tokenizer="minilm"),
                          tokenizer_file=lambda: minilm.model_folder() / "tokenizer.json", max_seq_len=max_len),
    )


_SPECS.append(_minilm_spec())


def kernel_model(base: ModelSpec, name: str, description: str, build: Callable[[], nn.Module]) -> ModelSpec:
    """A kernel model: `base` run by another module with the same parameters (custom Triton kernels),
    served by PyTorch. "Variant" names only optimize's ONNX variants (fp32, ort_opt, int8, int8_static)."""
    return dataclasses.replace(base, name=name, description=description, factory=seeded(base.seed, build),
                               base_model=base.name, runtime="torch")


_BY_NAME = {s.name: s for s in _SPECS}
_SPECS.append(kernel_model(_BY_NAME["cnn"], "cnn_fused", "the cnn with each conv+ReLU+maxpool block as one Triton kernel",
                      functools.partial(nets.CNN, block=nets.FusedConvReluPool)))
# The text front end stays with the plain minilm: the kernel model is served with token inputs.
_SPECS.append(dataclasses.replace(
    kernel_model(_BY_NAME["minilm"], "minilm_flash", "all-MiniLM-L6-v2 with its attention computed by the flash-attention Triton kernel",
            minilm.load_flash_encoder), text=None))
_SPECS.append(kernel_model(_BY_NAME["transformer"], "transformer_flash",
                      "the transformer with its attention computed by the flash-attention Triton kernel",
                      functools.partial(nets.TransformerClassifier, attend=nets.flash_attention)))

REGISTRY: dict[str, ModelSpec] = {s.name: s for s in _SPECS}


# Users' models resolved in this process, by name: a stage that looks a model up by name after the
# CLI resolved its reference finds it here, as it finds a built-in one in REGISTRY.
_RESOLVED: dict[str, ModelSpec] = {}


class UnknownModelError(KeyError):
    def __str__(self) -> str:
        return self.args[0]


def get_spec(name: str) -> ModelSpec:
    """The model named `name`: a built-in model, a user's model resolved earlier in this process, an
    installed package's (entry point `tritonize.models`), or a reference `file.py:ATTR` /
    `package.module:ATTR` (resolved, checked against the names already taken, and remembered)."""
    from .references import entry_point_specs, is_reference, load_entry_point, load_reference

    if name in REGISTRY:
        return REGISTRY[name]
    if name in _RESOLVED:
        return _RESOLVED[name]
    if is_reference(name):
        return _remember(load_reference(name))
    entry = entry_point_specs().get(name)
    if entry is not None:
        return _remember(load_entry_point(entry))
    raise UnknownModelError(f"unknown model {name!r}; expected a built-in model ({', '.join(sorted(REGISTRY))}), "
                            f"an installed one ({', '.join(sorted(entry_point_specs())) or 'none installed'}) or a "
                            f"reference FILE.py:ATTR or package.module:ATTR") from None


def _remember(spec: ModelSpec) -> ModelSpec:
    from .references import ModelReferenceError

    taken = REGISTRY.get(spec.name) or _RESOLVED.get(spec.name)
    if taken is not None and (taken.source is None or taken.source.file != spec.source.file):
        where = "a built-in model" if taken.source is None else f"the model from {taken.source.reference}"
        raise ModelReferenceError(f"model reference {spec.source.reference!r} defines a model named {spec.name!r}, "
                                  f"a name {where} already has; give it another name")
    _RESOLVED[spec.name] = spec
    return spec


def model_names(runtime: str | None = None) -> list[str]:
    """The built-in models (of one runtime, "onnx" or "torch", when given)."""
    return [n for n, s in REGISTRY.items() if runtime is None or s.runtime == runtime]
