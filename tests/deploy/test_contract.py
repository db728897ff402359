"""The pod runs tritonserver as tritonize runs it locally: the command line `TritonServer.command` builds
(serving/server.py's own code, no server started) against the Deployment's container args, flag by flag,
and the URL `TritonServer.is_ready` asks against the probes. What differs is listed here, with why."""
import urllib.request
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pytest

from tritonize.deploy.options import DeployOptions
from tritonize.deploy.server_args import pod_config, server_command
from tritonize.deploy.workload import deployment
from tritonize.serving.admin import new_admin_key
from tritonize.serving.config import ADMIN_KEY_REFERENCE, CPU_ONLY_ARGS, ServerConfig
from tritonize.serving.server import HOST, ServerError, TritonServer

KEY = new_admin_key()
MODELS = ("cnn", "mlp")
# A local server binds loopback and, when it is the bundled build, has a backend folder of its own; a pod
# binds every interface (probes and Services reach it on the pod IP) and runs NVIDIA's backends.
LOCAL_ONLY = {"--http-address", "--grpc-address", "--metrics-address", "--backend-directory"}
# The same flag, a value of each place's own: checked one by one below.
PER_PLACE = {"--model-repository", "--load-model", "--http-port", "--grpc-port", "--metrics-port"}


def _flags(args: list[str]) -> list[tuple[str, str]]:
    found = []
    for a in args[1:]:
        name, sep, value = a.partition("=")
        assert a.startswith("--") and sep, f"expected --flag=value, got {a!r}"
        found.append((name, value))
    return found


def _local(tmp_path: Path, options: DeployOptions) -> TritonServer:
    repository = tmp_path / "repository"
    for m in MODELS:
        (repository / m / "1").mkdir(parents=True)
        (repository / m / "config.pbtxt").write_text(f'name: "{m}"\nbackend: "python"\n')
    try:
        return TritonServer(repository, admin_key=KEY, drain_s=options.drain_seconds,
                            stop_timeout_s=options.drain_seconds + 10)
    except ServerError as e:
        pytest.skip(f"no tritonserver to build the local command for: {e}")


def _pod_container(options: DeployOptions) -> dict:
    return deployment(options)["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_the_pod_passes_every_flag_a_local_server_gets(target, tmp_path):
    options = DeployOptions(repo="s3://models/prod", endpoint_url="http://minio:9000", replicas=2, target=target,
                            models=MODELS, drain_seconds=20)
    server = _local(tmp_path, options)
    local = server.command(tmp_path / "backends" if server.binary.bundled else None)
    container = _pod_container(options)
    # The kubelet expands $(TRITONIZE_ADMIN_KEY) from the Secret; here the key is the local one.
    pod = [a.replace(ADMIN_KEY_REFERENCE, KEY) for a in container["args"]]
    assert Path(local[0]).name == pod[0] == "tritonserver"  # on PATH in NVIDIA's image
    local_flags, pod_flags = _flags(local), _flags(pod)

    for name, value in local_flags:
        if name in LOCAL_ONLY:
            assert name not in dict(pod_flags), name
            if name.endswith("-address"):
                assert value == HOST
    shared_local = Counter(f for f in local_flags if f[0] not in LOCAL_ONLY | PER_PLACE)
    shared_pod = Counter(f for f in pod_flags if f[0] not in PER_PLACE)
    # The flags that quiet a server without a GPU: the bundled CPU server gets them locally, a cpu pod too.
    cpu_only = Counter(_flags(["tritonserver", *CPU_ONLY_ARGS]))
    shared_local -= cpu_only
    expected = shared_local + (cpu_only if target == "cpu" else Counter())
    assert shared_pod == expected, (f"pod lacks {dict(expected - shared_pod)}; "
                                    f"pod has unexplained {dict(shared_pod - expected)}")
    # The restricted admin APIs and the drain are among them, so a pod is locked down and drains alike.
    names = {n for n, _ in shared_local}
    assert {"--grpc-restricted-protocol", "--http-restricted-api", "--exit-timeout-secs", "--strict-readiness"} <= names

    local_of = {n: [v for m, v in local_flags if m == n] for n in PER_PLACE}
    pod_of = {n: [v for m, v in pod_flags if m == n] for n in PER_PLACE}
    assert local_of["--model-repository"] == [str(server.repository)]
    assert pod_of["--model-repository"] == ["s3://minio:9000/models/prod"]
    assert local_of["--load-model"] == pod_of["--load-model"] == list(MODELS)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for kind in ("http", "grpc", "metrics"):
        assert local_of[f"--{kind}-port"] == [str(getattr(server, f"{kind}_port"))]
        assert pod_of[f"--{kind}-port"] == [str(ports[kind])]


def test_the_probes_ask_what_the_local_server_is_asked(tmp_path, monkeypatch):
    options = DeployOptions(repo="s3://models/prod", replicas=1)
    server = _local(tmp_path, options)
    asked = []

    class Answer:
        status = 200

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: asked.append(url) or Answer())
    assert server.is_ready()
    (url,) = asked
    assert url == f"http://{HOST}:{server.http_port}/v2/health/ready"  # on the port of --http-port
    container = _pod_container(options)
    http = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    assert f"--http-port={http}" in container["args"]
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": url.split(str(server.http_port), 1)[1], "port": "http"}


@pytest.mark.parametrize("target", ["cpu", "gpu"])
@pytest.mark.parametrize("kserve", [False, True])
def test_a_pod_config_differs_from_a_local_one_only_where_listed(target, kserve):
    """Without a server binary: the pod's ServerConfig against the one `serve` would run with the same drain,
    key and models; the fields that differ are those the module docstring of deploy/server_args.py lists, and
    so are the flags."""
    options = DeployOptions(repo="s3://models/prod", target=target, models=MODELS, drain_seconds=20)
    pod = pod_config(options, kserve)
    local = ServerConfig(http_port=18000, grpc_port=18001, metrics_port=18002, admin_key=KEY, drain_s=20,
                         cpu_only=target == "cpu")
    differ = {f.name for f in fields(ServerConfig) if getattr(pod, f.name) != getattr(local, f.name)}
    # memory_bound only sets the environment, which every pod has (workload.py), so no flag differs by it.
    assert differ == {"http_port", "grpc_port", "metrics_port", "address", "admin_key", "memory_bound"}
    pod_args = [a.replace(ADMIN_KEY_REFERENCE, KEY) for a in server_command(options, kserve=kserve).args]
    local_args = local.to_argv("tritonserver", "/models", MODELS)
    pod_flags, local_flags = _flags(pod_args), _flags(local_args)
    assert Counter(f for f in pod_flags if f[0] not in LOCAL_ONLY | PER_PLACE) == \
        Counter(f for f in local_flags if f[0] not in LOCAL_ONLY | PER_PLACE)
    loads = [[v for n, v in flags if n == "--load-model"] for flags in (pod_flags, local_flags)]
    assert loads == [list(MODELS), list(MODELS)]
