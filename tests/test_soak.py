"""The soak of issue #24: 60 s at concurrency 32 against two real servers of the MLP, while one server is
killed (SIGKILL) and restarted on the same ports and the other is drained (SIGTERM path) at the end.

What must hold: no call fails, every answer matches ONNX Runtime run in-process on the very file the
servers serve, both servers answered, and the server that ran throughout is within 10% of its warm
memory (server plus its model processes) just before its drain. The counts go to the test's output
(`-s`), for the closing note.
"""
import os
import threading
import time

import numpy as np
import onnxruntime as ort
import pytest

from tritonize.client import RetryPolicy, TritonClient
from tritonize.client.errors import GRPC_ADMIN_KEY_HEADER
from tritonize.models import get_spec
from tritonize.serving.server import TritonServer, free_port

pytestmark = pytest.mark.server

DURATION_S = 60.0
CONCURRENCY = 32
KILL_AT_S, RESTART_AT_S, MEMORY_AT_S, DRAIN_AT_S = 10.0, 15.0, 48.0, 50.0
WARM_AT_S = 5.0


def _answered(server: TritonServer) -> int:
    """How many mlp requests this server answered successfully, from its own statistics (admin key needed)."""
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(server.grpc_url) as raw:
        stats = raw.get_inference_statistics("mlp", headers={GRPC_ADMIN_KEY_HEADER: server.admin_key}, as_json=True)
    return sum(int(m["inference_stats"]["success"].get("count", 0)) for m in stats["model_stats"])


def _rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (the Python backend's stubs), from /proc."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


@pytest.fixture(scope="module")
def fp32_repository(artifacts, tmp_path_factory):
    """mlp's FP32 variant: its answers do not depend on how Triton batches requests together (dynamic INT8
    quantizes activations per batch), so each can be checked against in-process ONNX Runtime row by row."""
    from tritonize.model_repository.writer import build_repository

    out = tmp_path_factory.mktemp("soak") / "repo"
    build_repository([get_spec("mlp")], artifacts, out, "cpu", variants={"mlp": "fp32"})
    return out


def test_sixty_seconds_at_concurrency_32_through_a_kill_a_restart_and_a_drain(fp32_repository, capsys):
    spec = get_spec("mlp")
    rng = np.random.default_rng(24)
    session = ort.InferenceSession(str(fp32_repository / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    pool = []  # (inputs, expected output) for batch sizes 1-8
    for i in range(64):
        x = spec.example_inputs(1 + i % 8, None, rng)
        pool.append((x, session.run(None, x)[0]))

    ports = [dict(grpc_port=free_port(), http_port=free_port(), metrics_port=free_port()) for _ in range(2)]

    def new_server(i):
        return TritonServer(fp32_repository, ["mlp"], drain_s=3.0, stop_timeout_s=20.0, **ports[i])

    a, b = new_server(0), new_server(1)
    a.start()
    b.start()
    urls = [a.grpc_url, b.grpc_url]
    counts = {"requests": 0, "failed": 0, "wrong": 0}
    failures: list[str] = []
    stop, lock = threading.Event(), threading.Lock()
    # Generous in attempts and time: the client must ride out a dead server and one restarting, by moving on.
    client = TritonClient(urls, timeout_s=20.0, cooldown_s=0.5,
                          retry=RetryPolicy(max_attempts=8, budget_s=15.0, max_backoff_s=0.5))

    def work(seed):
        local = np.random.default_rng(seed)
        while not stop.is_set():
            x, want = pool[int(local.integers(len(pool)))]
            try:
                got = client.infer("mlp", x)[spec.output_names[0]]
                ok = got.shape == want.shape and np.allclose(got, want, atol=1e-4, rtol=1e-4)
                with lock:
                    counts["requests"] += 1
                    counts["wrong"] += not ok
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                with lock:
                    counts["requests"] += 1
                    counts["failed"] += 1
                    failures.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(CONCURRENCY)]
    start = time.monotonic()
    try:
        for t in threads:
            t.start()

        def at(seconds):
            time.sleep(max(0.0, start + seconds - time.monotonic()))

        at(WARM_AT_S)
        warm = _rss_bytes(b.process.pid)
        at(KILL_AT_S)
        a.process.kill()  # SIGKILL: no drain, in-flight requests cut off
        a.close()
        at(RESTART_AT_S)
        a = new_server(0)
        a.start()
        at(MEMORY_AT_S)
        later = _rss_bytes(b.process.pid)
        at(DRAIN_AT_S)
        answered = {"b": _answered(b)}
        b.stop()  # the drain: not ready, in flight answered, new requests sent on to a
        at(DURATION_S)
        answered["a after its restart"] = _answered(a)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        served = {}
        for name, server in (("a", a), ("b", b)):
            try:
                served[name] = server.process is not None and server.process.poll() is None
            finally:
                server.close()
        client.close()

    with capsys.disabled():
        print(f"\nsoak: {counts['requests']} requests in {DURATION_S:.0f} s at concurrency {CONCURRENCY}, "
              f"{counts['failed']} failed, {counts['wrong']} wrong; server b memory {warm / 2**20:.0f} MiB warm, "
              f"{later / 2**20:.0f} MiB at {MEMORY_AT_S:.0f} s ({(later / warm - 1) * 100:+.1f}%); answered {answered}")
    assert counts["failed"] == 0, failures[:5]
    assert counts["wrong"] == 0
    assert counts["requests"] > 1000  # a real load, not a trickle
    assert later <= 1.10 * warm, (warm, later)
    assert served["a"]  # the restarted server was up to the end
    assert all(n > 100 for n in answered.values()), answered  # both took a share
