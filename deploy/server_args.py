"""The tritonserver command line a pod runs: the same ServerConfig (serving/config.py) a local server runs.

What is the same on a laptop and in a cluster is written once, in `ServerConfig.to_argv`: the model
control, the restricted admin APIs, the drain's exit timeout, the memory-bound and CPU-only flags.
tests/deploy/test_contract.py builds the local command with `TritonServer.command` and checks every flag
it passes against these. What differs is only the config's values, by design:
- addresses: a local server binds 127.0.0.1; a pod binds every interface (the kubelet's probes and
  the Services reach it on the pod IP), so no address flags (`address=None`);
- ports: free ones locally; fixed ones in a pod, named in the container's ports and the probes;
- the repository: a local folder vs s3://, and which models load (named ones vs all of them);
- the bundled server's own backend folder, which NVIDIA's image does not need;
- the admin key: in a pod, the reference the kubelet expands from the Secret.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..serving.config import ADMIN_KEY_REFERENCE, ServerConfig
from .options import DeployOptions

# Ports as NVIDIA's image and the Triton docs use them. KServe's Triton runtime serves HTTP on 8080 and
# gRPC on 9000 instead (KServe's Services and probes expect them there).
PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
KSERVE_PORTS = {"http": 8080, "grpc": 9000, "metrics": 8002}
HEALTH_READY = "/v2/health/ready"
HEALTH_LIVE = "/v2/health/live"
METRICS_PATH = "/metrics"


@dataclass(frozen=True)
class ServerCommand:
    args: list[str]  # the container's args: the binary, then its flags
    ports: dict[str, int]


def pod_config(options: DeployOptions, kserve: bool = False) -> ServerConfig:
    """The ServerConfig of every pod of the deployment."""
    ports = KSERVE_PORTS if kserve else PORTS
    return ServerConfig(**{f"{kind}_port": port for kind, port in ports.items()}, address=None,
                        model_control=options.model_control, poll_seconds=options.poll_seconds,
                        admin_key=ADMIN_KEY_REFERENCE, drain_s=options.drain_seconds,
                        cpu_only=options.target == "cpu",
                        # Always: a memory limit turns growth into an OOM kill (workload.py sets MEMORY_BOUND_ENV).
                        memory_bound=True)


def server_command(options: DeployOptions, repository: str | None = None, kserve: bool = False) -> ServerCommand:
    """The pod's tritonserver command line. `repository`: where it reads models (default: the S3 URL in
    Triton's form; KServe gives the folder its storage initializer downloaded to)."""
    config = pod_config(options, kserve)
    args = config.to_argv("tritonserver", repository or options.triton_url, options.models)  # on PATH in the image
    return ServerCommand(args, dict(config.ports()))
