"""Large batches on more ONNX Runtime threads (#26): `tritonize repo` passes optimize's measured
threshold to the CPU runner only as measured, and a real server runs batches on both sessions with the
same answers as in-process ONNX Runtime."""
import dataclasses
import os
import shutil

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tritonize.model_artifacts import ModelArtifacts
from tritonize.export.runtime import ort_session
from tritonize.export.threads import ThreadProfile
from tritonize.model_repository.config import parse_pbtxt
from tritonize.model_repository.writer import build_repository
from tritonize.models import get_spec
from tritonize.serving.server import TritonServer

FROM_ROWS = 4


def _with_profile(artifacts, root, from_rows, threads=2):
    """A copy of mlp's artifacts whose fp32 variant's measured profile is the one given."""
    shutil.copytree(artifacts / "mlp", root / "mlp")
    spec = get_spec("mlp")
    loaded = ModelArtifacts.load(root, spec)
    choice = loaded.manifest.optimize.raw
    speedup = {1: 0.6, FROM_ROWS: 1.3, spec.serving.max_batch_size: 1.5}
    choice["variants"]["fp32"]["threads"] = ThreadProfile(1, threads, from_rows, speedup).to_json()
    loaded.record([], optimize=choice)
    return root


def _params(repo):
    config = parse_pbtxt((repo / "mlp" / "config.pbtxt").read_text())
    return {k: v.string_value for k, v in config.parameters.items()}


def test_the_measured_threshold_reaches_the_config_and_the_index(artifacts, tmp_path):
    root = _with_profile(artifacts, tmp_path / "art", FROM_ROWS)
    index = build_repository([get_spec("mlp")], root, tmp_path / "repo", variants={"mlp": "fp32"})
    params = _params(tmp_path / "repo")
    assert (params["intra_op_threads"], params["large_batch_threads"], params["large_batch_rows"]) == ("1", "2", "4")
    assert index["models"]["mlp"]["large_batches"] == "2 threads from 4 rows (optimize measured 1.5x at 64 rows)"


def test_no_threshold_where_threads_never_paid_or_the_spec_asks_for_other_counts(artifacts, tmp_path):
    never = _with_profile(artifacts, tmp_path / "never", None)
    build_repository([get_spec("mlp")], never, tmp_path / "r1", variants={"mlp": "fp32"})
    assert "large_batch_rows" not in _params(tmp_path / "r1")
    measured = _with_profile(artifacts, tmp_path / "measured", FROM_ROWS)
    spec = get_spec("mlp")
    off = dataclasses.replace(spec, serving=dataclasses.replace(spec.serving, large_batch_threads=1))
    index = build_repository([off], measured, tmp_path / "r2", variants={"mlp": "fp32"})
    assert "large_batch_rows" not in _params(tmp_path / "r2") and "large_batches" not in index["models"]["mlp"]
    with pytest.raises(ValueError, match="ServingHints.large_batch_threads must be an int >= 1, got 0"):
        dataclasses.replace(spec.serving, large_batch_threads=0)


@pytest.mark.parametrize("from_rows, logged", [(FROM_ROWS, "batches of 4 rows or more run on 2 ONNX Runtime threads"),
                                                (1, "every batch runs on 2 ONNX Runtime threads")])
def test_a_real_server_answers_small_and_large_batches_like_onnx_runtime(artifacts, tmp_path, from_rows, logged):
    root = _with_profile(artifacts, tmp_path / "art", from_rows)
    repo = tmp_path / "repo"
    build_repository([get_spec("mlp")], root, repo, variants={"mlp": "fp32"})
    spec, rng = get_spec("mlp"), np.random.default_rng()
    reference = ort_session(repo / "mlp" / "1" / "model.onnx", threads=1)
    name, out = spec.input_names[0], spec.output_names[0]
    with TritonServer(repo, ["mlp"]) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for rows in (1, FROM_ROWS - 1, FROM_ROWS, spec.serving.max_batch_size):
            x = spec.example_inputs(rows, rng=rng)[name]
            request = grpcclient.InferInput(name, list(x.shape), "FP32")
            request.set_data_from_numpy(x)
            got = client.infer("mlp", [request]).as_numpy(out)
            np.testing.assert_allclose(got, reference.run([out], {name: x})[0], rtol=1e-5, atol=1e-6)
        log = server.log()
    if len(os.sched_getaffinity(0)) >= 2:
        assert f"mlp: {logged}" in log
    else:  # one core: the second session would only contend, so the runner says it is not used
        assert "large_batch_threads 2 asks for more threads than the 1 cores" in log
