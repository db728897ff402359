"""An S3-compatible store for tests: a real moto server on a free loopback port, one per test session.

pytest runs with --import-mode=importlib, so tests/ is not importable by name: tests/conftest.py imports this
file by path and names the fixtures, so one server serves every folder.

`s3_store` (session): the server, its endpoint URL, a bucket and the AWS_* variables for boto3 and for
tritonserver, which reads credentials and region from the environment. `s3_env` (per test): those variables
set in os.environ, and every other AWS setting (config files, profiles, the EC2 metadata lookup) kept out,
so nothing on the machine leaks in and a missing credential fails at once. `own_s3_store` (per test): a moto
server in a process of its own, which the test may pause (SIGSTOP), resume and stop: the store as a fault
domain.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import pytest

BUCKET = "tritonize-test"
# Variables that would point boto3 (or Triton) at something other than the test store.
_AWS_SETTINGS = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3",
                 "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_REGION", "AWS_CA_BUNDLE")


@dataclass(frozen=True)
class S3Store:
    endpoint_url: str  # http://127.0.0.1:PORT
    host: str
    port: int
    bucket: str  # created at start; tests keep apart by prefix
    env: dict[str, str]  # AWS_* for boto3 and tritonserver: credentials, region, AWS_ENDPOINT_URL

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.env["AWS_DEFAULT_REGION"],
                            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"])

    def environ(self, base: Mapping[str, str], home: Path) -> dict[str, str]:
        """`base` (an environment) with this store's AWS_* variables and no other AWS setting: no profile,
        endpoint or token of the machine, config files that do not exist (under `home`), and no EC2
        metadata lookup (else boto3 waits on 169.254.169.254 for credentials)."""
        missing = str(home / "no-aws-config")
        kept = {k: v for k, v in base.items() if k not in _AWS_SETTINGS}
        return {**kept, **self.env, "AWS_CONFIG_FILE": missing, "AWS_SHARED_CREDENTIALS_FILE": missing,
                "AWS_EC2_METADATA_DISABLED": "true"}


@pytest.fixture(scope="session")
def s3_store():
    """A moto server on 127.0.0.1 (a free port), with one bucket; stopped at the end of the session."""
    pytest.importorskip("moto.server", reason="moto[server] is a test dependency (pip install -e .[test])")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ENDPOINT_URL": endpoint}
        store = S3Store(endpoint, host, port, BUCKET, env)
        store.client().create_bucket(Bucket=BUCKET)
        yield store
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_store, monkeypatch, tmp_path):
    """The store's AWS_* variables in os.environ for one test, nothing else of AWS's."""
    for name in _AWS_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_store.environ({}, tmp_path).items():
        monkeypatch.setenv(name, value)
    return s3_store



class OwnStore:
    """A moto server in its own process, for a test that breaks it: `pause` (SIGSTOP: connections are
    accepted by the kernel and never answered), `resume`, `stop` (SIGKILL: connections refused)."""

    def __init__(self, process: subprocess.Popen, store: S3Store):
        self.process, self.store = process, store

    def pause(self) -> None:
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a paused process dies only once it runs again
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def own_s3_store(monkeypatch, tmp_path):
    """A moto server started by this test (a free loopback port, one bucket), its AWS_* variables in
    os.environ as `s3_env` sets them; killed at the end of the test."""
    pytest.importorskip("moto.server", reason="moto[server] is a test dependency (pip install -e .[test])")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-P", "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}
    store = S3Store(endpoint, "127.0.0.1", port, BUCKET, env)
    own = OwnStore(process, store)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                store.client().create_bucket(Bucket=BUCKET)
                break
            except Exception:  # noqa: BLE001 - not listening yet
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server on port {port} did not start (exit {process.poll()})") from None
                time.sleep(0.1)
        for name in _AWS_SETTINGS:
            monkeypatch.delenv(name, raising=False)
        for name, value in store.environ({}, tmp_path).items():
            monkeypatch.setenv(name, value)
        yield own
    finally:
        own.stop()
