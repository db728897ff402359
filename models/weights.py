"""A user's trained weights, from a file the spec names (`ModelSpec(weights="model.safetensors")`).

Two formats: safetensors, and a PyTorch state dict saved with `torch.save`, read with
`torch.load(weights_only=True)` so that a file can hold tensors but never run code on load (a
checkpoint that needs more than that is refused, not unpickled). The weights must fit the factory's
module exactly: every key it has, no other, each with its shape; what does not fit is listed in one
error.
"""
from __future__ import annotations

from pathlib import Path

import torch

SAFETENSORS = (".safetensors",)
STATE_DICTS = (".pt", ".pth", ".bin")
SHOWN = 8  # keys listed per kind of mismatch


class WeightsError(ValueError):
    """Weights that cannot be read, or do not fit the model; the message names the model and the file."""


def read_state_dict(path: Path, model: str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"model {model}: weights file {path} does not exist")
    if path.suffix in SAFETENSORS:
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file: say so with the reader's words
            raise WeightsError(f"model {model}: {path} is not a readable safetensors file ({e})") from e
    if path.suffix not in STATE_DICTS:
        raise WeightsError(f"model {model}: weights file {path}: expected {', '.join(SAFETENSORS + STATE_DICTS)}, "
                           f"got {path.suffix or 'no suffix'}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - weights_only refuses pickled code: the message says what it met
        raise WeightsError(f"model {model}: {path} cannot be read as tensors only (torch.load weights_only=True): "
                           f"{str(e).splitlines()[0]}") from e
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # a training checkpoint that keeps the weights under "state_dict"
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"model {model}: {path} holds a {type(loaded).__name__}, expected a state dict "
                           f"(parameter name -> tensor), e.g. torch.save(module.state_dict(), path)")
    return loaded


def _listed(kind: str, items: list[str]) -> str:
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return f"{kind} ({len(items)}): {', '.join(items[:SHOWN])}{more}"


def load_weights(module: torch.nn.Module, path: Path, model: str) -> torch.nn.Module:
    """`module` with the weights of `path`, which must fit it exactly (names and shapes)."""
    state = read_state_dict(path, model)
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [f"{k} {list(state[k].shape)} (the model has {list(own[k].shape)})" for k in own
                  if k in state and state[k].shape != own[k].shape]
    problems = [_listed(kind, items) for kind, items in
                (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)) if items]
    if problems:
        raise WeightsError(f"model {model}: {path} does not fit the module its factory builds: {'; '.join(problems)}")
    module.load_state_dict(state, strict=True)
    return module
