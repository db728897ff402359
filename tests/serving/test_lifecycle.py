"""How a served tritonserver ends and recovers, against real servers of two tiny Python-backend models
(`echo`, and `slow`, which sleeps as many seconds as it is sent):

- `tritonize serve` killed with SIGKILL takes its tritonserver along within seconds, leaves no shared
  memory or work folder, and a new server starts on the same ports at once;
- a server started from a thread outlives the thread, and one left running at exit is closed;
- SIGTERM drains: not ready at once, new requests refused, the ones in flight answered, exit 0;
- a model whose stub process died is reloaded, and answers again, without a server restart.
"""
import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tritonize.serving.admin import admin_headers
from tritonize.serving.reaper import children, mapped_regions, running, stub_args
from tritonize.serving.server import ServerError, TritonServer, check_port_free

pytestmark = pytest.mark.server


def endpoint(lines, kind: str) -> str:
    """The address `tritonize serve` printed for `kind` (gRPC or HTTP)."""
    return next(line.split()[1] for line in lines if line.strip().startswith(kind + " "))


def tritonserver_of(proc) -> int:
    """The pid of the tritonserver a `tritonize serve` process started."""
    for pid, _ in children(proc.pid):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/comm") as f:
            if f.read().strip() == "tritonserver":
                return pid
    raise AssertionError(f"no tritonserver among the children of {proc.pid}")


def stub_of(server_pid: int, model: str) -> tuple[int, str]:
    """(pid, shared memory region) of the live stub of `model` under tritonserver `server_pid`."""
    for pid, state in children(server_pid):
        args = stub_args(pid)
        if args and state not in "ZX" and args[8].startswith(model + "_"):
            return pid, args[2]
    raise AssertionError(f"no live stub of {model} under tritonserver {server_pid}")


def wait_until(condition, timeout_s: float, step_s: float = 0.05) -> float:
    """Seconds until `condition()` held; fails after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"not so after {timeout_s} s"
        time.sleep(step_s)
    return time.monotonic() - started


def infer(module, url: str, model: str, value: float = 0.0) -> float:
    """One request on a connection of its own, closed after: an HTTP connection left open holds the
    server's exit for its whole exit timeout (tritonserver 2.51 waits for HTTP clients to leave)."""
    tensor = module.InferInput("x", [1], "FP32")
    tensor.set_data_from_numpy(np.array([value], np.float32))
    client = module.InferenceServerClient(url)
    try:
        return float(client.infer(model, [tensor]).as_numpy("y")[0])
    finally:
        client.close()


def left_in_shm(regions) -> list[str]:
    return [r for r in regions if os.path.exists(f"/dev/shm/{r}")]


def test_a_port_in_time_wait_is_free_for_the_next_server():
    """A server that closed its side of a connection first (as tritonserver does with our readiness
    probes) leaves the port in TIME-WAIT: a plain bind fails there, tritonserver's SO_REUSEADDR bind
    does not, and neither does the check."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as tritonserver's listeners
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server's side first: TIME-WAIT lands on the server's port
        client.recv(1)
        client.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))
    check_port_free(port, "grpc")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        with pytest.raises(ServerError, match=f"grpc port {listening.getsockname()[1]} on 127.0.0.1 is in use"):
            check_port_free(listening.getsockname()[1], "grpc")


def test_a_killed_serve_takes_its_server_along_and_the_ports_can_be_reused_at_once(serve_tiny, tiny_repository):
    with serve_tiny("--drain-seconds", "2") as (proc, lines):
        text = "".join(lines)
        grpc_url, http_url = endpoint(lines, "gRPC"), endpoint(lines, "HTTP")
        ports = {kind: int(url.rsplit(":", 1)[1]) for kind, url in (("grpc", grpc_url), ("http", http_url))}
        ports["metrics"] = int(text.split("/metrics")[0].rsplit(":", 1)[1])
        server_pid = tritonserver_of(proc)
        workdir = Path(text.split("written to ")[1].split()[0]).parent
        regions = mapped_regions(server_pid)
        assert len(regions) == 2 and workdir.is_dir() and infer(grpcclient, grpc_url, "echo", 3.0) == 3.0
        # An idle keep-alive HTTP client: tritonserver then waits its whole exit timeout and exits
        # without unloading, leaving its regions; the reaper removes them.
        idle = httpclient.InferenceServerClient(http_url)
        assert idle.is_server_ready()
        proc.kill()
        took = wait_until(lambda: not running(server_pid), 15)
        assert took < 10, f"tritonserver outlived serve by {took:.1f} s"
        for kind, port in ports.items():
            check_port_free(port, kind)
        wait_until(lambda: not left_in_shm(regions) and not workdir.exists(), 10)
        idle.close()
    started = time.monotonic()
    with TritonServer(tiny_repository, ["echo"], grpc_port=ports["grpc"], http_port=ports["http"],
                      metrics_port=ports["metrics"]) as again:
        assert time.monotonic() - started < 15 and infer(grpcclient, again.grpc_url, "echo", 4.0) == 4.0


CHILD = """
import sys, threading, time
from tritonize.serving.server import TritonServer

def start():
    server = TritonServer(sys.argv[1], ["echo"])
    server.start()
    servers.append(server)

servers = []
thread = threading.Thread(target=start)  # a thread that ends at once: the server must outlive it
thread.start()
thread.join()
server = servers[0]
print(server.process.pid, server.workdir, *sorted(server.note_regions()), flush=True)
time.sleep(1.0)
print(server.is_ready(), flush=True)
"""  # and the interpreter exits without closing the server: the atexit hook does


def test_a_server_started_from_a_thread_lives_on_and_is_closed_at_exit(tiny_repository):
    proc = subprocess.run([sys.executable, "-P", "-c", CHILD, str(tiny_repository)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, second = proc.stdout.splitlines()
    pid, workdir, *regions = first.split()
    assert second == "True" and regions
    assert not running(int(pid)) and not Path(workdir).exists() and not left_in_shm(regions)


def test_sigterm_drains_not_ready_first_then_in_flight_answered_then_exit(serve_tiny, tmp_path):
    key_file = tmp_path / "admin_key"
    with serve_tiny("--drain-seconds", "5", "--admin-key-file", str(key_file)) as (proc, lines):
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and key not in "".join(lines)
        assert f"admin key: new, written to {key_file} (mode 0600)" in "".join(lines)
        grpc_url, http_url = endpoint(lines, "gRPC"), endpoint(lines, "HTTP")
        server_pid = tritonserver_of(proc)
        regions = mapped_regions(server_pid)
        grpcclient.InferenceServerClient(grpc_url).get_inference_statistics("slow", headers=admin_headers(key))
        answers = {}
        in_flight = [threading.Thread(target=lambda m=m, url=url, v=v: answers.update({m: infer(m, url, "slow", v)}))
                     for m, url, v in ((grpcclient, grpc_url, 2.0), (httpclient, http_url, 1.0))]
        for t in in_flight:
            t.start()
        time.sleep(0.5)  # both requests reached the model
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        grpc_health, http_health = grpcclient.InferenceServerClient(grpc_url), httpclient.InferenceServerClient(http_url)
        not_ready = wait_until(lambda: not grpc_health.is_server_ready(), 3)
        assert not http_health.is_server_ready() and grpc_health.is_server_live()
        http_health.close()
        with pytest.raises(InferenceServerException, match="no available versions") as refused:
            infer(grpcclient, grpc_url, "echo")
        assert refused.value.status() == "StatusCode.NOT_FOUND"
        with pytest.raises(InferenceServerException, match="no available versions") as refused:
            infer(httpclient, http_url, "echo")
        assert refused.value.status() == "404"
        for t in in_flight:
            t.join(10)
        assert answers == {grpcclient: 2.0, httpclient: 1.0}  # completed during the drain
        assert proc.wait(timeout=30) == 0
        stopped = time.monotonic() - signalled
        rest = proc.stdout.read()
    # Exit code 0 and well within the 35 s after which serve would SIGKILL: the normal path never kills.
    assert not_ready < 2.0 and stopped < 12, (not_ready, stopped, rest)
    assert "SIGTERM: draining" in rest and "(tritonserver exit code 0)" in rest, rest
    assert not running(server_pid) and not left_in_shm(regions)


def test_a_model_whose_stub_died_is_reloaded_without_restarting_the_server(serve_tiny):
    with serve_tiny("--health-interval", "0.5", "--drain-seconds", "2") as (proc, lines):
        grpc_url = endpoint(lines, "gRPC")
        server_pid = tritonserver_of(proc)
        stub, region = stub_of(server_pid, "echo")
        os.kill(stub, signal.SIGKILL)
        failures = []

        def answers() -> bool:
            try:
                return infer(grpcclient, grpc_url, "echo", 5.0) == 5.0
            except InferenceServerException as e:
                failures.append(e.message())
                return False

        took = wait_until(answers, 30, step_s=0.1)
        assert failures and failures[0] == "Stub process 'echo_0_0' is not healthy.", failures[:1]
        assert took < 15 and running(server_pid) and tritonserver_of(proc) == server_pid
        assert stub_of(server_pid, "echo")[0] != stub and not os.path.exists(f"/dev/shm/{region}")
        assert infer(grpcclient, grpc_url, "slow", 0.0) == 0.0  # the other model was left alone
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=30) == 0
        rest = proc.stdout.read()
    assert "health: model echo: stub echo_0_0" in rest and "died" in rest and "health: model echo: reloaded in" in rest
    assert "SIGHUP: draining" in rest and not running(server_pid)



def test_a_server_killed_under_load_leaves_no_stub_or_region_once_closed(cpu_repository):
    """SIGKILL of tritonserver itself (not of its parent) under load: its ONNX Runtime stub often stayed
    running, orphaned, holding its shared memory region, for good (2 of 3 tries here). close() ends it."""
    server = TritonServer(cpu_repository, ["mlp"]).start()
    stop = threading.Event()

    def load():
        client = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("x", [1, 784], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 784), np.float32))
        while not stop.is_set():
            try:
                client.infer("mlp", [tensor])
            except InferenceServerException:
                time.sleep(0.01)

    threads = [threading.Thread(target=load) for _ in range(16)]
    try:
        stub, region = stub_of(server.process.pid, "mlp")
        for t in threads:
            t.start()
        time.sleep(1.0)
        server.process.kill()
        server.process.wait()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        server.close()
    wait_until(lambda: not running(stub), 5)  # the orphaned stub is ended
    assert left_in_shm([region]) == []
