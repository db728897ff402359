"""A `ModelSpec`'s fields checked when it is made: a wrong or missing field is one line naming the field,
what was expected and what was given, never a traceback from a later stage.

A spec whose inputs have a sequence axis gets defaults for what it leaves out:
  - `max_seq_len` 512: the longest sequence a request may carry (it bounds the checks and the requests
    the client accepts, not what is allocated). 512 is what BERT-family encoders take, and long enough
    for the recurrent and convolutional sequence models users bring first.
  - `seq_lens` (1, 16, max_seq_len): parity is checked at the shortest, a typical and the longest
    sequence, since a graph that is wrong only at one length (a shape baked in by tracing, a padding
    bug) shows at the ends; examples and tracing use the middle one, 16, which is cheap and not a
    special size.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .spec import ModelSpec

DEFAULT_MAX_SEQ_LEN = 512
TYPICAL_SEQ_LEN = 16
RUNTIMES = ("onnx", "torch")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_spec(spec: ModelSpec) -> dict:
    """Raise ValueError for a field that is wrong; return the defaults to fill in (field -> value)."""
    from .spec import SEQ, ServingHints, TensorSpec, Tolerance

    where = f"model {spec.name!r}"
    for kind in ("inputs", "outputs"):
        for t in getattr(spec, kind):
            if not isinstance(t, TensorSpec):
                raise ValueError(f"{where}: {kind} must be TensorSpecs, got {type(t).__name__} {t!r}")
    names = [t.name for t in (*spec.inputs, *spec.outputs)]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{where}: every input and output needs a name of its own; {', '.join(repeated)} "
                         f"appear{'s' if len(repeated) == 1 else ''} more than once")
    if not isinstance(spec.serving, ServingHints):
        raise ValueError(f"{where}: serving must be a ServingHints, got {type(spec.serving).__name__}")
    if not hasattr(spec.tolerances, "get") or not isinstance(spec.tolerances.get("fp32"), Tolerance):
        raise ValueError(f"{where}: tolerances must map precisions to Tolerance and include 'fp32' (every "
                         f"variant is judged against it), got {spec.tolerances!r}")
    if not _is_int(spec.seed):
        raise ValueError(f"{where}: seed must be an int, got {spec.seed!r}")
    if not isinstance(spec.classifier, bool):
        raise ValueError(f"{where}: classifier must be True or False, got {spec.classifier!r}")
    if spec.runtime not in RUNTIMES:
        raise ValueError(f"{where}: runtime must be one of {', '.join(RUNTIMES)}, got {spec.runtime!r}")
    if spec.runtime == "torch" and not spec.base_model:
        raise ValueError(f"{where}: a model with runtime 'torch' serves the weights of another model; name it "
                         f"in base_model")
    has_seq = any(SEQ in t.shape for t in spec.inputs)
    if not has_seq:
        if spec.seq_lens or spec.max_seq_len:
            raise ValueError(f"{where}: seq_lens and max_seq_len are for inputs with a {SEQ!r} axis, and no "
                             f"input has one (got seq_lens={spec.seq_lens!r}, max_seq_len={spec.max_seq_len!r})")
        return {}
    defaults: dict = {}
    longest = spec.max_seq_len or DEFAULT_MAX_SEQ_LEN
    if not _is_int(longest) or longest < 1:
        raise ValueError(f"{where}: max_seq_len must be an int >= 1 (the longest sequence a request may carry), "
                         f"got {spec.max_seq_len!r}")
    if not spec.max_seq_len:
        defaults["max_seq_len"] = longest
    lens = spec.seq_lens or tuple(sorted({1, min(TYPICAL_SEQ_LEN, longest), longest}))
    if isinstance(lens, (str, bytes)) or not all(_is_int(n) and 1 <= n <= longest for n in lens):
        raise ValueError(f"{where}: seq_lens must be sequence lengths in [1, max_seq_len={longest}] to check "
                         f"parity at, got {spec.seq_lens!r}")
    if tuple(lens) != spec.seq_lens:
        defaults["seq_lens"] = tuple(lens)
    return defaults
