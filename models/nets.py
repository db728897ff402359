"""The seed models as plain PyTorch modules.

Blocks that a custom kernel can replace (the CNN's conv+ReLU+pool, the Transformer's attention) are
modules of their own with the same parameter names in every variant, so one state_dict serves all.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, sizes: tuple[int, ...] = (784, 128, 64, 10)):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class ConvReluPool(nn.Module):
    """conv KxK (same padding, stride 1) -> ReLU -> max-pool 2x2 stride 2."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=kernel_size // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv(x)), 2)


class FusedConvReluPool(ConvReluPool):
    """The same block (same parameters) run by the fused Triton kernel: the conv output never hits memory."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..kernels.conv_relu_pool import conv2d_relu_maxpool2d

        return conv2d_relu_maxpool2d(x, self.conv.weight, self.conv.bias, self.conv.padding[0])


class CNN(nn.Module):
    def __init__(self, block: type[nn.Module] = ConvReluPool, image_size: int = 24, num_classes: int = 10):
        super().__init__()
        self.block1 = block(3, 32)
        self.block2 = block(32, 64)
        side = image_size // 4
        self.fc1 = nn.Linear(64 * side * side, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.block1(x))
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class LSTMClassifier(nn.Module):
    def __init__(self, input_size: int = 10, hidden_size: int = 8, num_layers: int = 2, num_classes: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v over [batch, heads, seq, head_dim]; padded keys get no weight."""
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    scores = scores.masked_fill(~key_padding_mask[:, None, None, :], torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) @ v


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
    """The same attention through the flash-attention Triton kernel (padded keys get no weight)."""
    from ..kernels.flash_attention import flash_attention as kernel

    return kernel(q, k, v, key_padding_mask=key_padding_mask)


class SelfAttention(nn.Module):
    """Multi-head self-attention whose core (`attend`) is swappable: math by default, a kernel in variants."""

    def __init__(self, d_model: int, n_heads: int, attend=math_attention):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.attend = attend

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        y = self.attend(q, k, v, key_padding_mask)
        return self.out(y.transpose(1, 2).reshape(b, s, d))


class EncoderLayer(nn.Module):
    """Post-norm Transformer encoder layer (as nn.TransformerEncoderLayer), with an explicit attention."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, attend=math_attention):
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads, attend)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, key_padding_mask))
        return self.norm2(x + self.ff(x))


def sinusoidal_positions(max_len: int, d_model: int) -> torch.Tensor:
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table


class TransformerClassifier(nn.Module):
    """token ids -> embedding + sinusoidal positions -> encoder layers -> masked mean pool -> classes."""

    def __init__(self, vocab_size: int = 1000, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
                 d_ff: int = 128, max_len: int = 128, num_classes: int = 2, attend=math_attention):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.register_buffer("positions", sinusoidal_positions(max_len, d_model), persistent=False)
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, attend) for _ in range(n_layers))
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask > 0
        x = self.embed(input_ids) + self.positions[: input_ids.shape[1]]
        for layer in self.layers:
            x = layer(x, keep)
        weights = keep.to(x.dtype)[..., None]
        pooled = (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)
