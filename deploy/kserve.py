"""The KServe alternative (`--kserve`): an InferenceService whose predictor is Triton, and the runtime it runs.

KServe owns the Deployment and Services then. What it needs from us:
- `predictor.triton` with `storageUri: s3://BUCKET/PREFIX`. KServe turns it into a model of format
  `triton` and picks a runtime that supports that format, namespace-scoped ServingRuntimes before its
  cluster-wide ones; KServe's storage initializer copies the repository to /mnt/models before the server
  starts, with the credentials of the Secret the predictor's ServiceAccount lists.
- A ServingRuntime of our own, because KServe's `kserve-tritonserver` runs NVIDIA's image with its own
  flags: the CPU target needs the image with ONNX Runtime (the Dockerfile), and both targets need the
  flags tritonize servers run with (restricted admin APIs, exit timeout, readiness). Its ports are KServe's
  (HTTP 8080, gRPC 9000), which KServe's Services and probes expect.
- `RawDeployment` mode: a plain Deployment (no Knative, whose Services expose one port per container,
  and whose scale-to-zero does not fit a queue-time metric). "RawDeployment" is the name every KServe
  release knows; recent ones call it Standard and accept the old name.
- `autoscalerClass: external`: KServe creates no HPA of its own (it would scale on CPU); the HPA or KEDA
  ScaledObject written beside it scales KServe's Deployment, `<name>-predictor`, on queue time.
Beside them, as for the plain Deployment: a headless gRPC Service over the predictor pods (KServe's own
has a cluster IP) and a PodDisruptionBudget.
"""
from __future__ import annotations

from .options import DeployOptions
from .server_args import METRICS_PATH, server_command
from .workload import (
    TRITON_UID,
    container,
    grace_seconds,
    metadata,
    prometheus_annotations,
    secret_name,
    volumes,
)

KSERVE_API = "serving.kserve.io"
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts storageUri's files
KSERVE_CONTAINER = "kserve-container"  # the container name KServe merges the predictor's fields into


def runtime_name(options: DeployOptions) -> str:
    return f"{options.name}-triton"


def predictor_deployment(options: DeployOptions) -> str:
    return f"{options.name}-predictor"


def predictor_selector(options: DeployOptions) -> dict[str, str]:
    """The labels KServe puts on its predictor pods."""
    return {f"{KSERVE_API}/inferenceservice": options.name, "component": "predictor"}


def serving_runtime(options: DeployOptions) -> dict:
    command = server_command(options, repository=MODEL_DIR, kserve=True)
    c = container(options, command, s3_env=False)  # the storage initializer reads S3, not the server
    c["name"] = KSERVE_CONTAINER
    del c["resources"]  # set on the predictor: KServe would otherwise put its defaults there and they win
    return {
        "apiVersion": f"{KSERVE_API}/v1alpha1", "kind": "ServingRuntime",
        "metadata": metadata(options, runtime_name(options)),
        "spec": {
            "supportedModelFormats": [{"name": "triton", "version": "2", "autoSelect": True, "priority": 2}],
            "protocolVersions": ["v2", "grpc-v2"],
            # KServe's own metrics aggregation reads the first pair, Prometheus' pod scrape job the second.
            "annotations": {"prometheus.kserve.io/port": str(command.ports["metrics"]),
                            "prometheus.kserve.io/path": METRICS_PATH,
                            **prometheus_annotations(command.ports["metrics"])},
            "containers": [c],
            "volumes": volumes(options),
            **({"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}
               if options.target == "gpu" else {}),
        },
    }


def service_account(options: DeployOptions) -> dict:
    # KServe's storage initializer finds S3 credentials in the Secrets this ServiceAccount lists.
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(options, f"{options.name}-storage"),
            "secrets": [{"name": secret_name(options)}], "automountServiceAccountToken": False}


def inference_service(options: DeployOptions) -> dict:
    location = options.repo.rstrip("/")
    return {
        "apiVersion": f"{KSERVE_API}/v1beta1", "kind": "InferenceService",
        "metadata": metadata(options, options.name, annotations={
            f"{KSERVE_API}/deploymentMode": "RawDeployment",
            f"{KSERVE_API}/autoscalerClass": "external" if options.autoscaler != "none" else "none",
        }),
        "spec": {"predictor": {
            "serviceAccountName": f"{options.name}-storage",
            "minReplicas": options.replicas,
            "maxReplicas": options.replicas if options.autoscaler == "none" else options.replicas_max,
            "terminationGracePeriodSeconds": grace_seconds(options),
            "securityContext": {"runAsNonRoot": True, "runAsUser": TRITON_UID, "runAsGroup": TRITON_UID,
                                "fsGroup": TRITON_UID, "seccompProfile": {"type": "RuntimeDefault"}},
            # No runtimeVersion: it would replace the tag of the runtime's image.
            "triton": {"storageUri": location, "resources": options.resources()},
        }},
    }
