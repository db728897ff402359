"""The tritonserver command line a pod runs, from the flags `TritonServer` passes to a local server.

What is the same on a laptop and in a cluster is written once: the restricted admin APIs come from
serving/admin.py (`restriction_args`), the model control mode and the exit timeout mean the same here
as in serving/server.py, and tests/deploy/test_contract.py builds the local command with
`TritonServer.command` and checks every flag it passes against these. What differs, by design:
- addresses: a local server binds 127.0.0.1; a pod binds every interface (the kubelet's probes and
  the Services reach it on the pod IP), so no address flags;
- ports: free ones locally; fixed ones in a pod, named in the container's ports and the probes;
- the repository: a local folder vs s3://, and which models load (named ones vs all of them);
- the bundled server's own backend folder, which NVIDIA's image does not need.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..serving.admin import ADMIN_KEY_ENV, restriction_args
from ..serving.server import MEMORY_BOUND_ARGS
from .options import DeployOptions

# Ports as NVIDIA's image and the Triton docs use them. KServe's Triton runtime serves HTTP on 8080 and
# gRPC on 9000 instead (KServe's Services and probes expect them there).
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
KSERVE_PORTS = {"http": 8080, "grpc": 9000, "metrics": 8002}
HEALTH_READY = "/v2/health/ready"
HEALTH_LIVE = "/v2/health/live"
METRICS_PATH = "/metrics"
# Flags that quiet a server without a GPU: no pinned or CUDA memory pool to allocate, no GPU metrics.
# The bundled CPU server gets them locally; a --target cpu pod gets them too.
CPU_ONLY_ARGS = ("--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0", "--allow-gpu-metrics=false")


@dataclass(frozen=True)
class ServerCommand:
    args: list[str]  # the container's args: the binary, then its flags
    ports: dict[str, int]


def admin_key_reference() -> str:
    """The admin key as the kubelet expands it into args from the container's env ($(VAR) syntax): the
    pod spec shows only the reference; the value stays in the Secret (and in the process's argv)."""
    return f"$({ADMIN_KEY_ENV})"


def server_command(options: DeployOptions, repository: str | None = None, kserve: bool = False) -> ServerCommand:
    """The pod's tritonserver command line. `repository`: where it reads models (default: the S3 URL in
    Triton's form; KServe gives the folder its storage initializer downloaded to)."""
    ports = KSERVE_PORTS if kserve else PORTS
    args = ["tritonserver", f"--model-repository={repository or options.triton_url}",
            f"--model-control-mode={options.model_control}"]
    if options.model_control == "explicit":
        # As locally: explicit loading, so the model-repository API (behind the admin key) may load and
        # unload. `*` loads every model at start, as Triton's `none` mode would.
        args += [f"--load-model={m}" for m in options.models] or ["--load-model=*"]
    else:
        # Each server picks up what `tritonize publish` adds: new versions go up under new numbers, config
        # last, so a poll never sees half a model.
        args.append(f"--repository-poll-secs={options.poll_seconds}")
    args += [
        # Ready only once every model has loaded: the readiness probe and the Services then send a pod
        # traffic only when it can serve all of it. (Triton's default, written out because the probes rely on it.)
        "--strict-readiness=true",
        f"--http-port={ports['http']}", f"--grpc-port={ports['grpc']}", f"--metrics-port={ports['metrics']}",
        "--log-verbose=0",
        # On SIGTERM the server stops taking requests and waits this long for those in flight (the drain);
        # terminationGracePeriodSeconds leaves room for it after the preStop sleep.
        f"--exit-timeout-secs={options.drain_seconds}",
        # Refused oversized requests do not keep memory (serving/server.py says what it costs).
        *MEMORY_BOUND_ARGS,
    ]
    if options.target == "cpu":
        args += CPU_ONLY_ARGS
    args += restriction_args(admin_key_reference())
    return ServerCommand(args, dict(ports))
