"""Input checks in the served runners (#24): what Triton cannot check against a config's dims and
dtypes (token ids in the vocabulary, sequence lengths, ids and mask of one shape, masks of 0/1, finite
dense floats) is refused with INVALID_ARG naming the input and the row, before the model runs; a good
request sent in the same batching window is answered as if alone.

The checks come from the config's `input_checks` parameter, written from the ModelSpec. In-process
tests read that parameter with the runners' own code; the rest use a real server (conftest.py).
"""
import time

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from tritonize.export.runtime import ort_session, run_ort
from tritonize.model_repository.backends.request_batching import BadRequest, InputChecks
from tritonize.model_repository.config import build_config, input_checks
from tritonize.models import get_spec, model_names

INVALID_ARGUMENT = "StatusCode.INVALID_ARGUMENT"
VOCAB = get_spec("minilm").inputs[0].vocab_size
MAX_SEQ = get_spec("minilm").max_seq_len


def _checks(name):
    spec = get_spec(name)
    return InputChecks(input_checks(spec), spec.input_names)


@pytest.mark.parametrize("name", model_names())
def test_every_model_checks_what_its_spec_says_and_valid_inputs_pass(name):
    spec = get_spec(name)
    config = build_config(spec, "cpu")
    checks = InputChecks(config.parameters["input_checks"].string_value, spec.input_names)
    for batch in (1, 5):
        arrays = spec.example_inputs(batch, spec.default_seq(), np.random.default_rng(batch))
        checks([arrays[n] for n in spec.input_names])  # raises on a valid request: a false alarm
    if spec.has_seq:
        checks([np.zeros(t.concrete_shape(1, spec.max_seq_len), t.dtype) for t in spec.inputs])  # the longest


def test_messages_name_the_input_the_row_and_what_was_expected():
    minilm, mlp = _checks("minilm"), _checks("mlp")
    ids, mask = np.zeros((4, 6), np.int64), np.ones((4, 6), np.int64)
    bad_ids = ids.copy()
    bad_ids[0, 0], bad_ids[2, 1], bad_ids[3, 5] = VOCAB, -1, VOCAB + 5
    bad_mask = mask.copy()
    bad_mask[1, 4] = 7
    inf_row = np.ones((1, 784), np.float32)
    inf_row[0, 9] = -np.inf
    cases = [
        (minilm, [bad_ids, mask], f"input 'input_ids' row 0 has token id {VOCAB}; expected token ids in [0, {VOCAB}) "
         "(3 of the request's 4 rows fail this)"),
        (minilm, [ids, bad_mask], "input 'attention_mask' row 1 has value 7; expected only 0 and 1"),
        (minilm, [ids, mask[:, :5]], "input 'attention_mask' has shape [4, 5] where input 'input_ids' has [4, 6]; "
         "expected the same sequence length (6)"),
        (minilm, [ids[:, :0], mask[:, :0]], f"input 'input_ids' has sequence length 0 (shape [4, 0]); expected 1 to "
         f"{MAX_SEQ}, the model's max_seq_len"),
        (mlp, [inf_row], "input 'x' row 0 holds 1 NaN or infinite value (the first is -inf); expected finite numbers"),
    ]
    for checks, inputs, message in cases:
        with pytest.raises(BadRequest) as e:
            checks(inputs)
        assert str(e.value) == message
    # Large finite values pass.
    mlp([np.full((2, 784), np.finfo(np.float32).max, np.float32)])


def _expect_invalid(answer, *parts):
    error, _ = answer
    assert isinstance(error, InferenceServerException), f"expected INVALID_ARGUMENT, got an answer: {error}"
    assert error.status() == INVALID_ARGUMENT, str(error)
    for part in parts:
        assert part in error.message(), error.message()


def _executions_after(model_stats, model, before, rows):
    """`execute` calls of `model` since `before`, once the server has counted `rows` more rows (it counts
    just after answering)."""
    deadline = time.monotonic() + 5
    while True:
        stats = model_stats(model)
        if stats.inference_count - before.inference_count >= rows or time.monotonic() > deadline:
            return stats.execution_count - before.execution_count


def _served_session(guarded, model):
    return ort_session(guarded.repository / model / "1" / "model.onnx", threads=1)


@pytest.mark.server
@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_mlp_refuses_a_row_that_is_not_finite_and_answers_the_request_beside_it(guarded, send_together, model_stats,
                                                                                 bad_value):
    spec = get_spec("mlp")
    rng = np.random.default_rng(0)
    bad = rng.standard_normal((3, 784)).astype(np.float32)
    bad[1] = bad_value  # the served INT8 static graph turned an all-NaN row into finite logits
    good = rng.standard_normal((2, 784)).astype(np.float32)
    before = model_stats("mlp")
    bad_answer, (result, _) = send_together("mlp", [({"x": bad}, {}), ({"x": good}, {})])
    _expect_invalid(bad_answer, "input 'x' row 1 holds 784 NaN or infinite values", "expected finite numbers")
    want = run_ort(_served_session(guarded, "mlp"), spec, {"x": good})["logits"]
    np.testing.assert_allclose(result.as_numpy("logits"), want, rtol=1e-5, atol=1e-6)
    assert _executions_after(model_stats, "mlp", before, rows=2) == 1  # both in one execute call


def _minilm_request(rng, rows, seq):
    ids = rng.integers(0, VOCAB, (rows, seq))
    mask = (np.arange(seq)[None, :] < rng.integers(1, seq + 1, (rows, 1))).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask}


def _set(arrays, name, row, col, value):
    out = {k: v.copy() for k, v in arrays.items()}
    out[name][row, col] = value
    return out


SEQ = 9
# name -> (the bad request made from a good [2, SEQ] one, what the error says, same shapes as the good one)
MINILM_CASES = {
    "token id -1": (lambda a: _set(a, "input_ids", 1, 3, -1),
                    ["input 'input_ids' row 1 has token id -1", f"expected token ids in [0, {VOCAB})"], True),
    "token id = vocab_size": (lambda a: _set(a, "input_ids", 0, 0, VOCAB),
                              [f"input 'input_ids' row 0 has token id {VOCAB}", f"[0, {VOCAB})"], True),
    "sequence over max_seq_len": (
        lambda a: {k: np.zeros((1, MAX_SEQ + 1), np.int64) + (k == "attention_mask") for k in a},
        [f"input 'input_ids' has sequence length {MAX_SEQ + 1}", f"expected 1 to {MAX_SEQ}, the model's max_seq_len"],
        False),
    "ids and mask of different shapes": (
        lambda a: {"input_ids": a["input_ids"], "attention_mask": np.ones((2, SEQ + 1), np.int64)},
        [f"input 'attention_mask' has shape [2, {SEQ + 1}] where input 'input_ids' has [2, {SEQ}]",
         "expected the same sequence length"], False),
    "mask value 2": (lambda a: _set(a, "attention_mask", 1, 0, 2),
                     ["input 'attention_mask' row 1 has value 2", "expected only 0 and 1"], True),
}


@pytest.mark.server
@pytest.mark.parametrize("case", MINILM_CASES)
def test_minilm_refuses_bad_token_inputs_and_answers_the_request_beside_it(guarded, send_together, model_stats, case):
    spec = get_spec("minilm")
    make_bad, message, same_shapes = MINILM_CASES[case]
    rng = np.random.default_rng(len(case))
    good = _minilm_request(rng, 2, SEQ)
    before = model_stats("minilm")
    bad_answer, (result, _) = send_together("minilm", [(make_bad(good), {}), (good, {})])
    _expect_invalid(bad_answer, *message)
    want = run_ort(_served_session(guarded, "minilm"), spec, good)["embeddings"]
    np.testing.assert_allclose(result.as_numpy("embeddings"), want, rtol=1e-4, atol=1e-5)
    if same_shapes:  # Triton batches only requests of equal shapes: these two shared one execute call
        assert _executions_after(model_stats, "minilm", before, rows=2) == 1
