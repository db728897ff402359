"""The Kubernetes objects that run tritonserver: Deployment, Services, PodDisruptionBudget, Secret template.

Plain dicts shaped like the API objects (apps/v1 Deployment, v1 Service, policy/v1 PodDisruptionBudget,
v1 Secret), not the `kubernetes` client's model classes: those would add a large dependency that only
turns the same dicts into YAML, and they cannot describe the custom resources (KServe, KEDA) anyway.
The tests check every object against Kubernetes' own OpenAPI schemas with kubernetes-validate (strict).
"""
from __future__ import annotations

from ..model_repository.store import parse_endpoint
from ..serving.admin import ADMIN_HEADER, ADMIN_KEY_ENV, MIN_KEY_LENGTH
from ..serving.config import MEMORY_BOUND_ENV
from .image import TRITON_VERSION
from .options import DeployOptions
from .server_args import HEALTH_LIVE, HEALTH_READY, METRICS_PATH, ServerCommand, server_command

# The uid/gid of the triton-server user NVIDIA's image creates.
TRITON_UID = 1000
S3_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
CONTAINER = "tritonserver"


def selector(options: DeployOptions) -> dict[str, str]:
    return {"app.kubernetes.io/name": "tritonserver", "app.kubernetes.io/instance": options.name}


def labels(options: DeployOptions) -> dict[str, str]:
    return {**selector(options), "app.kubernetes.io/component": "inference", "app.kubernetes.io/part-of": "tritonize",
            "app.kubernetes.io/version": TRITON_VERSION}


def metadata(options: DeployOptions, name: str, **extra) -> dict:
    return {"name": name, "labels": labels(options), **extra}


def secret_name(options: DeployOptions) -> str:
    return f"{options.name}-secrets"


def _secret_env(options: DeployOptions, keys: tuple[str, ...]) -> list[dict]:
    return [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret_name(options), "key": k}}} for k in keys]


def _probe(path: str, port: str, period: int, failures: int, timeout: int) -> dict:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "failureThreshold": failures,
            "timeoutSeconds": timeout}


def grace_seconds(options: DeployOptions) -> int:
    """Kubernetes counts the grace period from the start of the preStop hook: the sleep, then Triton's
    drain (--exit-timeout-secs), then a margin for the process to exit before SIGKILL."""
    return options.prestop_seconds + options.drain_seconds + 15


def container(options: DeployOptions, command: ServerCommand, s3_env: bool = True) -> dict:
    ports = command.ports
    c = {
        "name": CONTAINER,
        "image": options.container_image,
        "imagePullPolicy": "IfNotPresent",
        "args": command.args,
        "env": _secret_env(options, (S3_KEYS if s3_env else ()) + (ADMIN_KEY_ENV,))
        + [{"name": k, "value": v} for k, v in MEMORY_BOUND_ENV.items()],  # glibc returns large frees
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in ports.items()],
        # Loading models from S3 can take minutes: the startup probe allows startup_seconds, and only then
        # do liveness and readiness begin, so a slow load is not mistaken for a dead server.
        "startupProbe": _probe(HEALTH_READY, "http", 5, max(1, options.startup_seconds // 5), 3),
        "readinessProbe": _probe(HEALTH_READY, "http", 5, 2, 3),
        "livenessProbe": _probe(HEALTH_LIVE, "http", 10, 3, 5),
        "resources": options.resources(),
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": TRITON_UID, "runAsGroup": TRITON_UID,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if options.prestop_seconds:
        # Deleting a pod removes it from the Services' endpoints and starts this hook at the same time; the
        # endpoint removal takes a moment to reach kube-proxy, DNS and clients. Sleeping first keeps the
        # server taking requests until nobody sends it new ones, and only then does SIGTERM start the drain.
        # (An exec of sleep rather than the newer `sleep` action, which older clusters reject.)
        c["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(options.prestop_seconds)]}}}
    return c


def volumes(options: DeployOptions) -> list[dict]:
    # /tmp: Triton copies each model of an s3:// repository into /tmp/folderXXXXXX before loading it (TMPDIR
    # is not read; measured on 2.51), and the Python backend unpacks into /tmp/python_env_*, so size it for
    # the repository. /dev/shm: each Python-backend stub exchanges tensors with the server through
    # shared memory regions there; a container runtime's default /dev/shm is 64 MiB, too small for many
    # instances, and memory-backed it counts against the container's memory limit. Both live as long as
    # the pod (a restarted container finds them as the last one left them); exceeding a sizeLimit evicts
    # the pod, which then starts clean elsewhere.
    return [{"name": "tmp", "emptyDir": {"sizeLimit": options.tmp_size}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": options.shm_size}}]


def prometheus_annotations(port: int) -> dict[str, str]:
    """Scraping by pod annotations, not a ServiceMonitor: no CRD to install (a ServiceMonitor fails to apply
    without the Prometheus Operator), and Prometheus' common kubernetes-pods job scrapes every pod with them
    and labels the series with `namespace` and `pod`, which the adapter rule maps to the HPA's pods. (The
    kube-prometheus-stack ignores these annotations unless told to; there, add a PodMonitor.)"""
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": METRICS_PATH}


def deployment(options: DeployOptions) -> dict:
    command = server_command(options)
    c = container(options, command)
    pod = {
        "terminationGracePeriodSeconds": grace_seconds(options),
        # The server never calls the Kubernetes API: no token in the pod.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": TRITON_UID, "runAsGroup": TRITON_UID,
                            "fsGroup": TRITON_UID, "seccompProfile": {"type": "RuntimeDefault"}},
        # Replicas on different nodes where the cluster has them, so one node going down takes one replica.
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                       "whenUnsatisfiable": "ScheduleAnyway",
                                       "labelSelector": {"matchLabels": selector(options)}}],
        "containers": [c],
        "volumes": volumes(options),
    }
    if options.target == "gpu":
        # GPU nodes are commonly tainted so that only pods asking for GPUs land there.
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    spec = {
        "selector": {"matchLabels": selector(options)},
        # Never fewer ready replicas during a rollout: one new pod comes up (and loads its models) before an
        # old one is removed, so rolling to a new image or to newly published versions drops no request.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "progressDeadlineSeconds": options.startup_seconds + 300,
        "template": {"metadata": {"labels": labels(options),
                                  # Prometheus scrapes each pod (the autoscaling metric is per pod).
                                  "annotations": prometheus_annotations(command.ports["metrics"])},
                     "spec": pod},
    }
    if options.autoscaler == "none":
        spec = {"replicas": options.replicas, **spec}
    # With an autoscaler, spec.replicas is left out: the HPA owns the count, and re-applying these manifests
    # must not reset it (the HPA's minReplicas is --replicas).
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata(options, options.name), "spec": spec}


def grpc_service(options: DeployOptions, pod_selector: dict[str, str] | None = None, port: int | None = None) -> dict:
    # Headless (clusterIP: None): gRPC keeps one long-lived HTTP/2 connection per channel, and a ClusterIP
    # Service balances connections, not requests, so every request of a client would go to the one pod
    # its connection landed on. Without a cluster IP, the Service's DNS name returns the address of every
    # ready pod; the client (tritonize.client's endpoint list, or gRPC's round_robin policy) spreads
    # requests over all of them, skips a failed one, and sees new pods when it resolves the name again.
    port = port or server_command(options).ports["grpc"]
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(options, f"{options.name}-grpc"),
            "spec": {"clusterIP": "None", "selector": pod_selector or selector(options),
                     "ports": [{"name": "grpc", "port": port, "targetPort": "grpc", "protocol": "TCP",
                                "appProtocol": "kubernetes.io/h2c"}]}}


def http_service(options: DeployOptions) -> dict:
    # HTTP/1.1 requests are short, so kube-proxy's per-connection balancing spreads them well enough.
    port = server_command(options).ports["http"]
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata(options, f"{options.name}-http"),
            "spec": {"type": "ClusterIP", "selector": selector(options),
                     "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP",
                                "appProtocol": "http"}]}}


def pod_disruption_budget(options: DeployOptions, pod_selector: dict[str, str], name: str) -> dict:
    # maxUnavailable 1 rather than minAvailable: it holds whatever the replica count (the HPA changes it),
    # and with a single replica it still lets a node drain (minAvailable 1 would block it for ever).
    # AlwaysAllow: a pod that is not ready (crash-looping, say) may be evicted, so it cannot block a drain.
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": metadata(options, name),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": pod_selector},
                     "unhealthyPodEvictionPolicy": "AlwaysAllow"}}


def secret_template(options: DeployOptions, annotations: dict[str, str] | None = None) -> dict:
    values = {k: "" for k in S3_KEYS + (ADMIN_KEY_ENV,)}
    values["AWS_DEFAULT_REGION"] = options.region  # not a secret
    meta = metadata(options, secret_name(options))
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque", "stringData": values}


def secret_help(options: DeployOptions, kserve: bool) -> str:
    ns = f" -n {options.namespace}" if options.namespace else ""
    lines = [
        "A template: the pods read these keys, and the values are yours to fill. It is not listed in",
        "kustomization.yaml, so applying the base never overwrites the real Secret with empty values.",
        f"Create the real one with kubectl (the admin key: {MIN_KEY_LENGTH}+ characters of A-Z a-z 0-9 . _ ~ -):",
        f"  kubectl{ns} create secret generic {secret_name(options)} \\",
        "    --from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=... \\",
        f"    --from-literal=AWS_DEFAULT_REGION={options.region} \\",
        f"    --from-literal={ADMIN_KEY_ENV}=\"$(python -c 'import secrets; print(secrets.token_urlsafe(32))')\"",
        f"The admin key unlocks Triton's restricted APIs (send it in the header {ADMIN_HEADER});",
        "inference, health and metadata need no key.",
    ]
    if kserve:
        lines += [f"  kubectl{ns} annotate secret {secret_name(options)} " + " ".join(
            f"{k}={v}" for k, v in kserve_s3_annotations(options).items()),
            "KServe's storage initializer reads the S3 keys and these annotations through the ServiceAccount."]
    return "\n".join(lines)


def kserve_s3_annotations(options: DeployOptions) -> dict[str, str]:
    """What KServe's storage initializer reads from a Secret its ServiceAccount lists: the endpoint
    (host:port, no scheme), http or https, and the region."""
    found = {"serving.kserve.io/s3-region": options.region}
    if options.endpoint_url:
        endpoint = parse_endpoint(options.endpoint_url)
        found["serving.kserve.io/s3-endpoint"] = f"{endpoint.host}:{endpoint.port}"
        found["serving.kserve.io/s3-usehttps"] = "1" if endpoint.scheme == "https" else "0"
    return found
