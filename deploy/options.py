"""What `tritonize deploy k8s` is asked for, checked before anything is written.

Every refusal is one line naming what was expected and what was given; `DeployError` is a ValueError,
so the CLI shows it without a traceback (exit 2).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..model_repository.store import StoreError, parse_endpoint, parse_s3_url, triton_repository_url
from .image import default_image

TARGETS = ("cpu", "gpu")
AUTOSCALERS = ("hpa", "keda", "none")
MODEL_CONTROL = ("explicit", "poll")
# DNS-1035 labels (what Service names must be). Every object is named NAME or NAME-<suffix> (the longest
# suffix is KServe's "-predictor"), and a Service name has at most 63 characters.
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
MAX_NAME = 40
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# A Kubernetes quantity as these manifests use it: a number and an optional SI or binary suffix.
_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?")
_FACTORS = {None: 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
# Triton model names as tritonize writes them, and what a `--load-model=NAME` flag can carry.
_MODEL = re.compile(r"[A-Za-z0-9_.-]+")
_IMAGE = re.compile(r"[^\s]+")


class DeployError(ValueError):
    """A deployment that cannot be written as asked: what was expected and what was given."""


def quantity(value: str, flag: str, memory: bool) -> float:
    """`value` in base units (bytes, or cores), refused unless it is a positive Kubernetes quantity."""
    match = _QUANTITY.fullmatch(str(value))
    what = "a size like 4Gi, 512Mi or 8G" if memory else "a CPU count like 2, 0.5 or 500m"
    if not match or (memory and match.group(2) == "m"):
        raise DeployError(f"{flag}: expected {what}, got {value!r}")
    amount = float(match.group(1)) * _FACTORS[match.group(2)]
    if amount <= 0:
        raise DeployError(f"{flag}: expected {what} above zero, got {value!r}")
    return amount


@dataclass(frozen=True)
class DeployOptions:
    """One deployment of tritonserver replicas reading one repository from S3-compatible storage."""
    repo: str  # s3://BUCKET/PREFIX, as `tritonize publish` wrote it
    replicas: int = 2
    target: str = "cpu"
    endpoint_url: str | None = None  # an S3-compatible store (MinIO, Ceph): http(s)://HOST[:PORT]
    region: str = "us-east-1"
    name: str = "tritonize"
    namespace: str | None = None
    image: str | None = None  # default: NVIDIA's image (gpu), or the generated CPU image (cpu)
    models: tuple[str, ...] = ()  # default: every model in the repository
    model_control: str = "explicit"
    poll_seconds: int = 30  # with model_control "poll"
    autoscaler: str = "hpa"
    max_replicas: int | None = None  # default: 4 x replicas
    target_queue_ms: float = 10.0
    prometheus_url: str = "http://prometheus-server.monitoring.svc.cluster.local"  # with autoscaler "keda"
    kserve: bool = False
    cpu: str = ""  # default per target (see resources())
    memory: str = ""
    gpus: int | None = None  # --target gpu only; default 1
    shm_size: str = "1Gi"
    tmp_size: str = "8Gi"
    drain_seconds: int = 30
    prestop_seconds: int = 10
    startup_seconds: int = 600

    def __post_init__(self):
        self.check()

    # -- derived -------------------------------------------------------------------------------------

    @property
    def triton_url(self) -> str:
        """What `--model-repository` reads: Triton's URL form carries a custom endpoint as s3://HOST:PORT/..."""
        return triton_repository_url(self.repo, self.endpoint_url, environ={})

    @property
    def container_image(self) -> str:
        return self.image or default_image(self.target)

    @property
    def replicas_max(self) -> int:
        return self.max_replicas if self.max_replicas is not None else 4 * self.replicas

    @property
    def queue_target_us(self) -> int:
        """The autoscaling target in Triton's own unit (nv_inference_queue_duration_us is in microseconds)."""
        return max(1, round(self.target_queue_ms * 1000))

    def resources(self) -> dict:
        """requests == limits: Guaranteed QoS, so with the kubelet's static CPU manager policy and a whole
        number of CPUs the server gets cores of its own (no neighbour's threads on them, no CFS throttling
        between requests). The /dev/shm emptyDir is memory and counts against the memory limit."""
        cpu = self.cpu or ("4" if self.target == "gpu" else "2")
        memory = self.memory or ("16Gi" if self.target == "gpu" else "4Gi")
        limits = {"cpu": cpu, "memory": memory}
        if self.target == "gpu":
            # An extended resource: requests default to limits, and may not differ from them.
            limits["nvidia.com/gpu"] = str(1 if self.gpus is None else self.gpus)
        return {"requests": {"cpu": cpu, "memory": memory}, "limits": limits}

    # -- checks --------------------------------------------------------------------------------------

    def check(self) -> None:
        try:
            parse_s3_url(self.repo)
        except StoreError as e:
            raise DeployError(f"--repo: {e}") from None
        try:
            if self.endpoint_url is not None:
                parse_endpoint(self.endpoint_url)  # its message names --endpoint-url
        except StoreError as e:
            raise DeployError(str(e)) from None
        self._whole("--replicas", self.replicas, 1)
        if self.target not in TARGETS:
            raise DeployError(f"--target: expected one of {', '.join(TARGETS)}, got {self.target!r}")
        if self.autoscaler not in AUTOSCALERS:
            raise DeployError(f"--autoscaler: expected one of {', '.join(AUTOSCALERS)}, got {self.autoscaler!r}")
        if self.model_control not in MODEL_CONTROL:
            raise DeployError(f"--model-control: expected one of {', '.join(MODEL_CONTROL)}, "
                              f"got {self.model_control!r}")
        if not _NAME.fullmatch(str(self.name)) or len(self.name) > MAX_NAME:
            raise DeployError(f"--name: expected a DNS-1035 label of at most {MAX_NAME} characters (lower-case "
                              f"letters, digits and '-', starting with a letter), got {self.name!r}")
        if self.namespace is not None and (not _NAMESPACE.fullmatch(str(self.namespace)) or len(self.namespace) > 63):
            raise DeployError(f"--namespace: expected a DNS-1123 label (lower-case letters, digits and '-', at most "
                              f"63 characters), got {self.namespace!r}")
        if self.image is not None and not _IMAGE.fullmatch(str(self.image)):
            raise DeployError(f"--image: expected an image reference like REGISTRY/NAME:TAG, got {self.image!r}")
        if not str(self.region) or not re.fullmatch(r"[a-z0-9-]+", str(self.region)):
            raise DeployError(f"--region: expected an S3 region name like us-east-1, got {self.region!r}")
        self._check_models()
        if self.max_replicas is not None:
            self._whole("--max-replicas", self.max_replicas, self.replicas, f" (at least --replicas {self.replicas})")
        if not isinstance(self.target_queue_ms, (int, float)) or not math.isfinite(self.target_queue_ms) \
                or self.target_queue_ms <= 0:
            raise DeployError(f"--target-queue-ms: expected a number of milliseconds above 0, "
                              f"got {self.target_queue_ms!r}")
        if self.autoscaler == "keda" and not re.fullmatch(r"https?://\S+", str(self.prometheus_url)):
            raise DeployError(f"--prometheus-url: expected http(s)://HOST[:PORT], got {self.prometheus_url!r}")
        self._check_resources()
        self._whole("--drain-seconds", self.drain_seconds, 1)
        self._whole("--prestop-seconds", self.prestop_seconds, 0)
        self._whole("--startup-seconds", self.startup_seconds, 10)
        self._whole("--poll-seconds", self.poll_seconds, 1)

    def _check_models(self) -> None:
        if isinstance(self.models, str):
            raise DeployError(f"models: expected a list of model names, got the string {self.models!r}")
        for m in self.models:
            if not isinstance(m, str) or not _MODEL.fullmatch(m):
                raise DeployError(f"--models: expected model names of letters, digits, '.', '_' and '-', got {m!r}")
        if self.models and self.model_control == "poll":
            raise DeployError("--models: expected no model list with --model-control poll (a polling server loads "
                              f"every model in the repository), got {', '.join(self.models)}")

    def _check_resources(self) -> None:
        res = self.resources()["limits"]
        quantity(res["cpu"], "--cpu", memory=False)
        memory = quantity(res["memory"], "--memory", memory=True)
        shm = quantity(self.shm_size, "--shm-size", memory=True)
        quantity(self.tmp_size, "--tmp-size", memory=True)
        if shm >= memory:
            raise DeployError(f"--shm-size: expected less than the memory limit {res['memory']} (a memory-backed "
                              f"/dev/shm counts against it), got {self.shm_size}")
        if self.target == "gpu" and self.gpus is not None:
            self._whole("--gpus", self.gpus, 1)
        elif self.target == "cpu" and self.gpus is not None:
            raise DeployError(f"--gpus: expected it only with --target gpu, got --gpus {self.gpus} with --target cpu")

    @staticmethod
    def _whole(flag: str, value, least: int, note: str = "") -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise DeployError(f"{flag}: expected a whole number >= {least}{note}, got {value!r}")
