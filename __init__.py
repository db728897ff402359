"""tritonize: PyTorch models to NVIDIA Triton Inference Server, with benchmarks that prove the speed.

Describe your own model with the names below (`from tritonize import ModelSpec, TensorSpec`) and name
it to any command by reference: `tritonize export path/to/model.py:SPEC`. They load on first use, so
that importing a stage does not pay for what it does not use.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = ("ModelSpec", "TensorSpec", "ServingHints", "Tolerance", "TextFrontend", "BATCH", "SEQ")
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(".models.spec", __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
