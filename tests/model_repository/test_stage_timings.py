"""The ONNX Runtime runner's stage timings (#26): off by default, and then nothing is timed or written;
on (the config parameter `stage_timings`), each `execute` call's steps in order, written as JSON when the
model is unloaded. In-process with a stand-in for triton_python_backend_utils; bench's tests serve it.
Also the runner's second session for large batches (#26), in-process: which batches run on which."""
import json
from types import SimpleNamespace

import numpy as np
import pytest

from tritonize.model_repository.backends.request_batching import (
    InputChecks,
    StepTimings,
    run_batched,
    run_timed,
)


class _Tensor:
    def __init__(self, name, array):
        self._name, self.array = name, array

    def name(self):
        return self._name

    def as_numpy(self):
        return self.array


class _Request:
    def __init__(self, **arrays):
        self._inputs = [_Tensor(n, a) for n, a in arrays.items()]

    def inputs(self):
        return self._inputs


class _Response:
    def __init__(self, output_tensors=None, error=None):
        self.output_tensors, self.error = output_tensors, error


class _Error:
    def __init__(self, message, code=None):
        self.message = message


LOGGED = []  # what the runner logged through the stand-in's Logger
PB_UTILS = SimpleNamespace(
    Logger=SimpleNamespace(log_info=lambda m: LOGGED.append(("info", m)),
                           log_warn=lambda m: LOGGED.append(("warn", m))),
    Tensor=_Tensor, InferenceResponse=_Response, TritonError=_Error,
    get_input_tensor_by_name=lambda request, name: next(t for t in request.inputs() if t.name() == name))
CHECKS = InputChecks({"inputs": {"x": {"kind": "dense"}}, "max_seq_len": 0}, ["x"])


def _double(inputs):
    return [inputs[0] * 2]


def _ticks():
    count = iter(range(100, 10_000, 10))
    return lambda: next(count)


def test_a_lone_request_records_each_step_in_order_and_answers_as_run_batched_does():
    timings = StepTimings("unused")
    request = _Request(x=np.ones((1, 4), np.float32))
    timed = run_timed([request], ["x"], ["y"], _double, PB_UTILS, CHECKS, timings, clock=_ticks())
    plain = run_batched([request], ["x"], ["y"], _double, PB_UTILS, CHECKS)
    assert timings.calls == [[1, 100, 110, 120, 130, 140]]
    assert [t.name() for t in timed[0].output_tensors] == ["y"]
    np.testing.assert_array_equal(timed[0].output_tensors[0].array, plain[0].output_tensors[0].array)


def test_a_refused_request_is_answered_with_its_error_and_timed_up_to_the_check():
    timings = StepTimings("unused")
    bad = _Request(x=np.array([[1.0, np.nan]], np.float32))
    responses = run_timed([bad], ["x"], ["y"], _double, PB_UTILS, CHECKS, timings, clock=_ticks())
    assert "NaN or infinite" in responses[0].error.message
    assert timings.calls == [[1, 100, 110, None, None, 120]]


def test_several_requests_are_run_batched_and_timed_as_a_whole():
    timings = StepTimings("unused")
    requests = [_Request(x=np.full((1, 3), i, np.float32)) for i in range(3)]
    responses = run_timed(requests, ["x"], ["y"], _double, PB_UTILS, CHECKS, timings, clock=_ticks())
    assert [r.output_tensors[0].array[0, 0] for r in responses] == [0, 2, 4]
    assert timings.calls == [[3, 100, None, None, None, 110]]


def test_timings_are_written_whole_as_json_and_kept_up_to_the_limit(tmp_path):
    path = tmp_path / "timings.json"
    timings = StepTimings(str(path), limit=2)
    for i in range(3):
        timings.add([1, i, i, i, i, i])
    timings.write()
    data = json.loads(path.read_text())
    assert data["steps"] == ["requests", "start", "inputs", "checks", "run", "end"]
    assert data["calls"] == [[1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]]
    assert [p.name for p in tmp_path.iterdir()] == ["timings.json"]  # no temporary file left


@pytest.fixture
def runner_module(monkeypatch):
    """The ONNX Runtime runner's model.py, imported as the stub does (its helpers as top-level modules)."""
    import importlib
    import sys

    from tritonize.model_repository import backends
    from tritonize.model_repository.backends import request_batching

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", PB_UTILS)
    monkeypatch.setitem(sys.modules, "request_batching", request_batching)
    monkeypatch.syspath_prepend(str(backends.__path__[0] + "/onnxruntime"))
    monkeypatch.delitem(sys.modules, "model", raising=False)
    return importlib.import_module("model")


def _initialized(runner_module, tmp_path, artifacts_mlp, **params):
    model = runner_module.TritonPythonModel()
    config = {"input": [{"name": "x"}], "output": [{"name": "logits"}],
              "parameters": {k: {"string_value": v} for k, v in params.items()}}
    model.initialize({"model_config": json.dumps(config), "model_repository": str(artifacts_mlp.parent),
                      "model_version": artifacts_mlp.name, "model_name": "mlp"})
    return model


@pytest.fixture
def artifacts_mlp(tmp_path):
    """A version folder holding a tiny ONNX model with mlp's input and output names: y = x @ W."""
    import onnx
    from onnx import TensorProto, helper

    w = helper.make_tensor("W", TensorProto.FLOAT, [4, 2], np.arange(8, dtype=np.float32).tolist())
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["logits"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], [w])
    folder = tmp_path / "repo" / "1"
    folder.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "model.onnx")
    return folder


def test_off_by_default_execute_is_the_plain_method_and_nothing_is_written(runner_module, tmp_path, artifacts_mlp):
    model = _initialized(runner_module, tmp_path, artifacts_mlp)
    assert model.timings is None and "execute" not in vars(model)  # the class's own execute: no timing at all
    out = model.execute([_Request(x=np.ones((1, 4), np.float32))])
    assert [t.name() for t in out[0].output_tensors] == ["logits"]  # no extra output either
    before = sorted(p.name for p in tmp_path.rglob("*"))
    model.finalize()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_on_each_execute_is_timed_and_written_at_unload(runner_module, tmp_path, artifacts_mlp):
    path = tmp_path / "stub-timings.json"
    model = _initialized(runner_module, tmp_path, artifacts_mlp, stage_timings=str(path))
    for _ in range(3):
        out = model.execute([_Request(x=np.ones((1, 4), np.float32))])
    np.testing.assert_allclose(out[0].output_tensors[0].array, [[12.0, 16.0]])
    assert not path.exists()  # written when the model is unloaded, not per request
    model.finalize()
    calls = json.loads(path.read_text())["calls"]
    assert len(calls) == 3
    assert all(c[0] == 1 and c[1:] == sorted(c[1:]) for c in calls)


def test_large_batches_run_on_the_second_session_and_small_ones_on_the_first(runner_module, tmp_path, artifacts_mlp,
                                                                              monkeypatch):
    monkeypatch.setattr(runner_module.os, "sched_getaffinity", lambda pid: {0, 1})
    LOGGED.clear()
    model = _initialized(runner_module, tmp_path, artifacts_mlp, large_batch_threads="2", large_batch_rows="3")
    assert model.session.get_session_options().intra_op_num_threads == 1 and model.large_rows == 3
    assert LOGGED == [("info", "mlp: batches of 3 rows or more run on 2 ONNX Runtime threads")]
    ran = []
    small, large = model._run_session, model._run_large
    model._run_session = lambda *a: ran.append("one thread") or small(*a)
    model._run_large = lambda *a: ran.append("two threads") or large(*a)
    for rows in (1, 2, 3, 5):
        out = model.execute([_Request(x=np.ones((rows, 4), np.float32))])
        np.testing.assert_allclose(out[0].output_tensors[0].array, np.full((rows, 2), [12.0, 16.0]))
    out = model.execute([_Request(x=np.ones((1, 4), np.float32)) for _ in range(3)])  # 3 requests: one batch of 3
    assert ran == ["one thread", "one thread", "two threads", "two threads", "two threads"]
    assert len(out) == 3


@pytest.mark.parametrize("cores, rows, threads, large_rows, logged", [
    ({0}, "3", 1, None, ("warn", "mlp: large_batch_threads 2 asks for more threads than the 1 cores this process "
                                 "may use; every batch runs on 1")),
    ({0, 1}, "1", 2, None, ("info", "mlp: every batch runs on 2 ONNX Runtime threads")),  # one session only
])
def test_too_few_cores_turn_it_off_and_from_one_row_one_session_is_enough(runner_module, tmp_path, artifacts_mlp,
                                                                          monkeypatch, cores, rows, threads,
                                                                          large_rows, logged):
    monkeypatch.setattr(runner_module.os, "sched_getaffinity", lambda pid: cores)
    LOGGED.clear()
    model = _initialized(runner_module, tmp_path, artifacts_mlp, large_batch_threads="2", large_batch_rows=rows)
    assert model.session.get_session_options().intra_op_num_threads == threads
    assert model.large_rows == large_rows and model._run_large is None and LOGGED == [logged]
