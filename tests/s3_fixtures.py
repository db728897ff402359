"""An S3-compatible store for tests: a real moto server on a free loopback port, one per test session.

pytest runs with --import-mode=importlib, so tests/ is not importable by name: tests/conftest.py imports this
file by path and names the fixtures, so one server serves every folder.

`s3_store` (session): the server, its endpoint URL, a bucket and the AWS_* variables for boto3 and for
tritonserver, which reads credentials and region from the environment. `s3_env` (per test): those variables
set in os.environ, and every other AWS setting (config files, profiles, the EC2 metadata lookup) kept out,
so nothing on the machine leaks in and a missing credential fails at once.
"""
from __future__ import annotations

import logging
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

