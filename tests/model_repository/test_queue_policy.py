"""Overload (#24): a model whose serving hints ask for a queue policy gets a bounded queue, and a
request's own timeout drops it from the queue. On a real server (conftest.py: mlp with a queue of 4 and
a 200 ms batching window), a flood gets the requests over the bound refused at once with UNAVAILABLE,
and a request whose timeout runs out while it waits is dropped, never executed.
"""
import dataclasses
import time

import numpy as np
import pytest
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.utils import InferenceServerException

from tritonize.export.runtime import ort_session, run_ort
from tritonize.model_repository.config import build_config, build_text_ensemble_config
from tritonize.models import ServingHints, get_spec, model_names
from tritonize.models.spec import QUEUE_BATCHES

UNAVAILABLE = "StatusCode.UNAVAILABLE"


@pytest.mark.parametrize("name", model_names())
def test_a_queue_policy_only_where_the_hints_ask_for_one(name):
    spec = get_spec(name)
    # Off by default: on Triton 2.51 a queue policy costs the batcher its prefetching (ServingHints says why).
    assert not spec.serving.queue_policy
    assert not build_config(spec, "cpu").dynamic_batching.HasField("default_queue_policy")
    hints = dataclasses.replace(spec.serving, queue_policy=True)
    for target in ("cpu", "gpu"):
        policy = build_config(dataclasses.replace(spec, serving=hints), target).dynamic_batching.default_queue_policy
        assert policy.max_queue_size == QUEUE_BATCHES * hints.max_batch_size * hints.instance_count > 0
        assert policy.default_timeout_microseconds == hints.queue_timeout_us > 0
        assert policy.allow_timeout_override  # a client's shorter timeout applies
        assert policy.timeout_action == mc.ModelQueuePolicy.REJECT


def test_hints_set_the_queue_and_bad_hints_are_refused():
    hints = ServingHints(queue_policy=True, max_queue_size=3, queue_timeout_us=250)
    policy = build_config(dataclasses.replace(get_spec("mlp"), serving=hints), "cpu").dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (3, 250)
    assert ServingHints(max_batch_size=16, instance_count=2).queue_size == QUEUE_BATCHES * 32
    # The ensemble has no queue of its own: its steps' models queue the requests.
    assert not build_text_ensemble_config(get_spec("minilm")).HasField("dynamic_batching")
    with pytest.raises(ValueError, match="ServingHints.max_queue_size must be an int >= 0, got -1"):
        ServingHints(max_queue_size=-1)
    with pytest.raises(ValueError, match="ServingHints.queue_timeout_us must be an int >= 0, got 0.5"):
        ServingHints(queue_timeout_us=0.5)


def _rows(n, seed):
    return np.random.default_rng(seed).standard_normal((n, 784)).astype(np.float32)


@pytest.mark.server
def test_a_flood_over_the_queue_bound_is_refused_at_once(guarded, send_together):
    flood = 3 * guarded.mlp_queue
    xs = [_rows(1, seed) for seed in range(flood)]
    answers = send_together("mlp", [({"x": x}, {}) for x in xs])
    refused = [(a, t) for a, t in answers if isinstance(a, InferenceServerException)]
    served = [(i, a, t) for i, (a, t) in enumerate(answers) if not isinstance(a, InferenceServerException)]
    # The first requests wait out the batching window in the queue; those over its bound are refused.
    assert len(served) == guarded.mlp_queue and len(refused) == flood - guarded.mlp_queue, [str(a) for a, _ in refused]
    for error, _ in refused:
        assert error.status() == UNAVAILABLE and "Exceeds maximum queue size" in error.message(), str(error)
    # Refused at once, not after waiting: well before the window that the queued ones wait out.
    assert max(t for _, t in refused) < guarded.window_s <= min(t for _, _, t in served)
    # The queued ones ran as one batch, and the served INT8 graph's kernels differ by batch size (by
    # ~1e-3), so the reference is the served file run in-process on that batch.
    session = ort_session(guarded.repository / "mlp" / "1" / "model.onnx", threads=1)
    want = run_ort(session, get_spec("mlp"), {"x": np.concatenate([xs[i] for i, _, _ in served])})["logits"]
    got = np.concatenate([result.as_numpy("logits") for _, result, _ in served])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.server
def test_a_request_whose_timeout_runs_out_in_the_queue_is_dropped(guarded, send_together, model_stats):
    before = model_stats("mlp")
    short = guarded.window_s / 10 * 1e6  # µs: it runs out while the request waits for the batching window
    (dropped, _), (kept, _) = send_together("mlp", [({"x": _rows(3, 0)}, {"timeout": int(short)}),
                                                    ({"x": _rows(1, 1)}, {})])
    assert isinstance(dropped, InferenceServerException), "the request outlived its timeout in the queue"
    assert dropped.status() == UNAVAILABLE and "Request timeout expired" in dropped.message(), str(dropped)
    assert kept.as_numpy("logits").shape == (1, 10)
    deadline = time.monotonic() + 5  # the server counts a request just after answering it
    while True:
        after = model_stats("mlp")
        rows = after.inference_count - before.inference_count
        failed = after.inference_stats.fail.count - before.inference_stats.fail.count
        if (rows >= 1 and failed >= 1) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    # Only the kept request's row ran: the dropped one (3 rows) never reached the model.
    assert (rows, failed) == (1, 1)
