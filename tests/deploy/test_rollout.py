"""Rolling update (#25): two real tritonservers reading one store (moto S3 on loopback), a client sending
requests from a few threads throughout, and `rollout` switching the replicas one by one.

- a good new version: zero failed requests, every answer is the old version's or the new one's, and
  afterwards only the new one answers; each replica reports the new version ready and the old one not.
  Once as the module function (v1 -> v2), once through `tritonize rollout` (v2 -> v3).
- a new version that fails its check is rolled back: a parity mismatch (the check given wrong expected
  outputs), and through the CLI a version that cannot load (its ONNX file is garbage); every replica
  serves the old version again, the CLI exits 2 naming the replica and the check.

The model is mlp's FP32 variant; a new version is the same graph with every weight scaled, so each answer
is told apart by comparing it, row by row, with ONNX Runtime run in-process on each version's file.
"""
import shutil
import threading
import uuid
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from onnx import numpy_helper

from tritonize.cli.main import main
from tritonize.client import TritonClient
from tritonize.deploy.rollout import rollout
from tritonize.models import get_spec
from tritonize.serving.admin import admin_headers
from tritonize.serving.replicas import Replicas

pytestmark = pytest.mark.server

MODEL, THREADS = "mlp", 3




@pytest.fixture(scope="module")
def base_repository(artifacts, tmp_path_factory) -> Path:
    from tritonize.model_repository.writer import build_repository

    root = tmp_path_factory.mktemp("rollout") / "repo"
    build_repository([get_spec(MODEL)], artifacts, root, "cpu", variants={MODEL: "fp32"})
    return root


def variant(base: Path, folder: Path, scale: float | None) -> Path:
    """A copy of `base` whose model file has every float weight times `scale` (None: the same model file,
    which ONNX Runtime runs in-process, but a Python-backend model.py that Triton cannot load)."""
    shutil.copytree(base, folder)
    path = folder / MODEL / "1" / "model.onnx"
    if scale is None:
        (path.parent / "model.py").write_text("this is not Python (\n")
        return folder
    graph = onnx.load(str(path))
    for i, tensor in enumerate(graph.graph.initializer):
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.float32:
            graph.graph.initializer[i].CopyFrom(numpy_helper.from_array(array * np.float32(scale), tensor.name))
    onnx.save(graph, str(path))
    return folder


def expected(repository: Path, inputs: list[dict]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(repository / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return [session.run(None, x)[0] for x in inputs]


class Load:
    """Threads sending requests through one client until stopped; each answer is labelled with the version
    (index into `answers`) whose expected output it matches, or -1."""

    def __init__(self, client: TritonClient, inputs: list[dict], answers: list[list[np.ndarray]]):
        self.client, self.inputs, self.answers = client, inputs, answers
        self.seen: list[int] = []
        self.failures: list[str] = []
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._threads = [threading.Thread(target=self._send, args=(s,), daemon=True) for s in range(THREADS)]
        for t in self._threads:
            t.start()

    def _send(self, seed: int) -> None:
        rng, name = np.random.default_rng(seed), get_spec(MODEL).output_names[0]
        while not self._stop.is_set():
            i = int(rng.integers(len(self.inputs)))
            try:
                got = self.client.infer(MODEL, self.inputs[i])[name]
            except Exception as e:  # noqa: BLE001 - every failure that reaches the caller counts
                with self._lock:
                    self.failures.append(f"{type(e).__name__}: {e}")
                continue
            which = next((v for v, a in enumerate(self.answers)
                          if got.shape == a[i].shape and np.allclose(got, a[i], atol=1e-4, rtol=1e-3)), -1)
            with self._lock:
                self.seen.append(which)

    def mark(self) -> int:
        with self._lock:
            return len(self.seen)

    def wait(self, more: int, timeout_s: float = 30.0) -> None:
        target, deadline = self.mark() + more, threading.Event()
        for _ in range(int(timeout_s * 20)):
            if self.mark() >= target:
                return
            deadline.wait(0.05)
        raise AssertionError(f"expected {more} more answers within {timeout_s} s, got {self.mark() - target + more}")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)


def versions(url: str, key: str) -> dict[str, bool]:
    with grpcclient.InferenceServerClient(url) as raw:
        index = raw.get_model_repository_index(headers=admin_headers(key), as_json=True)["models"]
        return {m["version"]: raw.is_model_ready(MODEL, m["version"]) for m in index if m["name"] == MODEL}


@pytest.fixture
def setup(s3_env, base_repository, tmp_path):
    """v1 published to a fresh prefix, two replicas on it, their endpoints file and admin key file."""
    from tritonize.model_repository.publish import publish

    url = f"s3://{s3_env.bucket}/rollout-{uuid.uuid4().hex[:8]}/models"
    publish(base_repository, url)
    with Replicas(url, 2, drain_s=1.0, stop_timeout_s=20.0, health_interval_s=0) as replicas:
        endpoints = replicas.write_endpoints_file(tmp_path / "endpoints.json")
        key_file = tmp_path / "admin.key"
        key_file.write_text(replicas.admin_key + "\n")
        key_file.chmod(0o600)
        rng = np.random.default_rng(7)
        inputs = [get_spec(MODEL).example_inputs(1 + i % 4, None, rng) for i in range(16)]
        yield url, replicas, endpoints, key_file, inputs


def test_rollout_switches_every_replica_without_a_failed_request(setup, base_repository, tmp_path):
    url, replicas, endpoints, key_file, inputs = setup
    v2, v3 = (variant(base_repository, tmp_path / f"v{n}", s) for n, s in ((2, 1.5), (3, 0.5)))
    answers = [expected(r, inputs) for r in (base_repository, v2, v3)]
    urls = [e.grpc for e in replicas.endpoints()]
    with TritonClient(urls) as client:
        load = Load(client, inputs, answers)
        try:
            load.wait(20)
            result = rollout(MODEL, v2, url, str(endpoints), replicas.admin_key, rows=4)
            assert result.ok, result.failure
            assert result.version == 2
            assert [(r.before, r.after, r.ok) for r in result.replicas] == [((1,), (2,), True)] * 2
            mark = load.mark()
            load.wait(20)
            assert set(load.seen[mark:]) == {1}, "after the rollout only v2 answers"
            assert all(versions(u, replicas.admin_key) == {"2": True, "1": False} for u in urls)

            assert main(["rollout", MODEL, "--repo", str(v3), "--store", url,
                         "--endpoints", ",".join(urls), "--admin-key-file", str(key_file), "--rows", "3"]) == 0
            mark = load.mark()
            load.wait(20)
            assert set(load.seen[mark:]) == {2}, "after the CLI's rollout only v3 answers"
            assert all(versions(u, replicas.admin_key).get("3") is True for u in urls)
            assert not any(versions(u, replicas.admin_key).get("2") for u in urls)
        finally:
            load.stop()
    assert load.failures == [], load.failures[:3]
    assert -1 not in load.seen and {0, 1, 2} <= set(load.seen), sorted(set(load.seen))


def test_a_failed_check_or_load_rolls_every_replica_back(setup, base_repository, tmp_path, capsys):
    url, replicas, endpoints, key_file, inputs = setup
    urls = [e.grpc for e in replicas.endpoints()]
    v2 = variant(base_repository, tmp_path / "v2", 2.0)
    answers = [expected(r, inputs) for r in (base_repository, v2)]  # v2 answers on replica 0 until its rollback
    with TritonClient(urls) as client:
        load = Load(client, inputs, answers)
        try:
            load.wait(10)
            # The check is given wrong expected outputs: the new version loads on the first replica, then fails.
            wrong = (lambda x: {k: v + 1.0 for k, v in expected_outputs(v2, x).items()})
            result = rollout(MODEL, v2, url, urls, replicas.admin_key, rows=2, reference=wrong)
            assert not result.ok and urls[0] in result.failure and "parity check failed" in result.failure
            assert [(r.before, r.after, r.check) for r in result.replicas] == \
                [((1,), (1,), result.replicas[0].check), ((1,), (1,), "not reached")]
            assert all(versions(u, replicas.admin_key).get("1") is True for u in urls)

            mark = load.mark()
            load.wait(10)
            assert set(load.seen[mark:]) == {0}, "after the rollback only v1 answers"

            # Through the CLI: a version whose model file cannot load.
            broken = variant(base_repository, tmp_path / "broken", None)
            assert main(["rollout", MODEL, "--repo", str(broken), "--store", url, "--endpoints", str(endpoints),
                         "--admin-key-file", str(key_file)]) == 2
            err = capsys.readouterr().err
            assert "rolled back" in err and urls[0] in err and "load failed" in err, err
            assert all(versions(u, replicas.admin_key).get("1") is True for u in urls)
            mark = load.mark()
            load.wait(10)
            assert set(load.seen[mark:]) == {0}
        finally:
            load.stop()
    assert load.failures == [], load.failures[:3]
    assert -1 not in load.seen, "every answer is v1's or v2's"


def expected_outputs(repository: Path, x) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(repository / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return {o.name: y for o, y in zip(session.get_outputs(), session.run(None, dict(x)))}
