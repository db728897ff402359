"""The one description of a model that every stage reads.

A `ModelSpec` says what a model is (its PyTorch factory with deterministic weights), what goes in and
out (names, dtypes, shapes with named dynamic axes, how to make a valid random example), how close an
exported or optimized copy must stay (tolerances per precision) and how it should be served. Export,
repository generation, the client's validation and the benchmarks all take their facts from here.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from .spec_checks import check_spec

BATCH = "batch"
SEQ = "seq"

# numpy dtype name -> Triton data type name (model_config.proto's DataType without the TYPE_ prefix).
TRITON_DTYPES = {
    "float32": "FP32",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "bool": "BOOL",
    "bytes": "STRING",  # BYTES on the wire; TYPE_STRING in model_config.proto
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor.

    `shape` holds ints for fixed axes and names for dynamic ones; the first axis is always `batch`.
    `kind` says how a valid random example is made:
      - "dense": standard normal values,
      - "token_ids": integers in [0, vocab_size),
      - "mask": 1 for real tokens, 0 for padding, at least one real token per row,
      - "text": UTF-8 strings (BYTES), tokenized server-side by `tokenizer` (later models).
    """

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    kind: str = "dense"
    vocab_size: int = 0
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in TRITON_DTYPES:
            raise ValueError(f"tensor {self.name!r}: dtype must be one of {sorted(TRITON_DTYPES)}, got {self.dtype!r}")
        if not self.shape or self.shape[0] != BATCH:
            raise ValueError(f"tensor {self.name!r}: the first axis must be {BATCH!r}, got shape {self.shape}")
        if self.kind not in ("dense", "token_ids", "mask", "text"):
            raise ValueError(f"tensor {self.name!r}: unknown kind {self.kind!r}")

    def describe(self) -> str:
        """`x float32 [batch,3,24,24]`: the name, dtype and shape, as messages and listings show it."""
        return f"{self.name} {self.dtype} [{','.join(map(str, self.shape))}]"

    @property
    def dynamic_axes(self) -> dict[int, str]:
        return {i: a for i, a in enumerate(self.shape) if isinstance(a, str)}

    @property
    def triton_dtype(self) -> str:
        """The data type as model configs name it (TYPE_<this>)."""
        return TRITON_DTYPES[self.dtype]

    @property
    def wire_dtype(self) -> str:
        """The data type as inference requests name it: strings travel as BYTES."""
        return "BYTES" if self.dtype == "bytes" else self.triton_dtype

    def dims_without_batch(self) -> list[int]:
        """Triton's `dims`: the shape after the batch axis, -1 for every dynamic axis."""
        return [-1 if isinstance(a, str) else a for a in self.shape[1:]]

    def as_served(self, x: np.ndarray) -> np.ndarray:
        """`x` as a request carries it: a per-row value (shape [batch]) travels as [batch, 1], the dims
        [1] a batching Triton config gives it (reshaped back to [batch] for the model)."""
        return x.reshape(-1, 1) if len(self.shape) == 1 else x

    def concrete_shape(self, batch: int, seq: int | None = None) -> tuple[int, ...]:
        out = []
        for axis in self.shape:
            if axis == BATCH:
                out.append(batch)
            elif axis == SEQ:
                if seq is None:
                    raise ValueError(f"tensor {self.name!r} has a {SEQ!r} axis: a sequence length is needed")
                out.append(seq)
            elif isinstance(axis, str):
                raise ValueError(f"tensor {self.name!r}: no size known for dynamic axis {axis!r}")
            else:
                out.append(axis)
        return tuple(out)


@dataclass(frozen=True)
class Tolerance:
    """How close a copy of the model must stay to PyTorch FP32.

    Outputs must satisfy |a - b| <= atol + rtol * |b| elementwise; for classifiers the arg-max must
    agree on at least `min_top1` of the rows; with `min_cosine`, every row's cosine similarity to
    the reference must reach it (embedding models).
    """

    atol: float
    rtol: float
    min_top1: float = 1.0
    min_cosine: float | None = None


# The default queue bound of a model, in full batches per instance (ServingHints.queue_size).
QUEUE_BATCHES = 4


@dataclass(frozen=True)
class ServingHints:
    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 0
    instance_count: int = 1
    # ONNX Runtime intra-op threads per instance. On a small CPU machine the server, its instances
    # and the clients share the cores, so one thread without spin-waiting serves best.
    ort_threads: int = 1
    # Large batches may run on a second session with this many threads: `tritonize optimize` measures,
    # per variant, from which batch size they pay (export/threads.py), and the CPU runner uses them from
    # there. A lone client's batch of 1 stays on `ort_threads`. 1 turns it off.
    large_batch_threads: int = 2
    # Overload: a queue policy (the config's dynamic_batching.default_queue_policy), off by default.
    # With one, at most `max_queue_size` requests wait in the model's queue (None: QUEUE_BATCHES full
    # batches per instance; 0: no bound) and more are refused at once (UNAVAILABLE, "Exceeds maximum
    # queue size", which clients retry with backoff); a request that waits longer than
    # `queue_timeout_us`, or than its own shorter `timeout`, is dropped (UNAVAILABLE, "Request timeout
    # expired"); with 0, none is (Triton takes a request's timeout only below the default).
    # Off by default: on the bundled Triton 2.51 any queue policy turns off the dynamic batcher's
    # prefetching, and with one instance 0.3-7% of the MLP's requests then stalled ~500 ms (the
    # batcher's idle wait: its wake-up is lost when a request arrives as the instance finishes), in
    # runs of 1,200-2,400 requests at 1 and 8 clients; none stalled without a policy or with two instances.
    queue_policy: bool = False
    max_queue_size: int | None = None
    queue_timeout_us: int = 10_000_000

    def __post_init__(self) -> None:
        for name in ("ort_threads", "large_batch_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ServingHints.{name} must be an int >= 1, got {value!r}")
        for name, value in (("max_queue_size", self.max_queue_size), ("queue_timeout_us", self.queue_timeout_us)):
            if (value is not None or name == "queue_timeout_us") and (not isinstance(value, int) or value < 0):
                raise ValueError(f"ServingHints.{name} must be an int >= 0, got {value!r}")

    @property
    def queue_size(self) -> int:
        """The queue bound of a queue policy: a few full batches per instance keep every instance busy
        through a burst, while a request at the back waits only a few batch times."""
        if self.max_queue_size is not None:
            return self.max_queue_size
        return QUEUE_BATCHES * max(self.max_batch_size, 1) * self.instance_count


@dataclass(frozen=True)
class TextFrontend:
    """A served string input: UTF-8 text (BYTES [batch, 1]) tokenized on the server by the model's
    own fast tokenizer (`tokenizer_file()` gives its tokenizer.json) into the model's token inputs,
    padded per request to its longest sentence and truncated at `max_seq_len`."""

    input: TensorSpec
    tokenizer_file: Callable[[], "object"] = field(compare=False, repr=False)
    max_seq_len: int = 512


# How close a copy must stay, per precision, unless a spec says otherwise. Dynamic INT8 moves logits by
# a few hundredths: the bound catches a broken graph, the top-1 floor the decisions (classifiers).
DEFAULT_TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3),
    "int8": Tolerance(atol=0.5, rtol=0.1, min_top1=0.9),
    "fp16": Tolerance(atol=2e-2, rtol=2e-2, min_top1=0.99),
    "bf16": Tolerance(atol=6e-2, rtol=6e-2, min_top1=0.97),  # 8 mantissa bits against FP16's 11
}


@dataclass(frozen=True)
class ModelSource:
    """Where a user's model comes from: the reference it was named by, the file that defines it and
    that file's SHA-256 when it was read (the manifest keeps it; an edited file means a new export)."""

    reference: str
    file: str
    sha256: str

    def to_json(self) -> dict:
        return {"reference": self.reference, "file": self.file, "sha256": self.sha256}


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A model: only `name`, `factory`, `inputs` and `outputs` are required.

    `factory()` returns the `nn.Module` with its weights (deterministic: export and every later check
    rebuild it); `inputs` and `outputs` describe the tensors, the first axis of each the batch. The rest
    has defaults: tolerances per precision, serving hints, `classifier` (off: top-1 agreement is
    judged only for classifiers)."""

    name: str
    factory: Callable[[], "object"] = field(compare=False, repr=False)
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    description: str = ""
    tolerances: Mapping[str, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES), compare=False)
    serving: ServingHints = ServingHints()
    seed: int = 0
    classifier: bool = False
    # Sequence lengths to check parity at (the middle one is used for examples and tracing), and the
    # longest a request may carry; defaults for a spec with a "seq" axis in spec_checks.py.
    seq_lens: tuple[int, ...] = ()
    max_seq_len: int = 0
    # A kernel model runs another factory over the same weights as `base_model` (e.g. a fused kernel).
    base_model: str | None = None
    # Where the model can run: "onnx" models are exported and served through ONNX Runtime; "torch"
    # models (custom kernels) are served by the PyTorch runner.
    runtime: str = "onnx"
    # Text models: the string input served in front of the token inputs (tokenized server-side).
    text: TextFrontend | None = None
    # Trained weights to load into the factory's module: a .safetensors file or a torch state dict
    # (.pt/.pth/.bin, read with weights_only=True). A relative path is taken from the working folder.
    weights: str | None = None
    # A user's model: where it was defined (set when it is resolved from a reference; None for built-ins).
    source: ModelSource | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"ModelSpec name must be a Python-style identifier (letters, digits, _), as Triton "
                             f"model names and file names use it, got {self.name!r}")
        if not self.inputs or not self.outputs:
            raise ValueError(f"model {self.name!r}: a ModelSpec needs at least one input and one output, got "
                             f"{len(self.inputs)} inputs and {len(self.outputs)} outputs")
        if not callable(self.factory):
            raise ValueError(f"model {self.name!r}: factory must be a function returning an nn.Module, "
                             f"got {type(self.factory).__name__}")
        if self.weights is not None:
            object.__setattr__(self, "weights", str(self.weights))  # a Path is welcome too
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        # Every other field, and the sequence lengths a spec with a "seq" axis leaves out (spec_checks.py).
        for name, value in check_spec(self).items():
            object.__setattr__(self, name, value)

    @property
    def has_seq(self) -> bool:
        return any(SEQ in t.shape for t in self.inputs)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def tolerance(self, precision: str) -> Tolerance:
        try:
            return self.tolerances[precision]
        except KeyError:
            raise KeyError(
                f"model {self.name!r} has no tolerance for precision {precision!r}; known: {sorted(self.tolerances)}"
            ) from None

    def default_seq(self) -> int | None:
        return self.seq_lens[len(self.seq_lens) // 2] if self.has_seq else None

    def check_seq(self, seq: int | None) -> int | None:
        if not self.has_seq:
            return None
        seq = self.default_seq() if seq is None else seq
        if not 1 <= seq <= self.max_seq_len:
            raise ValueError(f"model {self.name!r}: sequence length must be in [1, {self.max_seq_len}], got {seq}")
        return seq

    @property
    def reference(self) -> str:
        """How the user named this model: its reference (`file.py:ATTR`) for a user's model, else its name."""
        return self.source.reference if self.source else self.name

    def describe_inputs(self) -> str:
        return ", ".join(t.describe() for t in self.inputs)

    def describe_outputs(self) -> str:
        return ", ".join(t.describe() for t in self.outputs)

    def check_inputs(self, arrays: Mapping[str, np.ndarray], source: str) -> tuple[int, int | None]:
        """Raise ValueError unless `arrays` is one batch of this model's inputs; return (rows, seq).

        Names, dtypes, ranks and fixed axes must match exactly; every input has the same rows, every
        sequence axis the same length within [1, max_seq_len]; dense floats are finite, token ids lie in
        [0, vocab_size) and masks hold only 0 and 1. `source` names where the arrays came from, for the message.
        """
        def fail(problem: str) -> ValueError:
            return ValueError(f"{source}: model {self.name!r} expects {self.describe_inputs()}; {problem}")

        missing = [n for n in self.input_names if n not in arrays]
        extra = [n for n in arrays if n not in self.input_names]
        if missing or extra:
            raise fail(f"got arrays {', '.join(map(repr, arrays)) or 'none'} "
                       f"({'missing ' + ', '.join(missing) if missing else ''}"
                       f"{'; ' if missing and extra else ''}{'unexpected ' + ', '.join(extra) if extra else ''})")
        rows, seq = None, None
        for t in self.inputs:
            x = arrays[t.name]
            if x.dtype != np.dtype(t.dtype):
                raise fail(f"got {t.name} of dtype {x.dtype} (convert it with .astype(np.{t.dtype}))")
            if x.ndim != len(t.shape):
                raise fail(f"got {t.name} with {x.ndim} dims, shape {list(x.shape)}")
            for axis, (want, got) in enumerate(zip(t.shape, x.shape)):
                if isinstance(want, int) and got != want:
                    raise fail(f"got {t.name} with axis {axis} of {got}, shape {list(x.shape)}")
            rows = x.shape[0] if rows is None else rows
            if x.shape[0] != rows:
                raise fail(f"got {t.name} with {x.shape[0]} rows where the inputs before it have {rows}")
            if rows == 0:
                raise fail(f"got {t.name} with no rows")
            if SEQ in t.shape:
                got = x.shape[t.shape.index(SEQ)]
                if seq is not None and got != seq:
                    raise fail(f"got {t.name} with sequence length {got} where the inputs before it have {seq}")
                seq = got
                if not 1 <= seq <= self.max_seq_len:
                    raise fail(f"got {t.name} with sequence length {seq}, outside [1, {self.max_seq_len}]")
            if t.kind == "token_ids" and (x.min() < 0 or x.max() >= t.vocab_size):
                raise fail(f"got {t.name} with token ids in [{x.min()}, {x.max()}], outside [0, {t.vocab_size})")
            if t.kind == "dense" and x.dtype.kind == "f" and not np.isfinite(x).all():
                raise fail(f"got {t.name} with {int((~np.isfinite(x)).sum())} values that are NaN or infinite")
            if t.kind == "mask" and not np.isin(x, (0, 1)).all():
                raise fail(f"got {t.name} with values other than 0 and 1")
        return rows, seq

    def example_inputs(self, batch: int, seq: int | None = None, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """A valid random request: one array per input, batch rows, `seq` tokens/steps where dynamic."""
        rng = rng if rng is not None else np.random.default_rng()
        seq = self.check_seq(seq)
        lengths = rng.integers(1, (seq or 1) + 1, size=batch)
        if seq:
            lengths[0] = seq  # one full row, so the padded length is really used
        out = {}
        for t in self.inputs:
            shape = t.concrete_shape(batch, seq)
            if t.kind == "dense":
                out[t.name] = rng.standard_normal(shape).astype(t.dtype)
            elif t.kind == "token_ids":
                out[t.name] = rng.integers(0, t.vocab_size, size=shape).astype(t.dtype)
            elif t.kind == "mask":
                out[t.name] = (np.arange(shape[1])[None, :] < lengths[:, None]).astype(t.dtype)
            else:
                raise NotImplementedError(f"example inputs for {t.kind!r} tensors (input {t.name!r})")
        return out

    def fingerprint(self) -> str:
        """A digest of the facts an artifact depends on; a later stage refuses artifacts from another spec."""
        facts = {
            "name": self.name,
            "inputs": [(t.name, t.dtype, list(t.shape), t.kind, t.vocab_size) for t in self.inputs],
            "outputs": [(t.name, t.dtype, list(t.shape)) for t in self.outputs],
            "seed": self.seed,
            "base_model": self.base_model,
            "max_seq_len": self.max_seq_len,
        }
        return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
