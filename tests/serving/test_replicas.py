"""Local replicas (#25): N real tritonservers reading one repository in a real S3-compatible store (moto on
loopback), as a cluster's pods would, with a client spreading requests over the addresses of the endpoints
file they wrote.

- the requests spread evenly: each replica's share, from its own statistics, is within 20% of even;
- a replica's tritonserver killed (SIGKILL) mid-load costs the caller nothing: zero failed, zero wrong;
- a replica drained (`stop`) mid-load: zero failed, zero wrong;
- `tritonize serve --replicas 2 --endpoints-file F`: F lists two live tritonservers, one admin key opens
  both, SIGTERM stops them all, removes F, and serve exits 0.

The model is mlp's FP32 variant, so each answer can be checked, row by row, against ONNX Runtime run
in-process on the very file the store serves, however Triton batched the request. The replicas are shared
by the first three tests, which run in file order: each picks its victim among the replicas still live.
"""
import contextlib
import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from tritonize.client import RetryPolicy, TritonClient
from tritonize.client.errors import GRPC_ADMIN_KEY_HEADER
from tritonize.models import get_spec
from tritonize.serving.admin import TritonAdmin
from tritonize.serving.replicas import Replicas

pytestmark = pytest.mark.server

REPLICAS = 3
EVEN_REQUESTS, THREADS = 300, 6
DRAIN_S = 2.0




@pytest.fixture(scope="module")
def store_url(s3_store, artifacts, tmp_path_factory):
    """mlp's FP32 variant published to the store; the URL, with the store's variables in os.environ for the
    module (the replicas and `serve` read both the store's index and the models through them)."""
    from tritonize.model_repository.publish import publish
    from tritonize.model_repository.writer import build_repository

    root = tmp_path_factory.mktemp("replicas")
    build_repository([get_spec("mlp")], artifacts, root / "repo", "cpu", variants={"mlp": "fp32"})
    with pytest.MonkeyPatch.context() as env:
        environ = s3_store.environ(os.environ, root)
        for name in set(os.environ) - set(environ):
            env.delenv(name)  # the machine's own AWS settings
        for name, value in environ.items():
            env.setenv(name, value)
        url = f"s3://{s3_store.bucket}/replicas-{uuid.uuid4().hex[:8]}/models"
        publish(root / "repo", url)
        yield url


@pytest.fixture(scope="module")
def pool(s3_store, store_url):
    """(inputs, ONNX Runtime's answer) for batch sizes 1-8, from the model file as the store serves it."""
    from tritonize.model_repository.store import parse_s3_url

    location = parse_s3_url(store_url)
    onnx = s3_store.client().get_object(Bucket=location.bucket, Key=location.key("mlp", "1", "model.onnx"))
    session = ort.InferenceSession(onnx["Body"].read(), providers=["CPUExecutionProvider"])
    spec, rng = get_spec("mlp"), np.random.default_rng(25)
    return [(x, session.run(None, x)[0]) for x in (spec.example_inputs(1 + i % 8, None, rng) for i in range(64))]


@pytest.fixture(scope="module")
def replicas(store_url, tmp_path_factory):
    """REPLICAS servers of the store's repository, and the endpoints file they wrote."""
    reports: list[str] = []
    with Replicas(store_url, REPLICAS, drain_s=DRAIN_S, stop_timeout_s=20.0, report=reports.append) as started:
        path = started.write_endpoints_file(tmp_path_factory.mktemp("endpoints") / "endpoints.json")
        yield started, path


def live(replicas: Replicas) -> list[int]:
    return [i for i, s in enumerate(replicas.servers) if s.process is not None and s.process.poll() is None]


def answered(grpc_url: str, key: str) -> int:
    """mlp requests this server answered successfully, from its own statistics (an admin call)."""
    with grpcclient.InferenceServerClient(grpc_url) as raw:
        stats = raw.get_inference_statistics("mlp", headers={GRPC_ADMIN_KEY_HEADER: key}, as_json=True)
    return sum(int(m["inference_stats"]["success"].get("count", 0)) for m in stats["model_stats"])


class Load:
    """Threads sending mlp requests through one client, every answer checked against ONNX Runtime; each
    thread sends `per_thread` requests, or runs until `stop()`."""

    def __init__(self, client: TritonClient, requests, threads: int = THREADS, per_thread: int | None = None):
        self.client, self.requests, self.per_thread = client, requests, per_thread
        self.counts = {"requests": 0, "failed": 0, "wrong": 0}
        self.failures: list[str] = []
        self._stop, self._lock = threading.Event(), threading.Lock()
        self._threads = [threading.Thread(target=self._send, args=(seed,), daemon=True) for seed in range(threads)]
        for t in self._threads:
            t.start()

    def _send(self, seed: int) -> None:
        rng, name, sent = np.random.default_rng(seed), get_spec("mlp").output_names[0], 0
        while not self._stop.is_set() and (self.per_thread is None or sent < self.per_thread):
            x, want = self.requests[int(rng.integers(len(self.requests)))]
            sent += 1
            try:
                got = self.client.infer("mlp", x)[name]
                ok = got.shape == want.shape and np.allclose(got, want, atol=1e-4, rtol=1e-4)
                with self._lock:
                    self.counts["requests"] += 1
                    self.counts["wrong"] += not ok
            except Exception as e:  # noqa: BLE001 - every failure that reaches the caller is counted and shown
                with self._lock:
                    self.counts["requests"] += 1
                    self.counts["failed"] += 1
                    self.failures.append(f"{type(e).__name__}: {e}")

    def wait_for(self, requests: int, timeout_s: float = 30.0, at_least_s: float = 0.0) -> None:
        """Until `requests` were answered (or failed), and `at_least_s` went by."""
        started = time.monotonic()
        deadline = started + timeout_s
        while self.counts["requests"] < requests or time.monotonic() - started < at_least_s:
            assert time.monotonic() < deadline, f"only {self.counts} after {timeout_s} s"
            time.sleep(0.02)

    def stop(self) -> dict[str, int]:
        self._stop.set()
        return self.join()

    def join(self) -> dict[str, int]:
        """Wait for every sender to end (those of a fixed count end on their own); the counts."""
        for t in self._threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in self._threads), "a sender never returned"
        return self.counts


def failover_client(urls: list[str]) -> TritonClient:
    """Generous in attempts and time, as the soak's: the client must ride out a dead or draining replica."""
    return TritonClient(urls, timeout_s=20.0, cooldown_s=0.5,
                        retry=RetryPolicy(max_attempts=8, budget_s=15.0, max_backoff_s=0.5))


def grpc_urls(path: Path) -> list[str]:
    return [entry["grpc"] for entry in json.loads(path.read_text())]


def test_the_requests_spread_evenly_over_the_replicas(replicas, pool, capsys):
    group, path = replicas
    assert live(group) == list(range(REPLICAS)), "every replica must be live for this one (it runs first)"
    urls = grpc_urls(path)
    before = [answered(url, group.admin_key) for url in urls]
    with failover_client(urls) as client:
        client.model_info("mlp")
        counts = Load(client, pool, per_thread=EVEN_REQUESTS // THREADS).join()
    assert counts == {"requests": EVEN_REQUESTS, "failed": 0, "wrong": 0}
    # Each server counts a request just after answering it: wait (bounded) for the last ones.
    deadline = time.monotonic() + 5
    while True:
        shares = [answered(url, group.admin_key) - b for url, b in zip(urls, before)]
        if sum(shares) >= EVEN_REQUESTS or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    with capsys.disabled():
        print(f"\nreplicas: {EVEN_REQUESTS} requests from {THREADS} threads over {REPLICAS} replicas of one s3:// "
              f"repository; each replica's own count: {shares}")
    assert sum(shares) == EVEN_REQUESTS
    even = EVEN_REQUESTS / REPLICAS
    assert all(abs(share - even) <= 0.2 * even for share in shares), shares


def test_a_replica_killed_mid_load_costs_the_caller_nothing(replicas, pool, capsys):
    group, path = replicas
    alive = live(group)
    assert len(alive) >= 2, f"expected two live replicas or more, got {alive}"
    victim = alive[-1]
    pid = json.loads(path.read_text())[victim]["pid"]  # the file's pid is the tritonserver itself
    with failover_client(grpc_urls(path)) as client:
        load = Load(client, pool)
        load.wait_for(100)
        os.kill(pid, signal.SIGKILL)  # no drain: its requests in flight are cut off
        at_kill = load.counts["requests"]
        load.wait_for(at_kill + 200, at_least_s=1.5)  # past the client's first cool-downs and probes of the dead one
        counts = load.stop()
    assert group.exited() == {victim: -signal.SIGKILL}
    with capsys.disabled():
        print(f"\nreplicas: kill -9 of replica {victim} mid-load: {counts}, {counts['requests'] - at_kill} after it")
    assert counts["failed"] == 0, load.failures[:5]
    assert counts["wrong"] == 0


def test_heal_restarts_the_killed_replica_on_its_ports_under_load(replicas, pool, capsys):
    group, path = replicas
    (victim,) = group.exited()  # the one the test above killed
    old = group.endpoints()[victim]
    urls = [e.grpc for e in group.endpoints()]
    with failover_client(urls) as client:
        load = Load(client, pool)
        load.wait_for(100)
        started, events = time.monotonic(), []
        while not any(e.what in ("restarted", "gave up") for e in events):
            assert time.monotonic() - started < 90, events
            events += group.heal()
            time.sleep(0.1)
        restarted_s = time.monotonic() - started
        before = answered(urls[victim], group.admin_key)
        # Until the client sends to it again (its cool-down of the endpoint, and gRPC's reconnect back-off).
        while answered(urls[victim], group.admin_key) <= before + 10:
            assert time.monotonic() - started < restarted_s + 60, f"replica {victim} got no requests back"
            time.sleep(0.2)
        back_s = time.monotonic() - started - restarted_s
        counts = load.stop()
    assert [e.what for e in events] == ["died", "restarted"], events
    new = group.endpoints()[victim]
    assert (new.grpc, new.http) == (old.grpc, old.http) and new.pid != old.pid and group.restarts[victim] == 1
    with capsys.disabled():
        print(f"\nreplicas: heal() restarted replica {victim} on its ports in {restarted_s:.1f} s under load, back in "
              f"the client's rotation {back_s:.1f} s later: {counts}")
    assert counts["failed"] == 0, load.failures[:5]
    assert counts["wrong"] == 0


def test_a_replica_past_its_restarts_is_given_up_and_leaves_the_endpoints(replicas):
    group, path = replicas
    victim = live(group)[-1]
    limit, group.restart_limit = group.restart_limit, group.restarts[victim]  # its restarts used up
    try:
        os.kill(group.endpoints()[victim].pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while victim not in group.exited():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        (event,) = group.heal()
        assert (event.index, event.what) == (victim, "gave up") and "code -9" in event.detail
        assert victim in group.gone and len(group.endpoints()) == REPLICAS - 1
        assert group.heal() == []  # given up once, then left alone
    finally:
        group.restart_limit = limit


def test_a_replica_drained_mid_load_costs_the_caller_nothing(replicas, pool, capsys):
    group, path = replicas
    alive = live(group)
    assert len(alive) >= 2, f"expected two live replicas or more, got {alive}"
    victim, others = alive[0], alive[1:]
    urls = grpc_urls(path)
    with failover_client(urls) as client:
        load = Load(client, pool)
        load.wait_for(100)
        before = {i: answered(urls[i], group.admin_key) for i in others}
        started = time.monotonic()
        code = group.stop_replica(victim)  # not ready at once, in flight answered, then SIGTERM
        drained_s, at_stop = time.monotonic() - started, load.counts["requests"]
        load.wait_for(at_stop + 200, at_least_s=1.0)
        counts = load.stop()
    with capsys.disabled():
        print(f"\nreplicas: drain of replica {victim} mid-load ({drained_s:.1f} s, exit code {code}): {counts}, "
              f"{counts['requests'] - at_stop} after it")
    assert counts["failed"] == 0, load.failures[:5]
    assert counts["wrong"] == 0
    assert code == 0 and drained_s < DRAIN_S + 10
    assert all(answered(urls[i], group.admin_key) > before[i] for i in others)  # the rest took the load


@contextlib.contextmanager
def serve_replicas(serve_any, store, url: str, endpoints_file: Path, home: Path):
    """`tritonize serve --replicas 2 --endpoints-file F` in a child process; yields it with what it printed up
    to its ready message's last line. A child still running at the end is killed."""
    with serve_any(url, "--replicas", "2", "--endpoints-file", str(endpoints_file), "--drain-seconds", "1",
                   base_env=store.environ(os.environ, home), fixed_ports=False) as (proc, lines):
        yield proc, "".join(lines)


def test_serve_replicas_writes_the_endpoints_file_and_sigterm_stops_them_all(s3_store, store_url, tmp_path, serve_any):
    endpoints_file = tmp_path / "run" / "endpoints.json"
    endpoints_file.parent.mkdir()
    with serve_replicas(serve_any, s3_store, store_url, endpoints_file, tmp_path) as (proc, text):
        assert endpoints_file.is_file(), text
        entries = json.loads(endpoints_file.read_text())
        assert list(endpoints_file.parent.iterdir()) == [endpoints_file]  # no temporary file left beside it
        printed = text[text.index("\n[") + 1:text.index("\n]") + 2]
        assert json.loads(printed) == entries
        assert len(entries) == 2 and all(set(e) == {"grpc", "http", "metrics", "pid"} for e in entries)
        assert len({e[kind] for e in entries for kind in ("grpc", "http", "metrics")}) == 6
        for e in entries:
            with open(f"/proc/{e['pid']}/comm") as f:
                assert f.read().strip() == "tritonserver"
            assert e["metrics"] == f"http://{e['metrics'][len('http://'):].split('/')[0]}/metrics"
        # One admin key for all: the file serve names opens the model repository API of both.
        key_file = Path(text.split("admin key (all replicas): new, written to ")[1].split()[0])
        key = key_file.read_text().strip()
        for e in entries:
            with TritonAdmin(e["grpc"], key) as admin:
                assert admin.states()["mlp"].state == "READY"

        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, text + rest
        assert "SIGTERM: draining 2 replicas" in rest and "exit codes 0, 0" in rest, rest
        assert not endpoints_file.exists() and not key_file.exists()
        assert not any(os.path.exists(f"/proc/{e['pid']}") for e in entries)


def test_serve_restarts_a_dead_replica_on_its_ports_and_rewrites_the_endpoints_file(s3_store, store_url, tmp_path,
                                                                                     serve_any):
    endpoints_file = tmp_path / "endpoints.json"
    with serve_replicas(serve_any, s3_store, store_url, endpoints_file, tmp_path) as (proc, text):
        first, second = json.loads(endpoints_file.read_text())
        killed = time.monotonic()
        os.kill(first["pid"], signal.SIGKILL)
        died = proc.stdout.readline()  # the next things serve says (stdout and stderr are one pipe)
        assert f"replica 0 ({first['grpc']}): died: tritonserver exited with code -9; restarting in 1 s " \
               f"(restart 1 of 5)" in died, died
        lines = [died]
        while "restarted:" not in lines[-1]:  # the server's log tail comes first
            lines.append(proc.stdout.readline())
            assert lines[-1] and time.monotonic() - killed < 90, "".join(lines)
        restarted_s = time.monotonic() - killed
        assert f"replica 0 ({first['grpc']}): restarted: ready in " in lines[-1]
        deadline = time.monotonic() + 5  # rewritten right after the restart's line
        while json.loads(endpoints_file.read_text())[0]["pid"] == first["pid"] and time.monotonic() < deadline:
            time.sleep(0.05)
        again, same = json.loads(endpoints_file.read_text())
        assert (again["grpc"], again["http"], same) == (first["grpc"], first["http"], second)
        assert again["pid"] != first["pid"] and f"pid {again['pid']}" in lines[-1]
        with TritonClient(again["grpc"]) as client:  # back on its own ports, serving
            assert client.model_info("mlp").max_batch_size > 0
        print(f"\nreplicas: serve restarted a killed replica in {restarted_s:.1f} s")
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=60)[0]
        assert proc.returncode == 0, text + "".join(lines) + rest  # restarted, none given up
        assert "1 restart(s) while serving: replica 0 x1" in rest and "SIGTERM: draining 2 replicas (" in rest, rest
        assert not endpoints_file.exists()


@pytest.mark.parametrize("flags, expected", [
    (["--replicas", "2", "--grpc-port", "9001"],
     "--replicas 2 starts each replica on free ports (listed in --endpoints-file): expected no fixed port, "
     "got --grpc-port 9001"),
    (["--replicas", "3", "--http-port", "9000", "--metrics-port", "9002"],
     "expected no fixed port, got --http-port 9000, --metrics-port 9002"),
    (["--replicas", "0"], "--replicas: expected a number of servers >= 1, got 0"),
    (["--replicas", "2", "--endpoints-file", "{tmp}/nowhere/e.json"],
     "--endpoints-file: endpoints file {tmp}/nowhere/e.json: expected a file in an existing folder, got "
     "{tmp}/nowhere, which is not a folder"),
    (["--endpoints-file", "{tmp}"], "--endpoints-file: endpoints file {tmp}: expected a file path, got a folder"),
])
def test_bad_replica_options_are_refused_before_any_server_starts(flags, expected, tmp_path, capsys):
    from tritonize.cli.main import main

    code = main(["serve", "--repo", str(tmp_path / "no-repository"), *[f.format(tmp=tmp_path) for f in flags]])
    err = capsys.readouterr().err
    assert code == 2 and expected.format(tmp=tmp_path) in " ".join(err.split()), err
