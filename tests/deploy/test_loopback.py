"""What the Deployment describes, run as far as it runs here: its container's args and env (the Secret's
values filled in, $(VAR) expanded as the kubelet does) start the bundled tritonserver against a repository
in a real S3-compatible store (moto on loopback); the probes' paths answer 200 once ready, the metrics
the autoscaler divides are there, the restricted APIs want the Secret's admin key, and SIGTERM (what the
kubelet sends after the preStop hook) ends the server within the grace period.

Only what a cluster supplies is swapped: the image (the bundled binary, and its backend folder), the
fixed ports (free ones) and the addresses (loopback, never every interface on a test machine)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from tritonize.deploy.image import TRITON_VERSION
from tritonize.deploy.k8s import write_k8s
from tritonize.deploy.options import DeployOptions
from tritonize.deploy.workload import grace_seconds
from tritonize.serving.admin import ADMIN_HEADER, new_admin_key
from tritonize.serving.server import HOST, ServerError, find_server, free_port, prepare_backend_dir

NOOP_CONFIG = """name: "noop"
backend: "python"
max_batch_size: 8
input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""
READY_TIMEOUT_S = 60




def _get(url: str, headers: dict | None = None, data: bytes | None = None) -> tuple[int, bytes]:
    method = "POST" if data is not None else "GET"
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def _publish_noop(store, prefix: str) -> None:
    import tritonize.model_repository as mr

    client = store.client()
    client.put_object(Bucket=store.bucket, Key=f"{prefix}/noop/1/model.py",
                      Body=(Path(mr.__file__).parent / "backends" / "noop" / "model.py").read_bytes())
    client.put_object(Bucket=store.bucket, Key=f"{prefix}/noop/config.pbtxt", Body=NOOP_CONFIG.encode())


def _container(options: DeployOptions, folder: Path) -> dict:
    write_k8s(options, folder)
    (deployment,) = yaml.safe_load_all((folder / "deployment.yaml").read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.server
def test_the_deployments_command_serves_and_drains(s3_store, tmp_path):
    try:
        binary = find_server()
    except ServerError as e:
        pytest.skip(f"no tritonserver: {e}")
    prefix = f"deploy-loopback-{uuid.uuid4().hex[:8]}"
    _publish_noop(s3_store, prefix)
    options = DeployOptions(repo=f"s3://{s3_store.bucket}/{prefix}", endpoint_url=s3_store.endpoint_url, replicas=1,
                            drain_seconds=5)
    container = _container(options, tmp_path / "k8s")

    # The Secret's values, as the kubelet puts them in the container's env and expands $(VAR) in args.
    secret = {"AWS_ACCESS_KEY_ID": s3_store.env["AWS_ACCESS_KEY_ID"],
              "AWS_SECRET_ACCESS_KEY": s3_store.env["AWS_SECRET_ACCESS_KEY"],
              "AWS_DEFAULT_REGION": s3_store.env["AWS_DEFAULT_REGION"], "TRITONIZE_ADMIN_KEY": new_admin_key()}
    env = {e["name"]: secret[e["valueFrom"]["secretKeyRef"]["key"]] if "valueFrom" in e else e["value"]
           for e in container["env"]}
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in container["args"]]
    # What the cluster supplies, swapped for loopback: the binary, ports, addresses and backends.
    ports = {p["name"]: free_port() for p in container["ports"]}
    command = [str(binary.path)]
    for a in args[1:]:
        name, _, _ = a.partition("=")
        kind = name[2:-5] if name.endswith("-port") else None
        command.append(f"{name}={ports[kind]}" if kind in ports else a)
    command += [f"--{kind}-address={HOST}" for kind in ("http", "grpc", "metrics")]
    if binary.bundled:
        command.append(f"--backend-directory={prepare_backend_dir(tmp_path / 'backends')}")
    # A container's environment: the env above and a PATH, nothing of this machine's AWS settings. The
    # bundled Python backend's stub finds its interpreter as python3 on PATH.
    run_env = {**env, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": str(tmp_path)}
    libdir = Path(sys.base_prefix) / "lib"
    if any(libdir.glob("libpython3*.so*")):
        run_env["LD_LIBRARY_PATH"] = str(libdir)

    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=run_env, start_new_session=True)
    try:
        http = f"http://{HOST}:{ports['http']}"
        probes = {k: container[k]["httpGet"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
        assert {p["port"] for p in probes.values()} == {"http"}
        deadline = time.monotonic() + READY_TIMEOUT_S
        while _get(http + probes["startupProbe"]["path"])[0] != 200:
            assert proc.poll() is None, f"tritonserver exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready in {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        for name, probe in probes.items():
            assert _get(http + probe["path"])[0] == 200, name

        status, body = _get(http + "/v2")
        assert status == 200 and json.loads(body)["version"].startswith(TRITON_VERSION + ".")
        request = {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}
        assert _get(http + "/v2/models/noop/infer", data=json.dumps(request).encode())[0] == 200
        # The two counters the autoscaling formula divides, per model, on the metrics port.
        status, metrics = _get(f"http://{HOST}:{ports['metrics']}/metrics")
        values = {m: float(v) for m, v in re.findall(
            r'^(nv_inference_queue_duration_us|nv_inference_request_success)\{[^}]*model="noop"[^}]*\} (\S+)$',
            metrics.decode(), re.MULTILINE)}
        assert status == 200 and values["nv_inference_request_success"] == 1
        assert values["nv_inference_queue_duration_us"] >= 0
        # The restricted admin APIs want the Secret's key; inference and health did not.
        assert _get(http + "/v2/repository/index", data=b"{}")[0] == 403
        key = {ADMIN_HEADER: env["TRITONIZE_ADMIN_KEY"]}
        assert _get(http + "/v2/repository/index", headers=key, data=b"{}")[0] == 200

        # The kubelet's SIGTERM (after the preStop sleep): the server drains and exits in the grace period.
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=grace_seconds(options) - options.prestop_seconds)
        assert code == 0 and time.monotonic() - start <= options.drain_seconds + 5, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
