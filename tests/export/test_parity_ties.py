"""Top-1 agreement and ties: a row whose two best reference logits lie within FP32's absolute tolerance
agrees whichever way a runtime orders them (a rounding of 1e-7 flips it); a row with a clear margin
counts only when the arg-max agrees."""
import dataclasses

import numpy as np

from tritonize.export.parity import compare
from tritonize.models import get_spec


def _top1(expected: np.ndarray, actual: np.ndarray) -> int:
    spec = get_spec("mlp")  # a classifier; its FP32 atol is the tie bound
    out = spec.output_names[0]
    result = compare(spec, {out: expected}, {out: actual}, spec.tolerance("int8"), len(expected), None)
    return result.top1_matches


def test_a_tie_agrees_either_way_and_a_clear_margin_only_when_the_arg_max_agrees():
    atol = get_spec("mlp").tolerance("fp32").atol
    tie = np.array([[1.0, 1.0 + atol / 2, 0.0]], np.float32)
    assert _top1(tie, tie[:, [1, 0, 2]]) == 1  # flipped, but a tie
    clear = np.array([[1.0, 1.0 + 100 * atol, 0.0]], np.float32)
    assert _top1(clear, clear[:, [1, 0, 2]]) == 0  # flipped across a real margin
    assert _top1(clear, clear) == 1
    both = np.concatenate([tie, clear])
    assert _top1(both, both[:, [1, 0, 2]]) == 1


def test_a_non_classifier_has_no_top1():
    spec = dataclasses.replace(get_spec("mlp"), classifier=False)
    x = np.ones((2, 10), np.float32)
    out = spec.output_names[0]
    assert compare(spec, {out: x}, {out: x}, spec.tolerance("fp32"), 2, None).top1_matches is None
