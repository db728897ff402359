"""Triton Python-backend model that turns UTF-8 text into BERT token ids with a `tokenizers` fast tokenizer.

Copied as-is into `<repository>/<model>/<version>/model.py`, with the model's tokenizer.json beside it.
The config has one BYTES (TYPE_STRING) input of dims [1] and max_batch_size > 0, so each request holds
a [batch, 1] tensor of UTF-8 strings, and two INT64 outputs of dims [-1], input_ids and attention_mask:
[batch, seq], seq being the longest sentence of that request ([CLS] text [SEP], padded on the right
with the tokenizer's pad id, mask 0). Each request is tokenized on its own, so requests of different
lengths are never padded together. What to load comes from the config's `parameters`:
  tokenizer_file  the tokenizer.json beside this file (default tokenizer.json)
  max_seq_len     the model's maximum sequence length; longer text is truncated, not refused (required)
A row that is not valid UTF-8 fails its request alone with an error naming the row; the other
requests of the same `execute` call are answered as usual. Empty strings are valid ([CLS] [SEP]).
It needs only numpy and tokenizers (no torch), so the folder also runs in NVIDIA's Triton container;
the tokenization itself is tritonize.models.tokenization, copied beside this file as tokenization.py.
The functions above the model class do not need Triton, so tests can import this file directly.
"""
import importlib.util
import json
import os

import numpy as np

# The tokenization itself (tritonize.models.tokenization) is copied beside this file in a repository,
# which Triton loads by path; from the source tree (tests) the package's own module is used.
_COPY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenization.py")
if os.path.isfile(_COPY):
    _spec = importlib.util.spec_from_file_location("tritonize_tokenization", _COPY)
    tokenization = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(tokenization)
else:
    from tritonize.models import tokenization
OUTPUT_NAMES, encode, load_tokenizer = tokenization.OUTPUT_NAMES, tokenization.encode, tokenization.load_tokenizer

try:
    import triton_python_backend_utils as pb_utils
except ImportError:  # imported outside Triton (tests): the plain functions below still work
    pb_utils = None


class BadInput(ValueError):
    """The request's text cannot be tokenized; its message goes back to the client as is."""


def decode_texts(array, name="text"):
    """The rows of a request's BYTES tensor ([batch, 1] or [batch] of bytes) as str; BadInput names the
    first row that is not valid UTF-8."""
    array = np.asarray(array, dtype=object)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    elif array.ndim != 1:
        raise BadInput(f"request '{name}' must be [batch, 1] strings, got shape {list(array.shape)}")
    texts = []
    for row, value in enumerate(array):
        if isinstance(value, np.bytes_):
            value = bytes(value)
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as e:
                raise BadInput(f"request '{name}' row {row} is not valid UTF-8: {e}") from None
        elif not isinstance(value, str):
            raise BadInput(f"request '{name}' row {row} is {type(value).__name__}, not UTF-8 bytes")
        texts.append(value)
    return texts


def tokenize_request(tokenizer, array, name="text"):
    """One request's BYTES tensor -> (input_ids, attention_mask), padded to its own longest row."""
    return encode(tokenizer, decode_texts(array, name))


def read_config(config):
    """(input name, tokenizer file name, max_seq_len) from the model config, checked."""
    if int(config.get("max_batch_size", 0)) <= 0:
        raise ValueError("the tokenizer model needs max_batch_size > 0 (requests are [batch, 1] strings)")
    inputs = config.get("input", [])
    if len(inputs) != 1 or inputs[0].get("data_type") != "TYPE_STRING":
        raise ValueError(f"the tokenizer model takes exactly one TYPE_STRING input, the config has {inputs}")
    outputs = {o["name"]: o.get("data_type") for o in config.get("output", [])}
    if outputs != {n: "TYPE_INT64" for n in OUTPUT_NAMES}:
        raise ValueError(f"the tokenizer model's outputs are {OUTPUT_NAMES}, TYPE_INT64; the config has {outputs}")
    params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
    if "max_seq_len" not in params:
        raise ValueError("the tokenizer model needs the parameter max_seq_len")
    return inputs[0]["name"], params.get("tokenizer_file", "tokenizer.json"), int(params["max_seq_len"])


class TritonPythonModel:
    def initialize(self, args):
        if pb_utils is None:
            raise RuntimeError("triton_python_backend_utils is only available inside Triton's Python backend")
        config = json.loads(args["model_config"])
        self.input_name, tokenizer_file, max_seq_len = read_config(config)
        path = os.path.join(args["model_repository"], args["model_version"], tokenizer_file)
        self.tokenizer = load_tokenizer(path, max_seq_len)

    def execute(self, requests):
        return [self._respond(request) for request in requests]

    def _respond(self, request):
        try:
            tensor = pb_utils.get_input_tensor_by_name(request, self.input_name)
            if tensor is None:
                raise BadInput(f"request has no input '{self.input_name}'")
            ids, mask = tokenize_request(self.tokenizer, tensor.as_numpy(), self.input_name)
            return pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("input_ids", ids), pb_utils.Tensor("attention_mask", mask)]
            )
        except BadInput as e:
            # The client's mistake: INVALID_ARG where the backend knows error codes (Triton >= 23.x).
            code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
            error = pb_utils.TritonError(str(e)) if code is None else pb_utils.TritonError(str(e), code)
            return pb_utils.InferenceResponse(error=error)
        except Exception as e:  # noqa: BLE001 - one request's failure never takes the stub down
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(e).__name__}: {e}"))

    def finalize(self):
        self.tokenizer = None
