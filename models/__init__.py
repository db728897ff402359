"""Model descriptions (`ModelSpec`) and the registry of seed models."""
from tritonize.models.registry import REGISTRY, UnknownModelError, get_spec, model_names
from tritonize.models.spec import BATCH, SEQ, ModelSpec, ServingHints, TensorSpec, Tolerance

__all__ = ["REGISTRY", "UnknownModelError", "get_spec", "model_names", "BATCH", "SEQ", "ModelSpec",
           "ServingHints", "TensorSpec", "Tolerance"]
