"""`tritonize deploy k8s`: a kustomize base for tritonserver replicas reading one repository from S3.

The folder holds kustomization.yaml and one YAML file per object (`kubectl apply -k DIR`), plus files that
are not applied: the Secret template, prometheus-adapter's rule, the CPU image's Dockerfile, and
deploy.json (what was asked for; it also marks the folder as tritonize's, so a rerun may replace it).
The whole folder is written beside DIR and renamed into place: never half a base.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from ..artifacts import atomic_dir, now_iso
from . import autoscaling, kserve, workload
from .image import TRITON_VERSION, dockerfile
from .options import DeployOptions
from .server_args import KSERVE_PORTS, server_command

MARKER = "deploy.json"
FORMAT = "tritonize-deploy/1"


@dataclass(frozen=True)
class Resource:
    file: str
    body: dict | str  # a Kubernetes object (or another YAML document), or plain text (the Dockerfile)
    comment: str = ""  # why it is shaped so; written at the top of the file
    applied: bool = True  # listed in kustomization.yaml


@dataclass(frozen=True)
class DeployResult:
    out: Path
    files: tuple[str, ...]
    kinds: tuple[str, ...]  # of the objects kustomization.yaml applies, in its order
    image: str
    dockerfile: bool  # a CPU image to build before applying


def _autoscaler(options: DeployOptions, target: str) -> list[Resource]:
    if options.autoscaler == "hpa":
        return [Resource("hpa.yaml", autoscaling.hpa(options, target), autoscaling.header(options)),
                Resource("prometheus-adapter-rules.yaml", autoscaling.adapter_rules(),
                         autoscaling.header(options) + "\n\n" + autoscaling.adapter_help(), applied=False)]
    if options.autoscaler == "keda":
        return [Resource("scaledobject.yaml", autoscaling.scaled_object(options, target), autoscaling.header(options)
                         + "\n\nNeeds KEDA (keda.sh) in the cluster; the query names the namespace (--namespace).")]
    return []


def build_resources(options: DeployOptions) -> list[Resource]:
    """Every file of the base, in the order kustomization.yaml lists the applied ones."""
    if options.kserve:
        target = kserve.predictor_deployment(options)
        found = [
            Resource("servingruntime.yaml", kserve.serving_runtime(options), kserve.__doc__.strip()),
            Resource("serviceaccount.yaml", kserve.service_account(options)),
            Resource("inferenceservice.yaml", kserve.inference_service(options), kserve.__doc__.strip()),
            # KServe's own Service for the predictor has a cluster IP; gRPC clients need every pod's address.
            Resource("service-grpc.yaml", workload.grpc_service(options, kserve.predictor_selector(options),
                                                                KSERVE_PORTS["grpc"])),
            Resource("pdb.yaml", workload.pod_disruption_budget(options, kserve.predictor_selector(options),
                                                                options.name)),
        ]
        secret = workload.secret_template(options, workload.kserve_s3_annotations(options))
    else:
        target = options.name
        found = [
            Resource("deployment.yaml", workload.deployment(options), _deployment_comment(options)),
            Resource("service-grpc.yaml", workload.grpc_service(options)),
            Resource("service-http.yaml", workload.http_service(options)),
            Resource("pdb.yaml", workload.pod_disruption_budget(options, workload.selector(options), options.name)),
        ]
        secret = workload.secret_template(options)
    found += _autoscaler(options, target)
    found.append(Resource("secret.example.yaml", secret, workload.secret_help(options, options.kserve), applied=False))
    if options.target == "cpu" and options.image is None:
        found.append(Resource("Dockerfile", dockerfile(), applied=False))
    return found


def _deployment_comment(options: DeployOptions) -> str:
    ports = server_command(options).ports
    return (f"tritonserver {TRITON_VERSION} ({options.target} target), {options.container_image}, reading "
            f"{options.triton_url}.\nPorts: HTTP {ports['http']}, gRPC {ports['grpc']}, metrics {ports['metrics']}. "
            f"Shutdown: preStop sleep {options.prestop_seconds} s, then SIGTERM and a drain of up to "
            f"{options.drain_seconds} s;\nterminationGracePeriodSeconds {workload.grace_seconds(options)} covers both."
            + ("" if options.target == "cpu" or options.image else
               "\nNVIDIA's image has no Python packages for tritonize's Python-backend runners: a repository with\n"
               "text models (the tokenizer runner needs tokenizers) needs an image built like --target cpu's "
               "Dockerfile."))


def kustomization(options: DeployOptions, resources: list[Resource]) -> dict:
    found = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if options.namespace:
        found["namespace"] = options.namespace
    found["resources"] = [r.file for r in resources if r.applied]
    return found


def render(resource: Resource) -> str:
    text = resource.body if isinstance(resource.body, str) else \
        yaml.safe_dump(resource.body, sort_keys=False, default_flow_style=False, width=1 << 16)  # no folded lines
    if not resource.comment:
        return text
    return "".join(f"# {line}".rstrip() + "\n" for line in resource.comment.splitlines()) + text


def write_k8s(options: DeployOptions, out: Path) -> DeployResult:
    """Write the base into `out` (replacing a base tritonize wrote there before, refusing any other folder)."""
    resources = build_resources(options)
    base = Resource("kustomization.yaml", kustomization(options, resources),
                    "kubectl apply -k . (after creating the Secret: see secret.example.yaml)" +
                    ("; build and push the image first (see Dockerfile)" if options.target == "cpu"
                     and options.image is None else ""))
    files = [base, *resources]
    with atomic_dir(Path(out), marker=MARKER) as tmp:
        for r in files:
            (tmp / r.file).write_text(render(r))
        (tmp / MARKER).write_text(json.dumps({
            "format": FORMAT, "created": now_iso(), "triton_version": TRITON_VERSION,
            "image": options.container_image, "options": asdict(options),
            "files": [r.file for r in files], "applied": base.body["resources"],
        }, indent=2) + "\n")
    kinds = tuple(r.body["kind"] for r in resources if r.applied)
    return DeployResult(Path(out), tuple(r.file for r in files) + (MARKER,), kinds, options.container_image,
                        any(r.file == "Dockerfile" for r in files))
