"""Shared by the Python-backend runners (copied beside their model.py): the requests Triton hands to
`execute` at once are run as batches, one per distinct input shape, and each request gets its own
response or its own error. A failure never escapes to crash the backend stub.

It also checks what Triton cannot check against the config (`InputChecks`): token ids inside the
vocabulary, sequence lengths within the model's maximum and equal across the inputs, masks of 0 and 1,
finite dense floats. A request that fails them gets INVALID_ARG naming the input and the row, and
never reaches the model: out of range, ONNX Runtime answers with an INTERNAL error in its own words,
and a NaN row through a statically quantized graph comes out as finite logits, silently wrong.
Only numpy is needed, so the folder also runs in NVIDIA's Triton container.
"""
import json
import os
import time

import numpy as np


class BadRequest(ValueError):
    """The request is well formed for Triton but not an input the model can answer; the message goes
    back to the client as is, with INVALID_ARG."""


def invalid_arg(pb_utils, message):
    """A TritonError with code INVALID_ARG where the backend knows error codes (Triton >= 23.x)."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    return pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)


# Token ids and mask values are checked with one max() over an unsigned view of the same bytes:
# a negative id reads as a huge unsigned one, so [0, n) is a single comparison instead of min and max.
_UNSIGNED = {np.dtype(np.int64): np.uint64, np.dtype(np.int32): np.uint32, np.dtype(np.int16): np.uint16,
             np.dtype(np.int8): np.uint8}


# The ufuncs' own reductions: ndarray.max() and .all() add a Python-level wrapper that costs about as
# much as the reduction itself on a request of a few hundred values.
_max, _all = np.maximum.reduce, np.logical_and.reduce


def _as_unsigned(x):
    unsigned = _UNSIGNED.get(x.dtype)
    if unsigned is not None:
        return x.view(unsigned)
    return x if x.dtype.kind == "u" else None


def _bad_rows(name, x, bad, what, expected):
    """BadRequest naming the first bad row of `x` and what it holds; `bad` is elementwise."""
    rows = np.flatnonzero(bad.reshape(len(x), -1).any(axis=1))
    first = rows[0]
    more = f" ({len(rows)} of the request's {len(x)} rows fail this)" if len(rows) > 1 else ""
    return BadRequest(f"input '{name}' row {first} {what(x[first], bad[first])}; expected {expected}{more}")


def _first_value(row, bad):
    return np.asarray(row)[np.asarray(bad)][0].item()


class InputChecks:
    """The checks of one model's inputs, from the config parameter `input_checks` (JSON, written by
    tritonize's model_repository/config.py from the model's spec):
      {"max_seq_len": 256, "inputs": {"input_ids": {"kind": "token_ids", "vocab_size": 30522,
       "seq_axis": 1}, "attention_mask": {"kind": "mask", "seq_axis": 1}}}
    Calling it with one request's input arrays (in `input_names` order) raises BadRequest or returns."""

    def __init__(self, description, input_names):
        spec = json.loads(description) if isinstance(description, str) else description
        self.max_seq_len = int(spec.get("max_seq_len") or 0)
        inputs = spec.get("inputs", {})
        unknown = sorted(set(inputs) - set(input_names))
        if unknown:
            raise ValueError(f"input_checks names inputs the config does not have: {unknown}; inputs are {input_names}")
        self.seq = []  # (position, name, axis) of every input with a sequence axis
        self.values = []  # (position, name, check)
        for position, name in enumerate(input_names):
            check = inputs.get(name, {})
            if check.get("seq_axis") is not None:
                self.seq.append((position, name, int(check["seq_axis"])))
            kind = check.get("kind", "dense")
            if kind == "token_ids":
                vocab = int(check["vocab_size"])
                if vocab <= 0:
                    raise ValueError(f"input_checks: input '{name}' is token ids, but vocab_size is {vocab}")
                self.values.append((position, name, _token_check(vocab)))
            elif kind == "mask":
                self.values.append((position, name, _mask_check))
            elif kind == "dense":
                self.values.append((position, name, _finite_check))
        if self.seq and self.max_seq_len <= 0:
            raise ValueError(f"input_checks: inputs {[s[1] for s in self.seq]} have a sequence axis, "
                             f"but max_seq_len is {self.max_seq_len}")

    def __bool__(self):
        return bool(self.seq or self.values)

    def __call__(self, inputs):
        if self.seq:
            self._check_seq(inputs)
        for position, name, check in self.values:
            x = inputs[position]
            if x.size:
                check(name, x)

    def _check_seq(self, inputs):
        first_position, first_name, first_axis = self.seq[0]
        first = inputs[first_position]
        length = first.shape[first_axis]
        if not 1 <= length <= self.max_seq_len:
            raise BadRequest(f"input '{first_name}' has sequence length {length} (shape {list(first.shape)}); "
                             f"expected 1 to {self.max_seq_len}, the model's max_seq_len")
        for position, name, axis in self.seq[1:]:
            x = inputs[position]
            if x.shape[axis] != length:
                raise BadRequest(f"input '{name}' has shape {list(x.shape)} where input '{first_name}' has "
                                 f"{list(first.shape)}; expected the same sequence length ({length})")


def _token_check(vocab):
    def check(name, x):
        unsigned = _as_unsigned(x)
        if unsigned is not None and _max(unsigned, axis=None) < vocab:
            return
        with np.errstate(invalid="ignore"):
            bad = (x < 0) | (x >= vocab)
            if x.dtype.kind == "f":  # float ids (a user's model): also NaN, infinities and fractions
                bad |= ~np.isfinite(x) | (x != np.floor(x))
        if bad.any():
            raise _bad_rows(name, x, bad, lambda row, b: f"has token id {_first_value(row, b)}",
                            f"token ids in [0, {vocab})")
    return check


def _mask_check(name, x):
    if x.dtype == np.bool_:
        return
    unsigned = _as_unsigned(x)
    if unsigned is not None:
        if _max(unsigned, axis=None) <= 1:
            return
        bad = unsigned > 1
    else:
        bad = (x != 0) & (x != 1)
        if not bad.any():
            return
    raise _bad_rows(name, x, bad, lambda row, b: f"has value {_first_value(row, b)}", "only 0 and 1")


def _finite_check(name, x):
    if x.dtype.kind not in "fc":
        return
    finite = np.isfinite(x)
    if _all(finite, axis=None):
        return

    def what(row, bad):
        count = int(bad.sum())
        return f"holds {count} NaN or infinite value{'s' if count > 1 else ''} (the first is {_first_value(row, bad)})"
    raise _bad_rows(name, x, ~finite, what, "finite numbers")


def read_checks(config):
    """The model's `InputChecks` from its parsed config, or None where the config asks for none."""
    description = config.get("parameters", {}).get("input_checks", {}).get("string_value")
    if not description:
        return None
    checks = InputChecks(description, [i["name"] for i in config["input"]])
    return checks or None


def _inputs(request, input_names, pb_utils):
    return [pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in input_names]


def run_batched(requests, input_names, output_names, run, pb_utils, checks=None):
    """`run(list of input arrays) -> list of output arrays`, batch axis first. `checks(inputs)` (an
    `InputChecks`) runs before the model: a request that fails it is answered with INVALID_ARG alone,
    and the others of the same call run as usual."""
    if len(requests) == 1:  # the usual case at low load: no grouping, no slicing
        return [_run_one(requests[0], input_names, output_names, run, pb_utils, checks)]
    responses = [None] * len(requests)
    groups = {}
    for i, request in enumerate(requests):
        try:
            inputs = _inputs(request, input_names, pb_utils)
        except Exception as e:  # noqa: BLE001
            responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(e).__name__}: {e}"))
            continue
        # The dynamic batcher may hand over requests of different sequence lengths together.
        groups.setdefault(tuple(x.shape[1:] for x in inputs), []).append((i, inputs))
    for members in groups.values():
        try:
            batch = _concatenated(members, len(input_names))
            if checks is not None:
                # The checks look at each row on its own, so the batch passes exactly when every request
                # does: one check of the batch instead of one per request (a fixed cost in Python each).
                # Only when it fails are the requests checked one by one, to answer just the bad ones.
                try:
                    checks(batch)
                except BadRequest:
                    members = _passing(members, checks, responses, pb_utils)
                    if not members:
                        continue
                    batch = _concatenated(members, len(input_names))
            outputs = run(batch)
        except Exception as e:  # noqa: BLE001
            error = pb_utils.TritonError(f"{type(e).__name__}: {e}")
            for i, _ in members:
                responses[i] = pb_utils.InferenceResponse(error=error)
            continue
        start = 0
        for i, inputs in members:
            stop = start + inputs[0].shape[0]
            tensors = [pb_utils.Tensor(n, out[start:stop]) for n, out in zip(output_names, outputs)]
            responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
            start = stop
    return responses


def _concatenated(members, count):
    if len(members) == 1:
        return members[0][1]
    return [np.concatenate([m[1][k] for m in members]) for k in range(count)]


def _passing(members, checks, responses, pb_utils):
    """The members whose inputs pass `checks`; each failing one is answered with INVALID_ARG."""
    passing = []
    for i, inputs in members:
        try:
            checks(inputs)
        except BadRequest as e:
            responses[i] = pb_utils.InferenceResponse(error=invalid_arg(pb_utils, str(e)))
            continue
        passing.append((i, inputs))
    return passing


def _run_one(request, input_names, output_names, run, pb_utils, checks):
    try:
        inputs = _inputs(request, input_names, pb_utils)
        if checks is not None:
            checks(inputs)
        outputs = run(inputs)
    except BadRequest as e:
        return pb_utils.InferenceResponse(error=invalid_arg(pb_utils, str(e)))
    except Exception as e:  # noqa: BLE001
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(e).__name__}: {e}"))
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, o) for n, o in zip(output_names, outputs)])



class StepTimings:
    """Per `execute` call, when its steps ended (time.monotonic_ns: CLOCK_MONOTONIC, the clock of Triton's
    trace timestamps, so bench/suite/stages.py places them between the server's own): [requests in the call,
    start, inputs read, inputs checked, model run, responses built]. A call of several requests is run
    by run_batched and has only its start and end (None between). At most `limit` calls are kept;
    `write()` puts them in `path` as JSON (temporary file, then rename)."""

    STEPS = ("start", "inputs", "checks", "run", "end")

    def __init__(self, path, limit=100_000):
        self.path, self.limit, self.calls = path, limit, []

    def add(self, call):
        if len(self.calls) < self.limit:
            self.calls.append(call)

    def write(self):
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump({"clock": "CLOCK_MONOTONIC", "steps": ["requests", *self.STEPS], "calls": self.calls}, f)
        os.replace(tmp, self.path)


def run_timed(requests, input_names, output_names, run, pb_utils, checks, timings, clock=time.monotonic_ns):
    """`run_batched` with its steps timed into `timings` (a StepTimings). A lone request takes the same
    steps as _run_one, with a clock reading after each; several are run by run_batched, timed as a whole."""
    start = clock()
    if len(requests) != 1:
        responses = run_batched(requests, input_names, output_names, run, pb_utils, checks)
        timings.add([len(requests), start, None, None, None, clock()])
        return responses
    t = [1, start, None, None, None, None]
    try:
        inputs = _inputs(requests[0], input_names, pb_utils)
        t[2] = clock()
        if checks is not None:
            checks(inputs)
        t[3] = clock()
        outputs = run(inputs)
        t[4] = clock()
    except BadRequest as e:
        response = pb_utils.InferenceResponse(error=invalid_arg(pb_utils, str(e)))
    except Exception as e:  # noqa: BLE001
        response = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(e).__name__}: {e}"))
    else:
        tensors = [pb_utils.Tensor(n, o) for n, o in zip(output_names, outputs)]
        response = pb_utils.InferenceResponse(output_tensors=tensors)
    t[5] = clock()
    timings.add(t)
    return [response]
