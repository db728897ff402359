"""Model descriptions (`ModelSpec`) and the registry of seed models.

The names below load on first use (PEP 562): `tritonize.models.spec` and its users need numpy only,
while the registry builds every seed model's factory and imports torch, which a command such as
`tritonize --help` never needs.
"""
from __future__ import annotations

import importlib

_WHERE = {name: ".registry" for name in ("REGISTRY", "UnknownModelError", "get_spec", "model_names")}
_WHERE |= {name: ".spec" for name in ("BATCH", "SEQ", "ModelSpec", "ServingHints", "TensorSpec",
                                                     "Tolerance")}
__all__ = list(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name], __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
