"""`tritonize deploy k8s`: Kubernetes manifests (a kustomize base) for tritonserver replicas reading one
repository from S3-compatible storage, as `tritonize publish` left it."""
from __future__ import annotations

from pathlib import Path

from rich.markup import escape

from .common import out


def register(sub) -> None:
    p = sub.add_parser("deploy", help="Kubernetes manifests for Triton replicas reading one repository")
    platforms = p.add_subparsers(dest="platform", metavar="PLATFORM", required=True)
    k = platforms.add_parser("k8s", help="a kustomize base: Deployment (or KServe InferenceService), Services, "
                                         "PodDisruptionBudget, autoscaling on queue time, Secret template")
    k.add_argument("--repo", required=True, metavar="s3://BUCKET/PREFIX", help="the published repository")
    k.add_argument("--endpoint-url", metavar="URL", help="an S3-compatible store as the pods reach it, "
                   "http(s)://HOST[:PORT] (default: AWS S3; the local environment's AWS_ENDPOINT_URL is not used)")
    k.add_argument("--region", default="us-east-1", help="S3 region (default: %(default)s)")
    k.add_argument("--replicas", type=int, required=True, help="replicas (the autoscaler's minimum)")
    k.add_argument("--target", default="cpu", metavar="{cpu,gpu}",
                   help="cpu: an image built from the generated Dockerfile (NVIDIA's plus ONNX Runtime for the "
                        "Python-backend runners); gpu: NVIDIA's image with nvidia.com/gpu limits "
                        "(default: %(default)s)")
    k.add_argument("--out", type=Path, required=True, metavar="DIR", help="the folder to write (replaced whole)")
    k.add_argument("--image", help="the tritonserver image (default: nvcr.io/nvidia/tritonserver:<release>-py3 "
                                   "for gpu, the Dockerfile's for cpu)")
    k.add_argument("--name", default="tritonize", help="name of the objects (default: %(default)s)")
    k.add_argument("--namespace", help="namespace to set in kustomization.yaml (default: none, kubectl's)")
    k.add_argument("--models", nargs="+", metavar="MODEL", help="models to load (default: all in the repository)")
    k.add_argument("--model-control", default="explicit", metavar="{explicit,poll}",
                   help="explicit: models load at start, new versions arrive with a rollout (default); poll: each "
                        "server picks up what is published every --poll-seconds")
    k.add_argument("--poll-seconds", type=int, default=30, help="with --model-control poll (default: %(default)s)")
    k.add_argument("--autoscaler", default="hpa", metavar="{hpa,keda,none}",
                   help="hpa: HPA v2 on a prometheus-adapter metric (rule written beside it); keda: a KEDA "
                        "ScaledObject with a Prometheus trigger; none: a fixed replica count (default: %(default)s)")
    k.add_argument("--max-replicas", type=int, help="autoscaler's maximum (default: 4 x --replicas)")
    k.add_argument("--target-queue-ms", type=float, default=10.0,
                   help="average queue time per request to hold, in ms (default: %(default)s)")
    k.add_argument("--prometheus-url", default="http://prometheus-server.monitoring.svc.cluster.local",
                   help="Prometheus as KEDA reaches it (default: %(default)s)")
    k.add_argument("--kserve", action="store_true", help="a KServe InferenceService (and ServingRuntime) instead "
                                                          "of the Deployment and Services")
    k.add_argument("--cpu", default="", help="CPU request = limit (default: 2 for cpu, 4 for gpu)")
    k.add_argument("--memory", default="", help="memory request = limit (default: 4Gi for cpu, 16Gi for gpu)")
    k.add_argument("--gpus", type=int, help="GPUs per replica with --target gpu (default: 1)")
    k.add_argument("--shm-size", default="1Gi", help="/dev/shm for the Python-backend stubs (default: %(default)s)")
    k.add_argument("--tmp-size", default="8Gi", help="/tmp, where Triton copies the repository (default: %(default)s)")
    k.add_argument("--drain-seconds", type=int, default=30,
                   help="how long a stopping server waits for requests in flight (default: %(default)s)")
    k.add_argument("--prestop-seconds", type=int, default=10,
                   help="sleep before SIGTERM while endpoints are removed (default: %(default)s)")
    k.add_argument("--startup-seconds", type=int, default=600,
                   help="time allowed to fetch and load the models (default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..deploy.k8s import write_k8s
    from ..deploy.options import DeployOptions

    options = DeployOptions(
        repo=args.repo, replicas=args.replicas, target=args.target, endpoint_url=args.endpoint_url,
        region=args.region, name=args.name, namespace=args.namespace, image=args.image,
        models=tuple(args.models or ()), model_control=args.model_control, poll_seconds=args.poll_seconds,
        autoscaler=args.autoscaler, max_replicas=args.max_replicas, target_queue_ms=args.target_queue_ms,
        prometheus_url=args.prometheus_url, kserve=args.kserve, cpu=args.cpu, memory=args.memory, gpus=args.gpus,
        shm_size=args.shm_size, tmp_size=args.tmp_size, drain_seconds=args.drain_seconds,
        prestop_seconds=args.prestop_seconds, startup_seconds=args.startup_seconds)
    result = write_k8s(options, args.out)
    folder = escape(str(result.out))
    out.print(f"[bold green]wrote[/] {folder}: {', '.join(result.kinds)}")
    built = "  (build it from the Dockerfile, then push)" if result.dockerfile else ""
    out.print(f"  image   {escape(result.image)}{built}")
    out.print(f"  secret  create it first: see {folder}/secret.example.yaml")
    if options.autoscaler == "hpa":
        out.print(f"  adapter add {folder}/prometheus-adapter-rules.yaml to prometheus-adapter's rules")
    out.print(f"  apply   kubectl apply -k {folder}")
    return 0
