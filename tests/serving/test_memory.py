"""Oversized requests do not keep the server's memory (#24): a few 205 MB gRPC requests that the server
refuses (a batch over the model's max) grew tritonserver 2.51 from ~36 MiB to ~1.1 GiB for good with its
default settings (its gRPC front end keeps request objects, buffers included, for reuse, and glibc keeps
the freed heap). TritonServer always turns the pool off; with `memory_bound=True` (`serve --memory-bound`,
every Kubernetes pod) glibc also maps and trims large blocks (measured: within 2 MiB of the baseline after
the same requests); this test holds such a server to that. It is off by default, for its throughput cost.
"""
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tritonize.serving.server import MEMORY_BOUND_ENV, TritonServer

pytestmark = pytest.mark.server

ROWS = 65536  # x 784 float32 = 205 MB, a batch far over the MLP's max of 64


def _server_rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * 4096


def _malloc_env(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.decode().partition("=") for item in f.read().split(b"\0") if item]
    return {k: v for k, _, v in pairs if k.startswith("MALLOC_")}


def test_by_default_glibc_keeps_its_own_settings(cpu_repository, monkeypatch):
    for key in MEMORY_BOUND_ENV:
        monkeypatch.delenv(key, raising=False)
    with TritonServer(cpu_repository, ["mlp"]) as server:
        assert _malloc_env(server.process.pid) == {}
        assert "--grpc-infer-allocation-pool-size=0" in server.command(None)  # the gRPC pool is off anyway


def test_memory_returns_near_its_baseline_after_oversized_requests_are_refused(cpu_repository):
    small = np.zeros((1, 784), np.float32)
    big = np.zeros((ROWS, 784), np.float32)
    with TritonServer(cpu_repository, ["mlp"], memory_bound=True) as server, \
            grpcclient.InferenceServerClient(server.grpc_url) as client:
        assert _malloc_env(server.process.pid) == MEMORY_BOUND_ENV
        def send(x):
            tensor = grpcclient.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            return client.infer("mlp", [tensor])

        for _ in range(20):
            send(small)
        baseline = _server_rss(server.process.pid)
        for _ in range(4):
            with pytest.raises(grpcclient.InferenceServerException, match="batch-size must be <= 64"):
                send(big)
        for _ in range(20):  # the server still answers
            assert send(small).as_numpy("logits").shape == (1, 10)
        after = _server_rss(server.process.pid)
    print(f"server memory: {baseline / 2**20:.0f} MiB before, {after / 2**20:.0f} MiB after 4 refused 205 MB requests")
    # Measured 1-2 MiB over the baseline with the fix, ~1 GiB without it, 140-300 MiB with the pool off alone.
    assert after - baseline < 64 * 2**20, (baseline, after)
