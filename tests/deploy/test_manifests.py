"""The kustomize base `tritonize deploy k8s` writes: rendered by kustomize itself, every built-in object
checked against Kubernetes' own schemas (kubernetes-validate, strict, a pinned version), and the
relations between the objects (selectors, port names, secret keys, the autoscaler's target) checked here."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tritonize.cli.main import main
from tritonize.deploy import autoscaling
from tritonize.deploy.image import RUNNER_REQUIREMENTS, base_image
from tritonize.deploy.k8s import MARKER, write_k8s
from tritonize.deploy.options import DeployOptions
from tritonize.serving.admin import ADMIN_KEY_ENV
from tritonize.serving.config import MEMORY_BOUND_ENV

# The oldest Kubernetes these manifests are for (PDB unhealthyPodEvictionPolicy is on by default there).
K8S_VERSION = "1.30.0"
ROOT = Path(__file__).parents[2]
BASE = {"repo": "s3://models/prod", "replicas": 2}
CASES = {
    "cpu-hpa": ({}, ["Deployment", "Service", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]),
    "gpu-keda": ({"target": "gpu", "autoscaler": "keda", "namespace": "ml", "gpus": 2, "model_control": "poll",
                  "endpoint_url": "https://minio.storage:9000"},
                 ["Deployment", "Service", "Service", "PodDisruptionBudget", "ScaledObject"]),
    "cpu-fixed": ({"autoscaler": "none", "models": ("mlp", "cnn")},
                  ["Deployment", "Service", "Service", "PodDisruptionBudget"]),
    "kserve-cpu-hpa": ({"kserve": True, "endpoint_url": "http://minio.storage:9000"},
                       ["ServingRuntime", "ServiceAccount", "InferenceService", "Service", "PodDisruptionBudget",
                        "HorizontalPodAutoscaler"]),
    "kserve-gpu-keda": ({"kserve": True, "target": "gpu", "autoscaler": "keda"},
                        ["ServingRuntime", "ServiceAccount", "InferenceService", "Service", "PodDisruptionBudget",
                         "ScaledObject"]),
}
CRDS = {"ServingRuntime": "serving.kserve.io/v1alpha1", "InferenceService": "serving.kserve.io/v1beta1",
        "ScaledObject": "keda.sh/v1alpha1"}


_RENDERED = {}


def _render(case, tmp_path_factory):
    """(options, folder, rendered objects by kind, expected kinds) for one case, written and rendered once."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed: the base is rendered with `kubectl kustomize`")
    if case not in _RENDERED:
        change, kinds = CASES[case]
        options = DeployOptions(**{**BASE, **change})
        out = tmp_path_factory.mktemp(case) / "k8s"
        write_k8s(options, out)
        proc = subprocess.run(["kubectl", "kustomize", str(out)], capture_output=True, text=True, timeout=60,
                              check=False)
        assert proc.returncode == 0, proc.stderr
        by_kind = {}
        for d in yaml.safe_load_all(proc.stdout):
            if d:
                by_kind.setdefault(d["kind"], []).append(d)
        _RENDERED[case] = (options, out, by_kind, kinds)
    return _RENDERED[case]


@pytest.fixture(params=sorted(CASES))
def base(request, tmp_path_factory):
    return _render(request.param, tmp_path_factory)


def _validate(obj):
    kv = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is a test dependency")
    kv.validate(obj, K8S_VERSION, strict=True)


def _as_pod(spec: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "check"}, "spec": spec}


def test_kustomize_renders_the_expected_kinds_and_each_is_valid(base):
    options, out, by_kind, kinds = base
    assert sorted(k for k, objs in by_kind.items() for _ in objs) == sorted(kinds)
    for kind, objs in by_kind.items():
        for obj in objs:
            if kind in CRDS:  # custom resources have no schema in kubernetes-validate; checked below
                assert obj["apiVersion"] == CRDS[kind]
            else:
                _validate(obj)
            assert obj["metadata"].get("namespace") == options.namespace
    # Not applied, but shaped as a real Secret, and listed nowhere in kustomization.yaml.
    secret = yaml.safe_load((out / "secret.example.yaml").read_text())
    _validate(secret)
    kustomization = yaml.safe_load((out / "kustomization.yaml").read_text())
    assert "secret.example.yaml" not in kustomization["resources"]
    assert json.loads((out / MARKER).read_text())["applied"] == kustomization["resources"]


def _workload(by_kind):
    """(pod spec, container, pod labels) of what runs tritonserver, a Deployment or KServe's runtime."""
    if "Deployment" in by_kind:
        (d,) = by_kind["Deployment"]
        pod = d["spec"]["template"]["spec"]
        return pod, pod["containers"][0], d["spec"]["template"]["metadata"]["labels"]
    (runtime,) = by_kind["ServingRuntime"]
    (isvc,) = by_kind["InferenceService"]
    predictor = isvc["spec"]["predictor"]
    container = {**runtime["spec"]["containers"][0], "resources": predictor["triton"]["resources"]}
    pod = {k: v for k, v in predictor.items() if k not in ("triton", "minReplicas", "maxReplicas")}
    pod.update(containers=[container], volumes=runtime["spec"]["volumes"],
               **{k: runtime["spec"][k] for k in ("tolerations",) if k in runtime["spec"]})
    return pod, container, {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"], "component": "predictor"}


def test_the_server_container(base):
    options, out, by_kind, _ = base
    pod, c, _ = _workload(by_kind)
    _validate(_as_pod(pod))  # KServe's runtime container and predictor pod fields too, as a Pod
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == ({"http": 8080, "grpc": 9000, "metrics": 8002} if options.kserve else
                     {"http": 8000, "grpc": 8001, "metrics": 8002})
    args = c["args"]
    assert args[0] == "tritonserver"
    assert f"--model-repository={'/mnt/models' if options.kserve else options.triton_url}" in args
    assert {f"--{k}-port={v}" for k, v in ports.items()} <= set(args)
    assert "--strict-readiness=true" in args and f"--exit-timeout-secs={options.drain_seconds}" in args
    loads = [a for a in args if a.startswith("--load-model=")]
    assert f"--model-control-mode={options.model_control}" in args
    if options.model_control == "poll":  # a polling server loads all it finds, and looks again
        assert not loads and f"--repository-poll-secs={options.poll_seconds}" in args
    else:
        assert loads == ([f"--load-model={m}" for m in options.models] or ["--load-model=*"])
    # Probes on the HTTP port: ready for startup and readiness, live for liveness; startup long enough to load.
    for probe, path in (("startupProbe", "/v2/health/ready"), ("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= options.startup_seconds
    # Every $(VAR) in the args is defined in the container's env, or the kubelet would pass it literally.
    env = {e["name"]: e for e in c["env"]}
    for var in re.findall(r"\$\((\w+)\)", " ".join(args)):
        assert var in env
    expected_env = {ADMIN_KEY_ENV} | (set() if options.kserve else
                                      {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"})
    assert set(env) == expected_env | set(MEMORY_BOUND_ENV)
    assert all(env[k]["value"] == v for k, v in MEMORY_BOUND_ENV.items())  # as TritonServer gives them locally
    secret = yaml.safe_load((out / "secret.example.yaml").read_text())
    for e in (env[k] for k in expected_env):
        ref = e["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"]
    assert all(v == "" for k, v in secret["stringData"].items() if k != "AWS_DEFAULT_REGION")  # never a real secret


def test_security_and_scratch_space(base):
    options, _, by_kind, _ = base
    pod, c, _ = _workload(by_kind)
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["seccompProfile"] == {"type": "RuntimeDefault"}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": options.shm_size}
    assert volumes[mounts["/tmp"]]["emptyDir"] == {"sizeLimit": options.tmp_size}
    res = c["resources"]
    assert res["requests"] == {k: v for k, v in res["limits"].items() if k != "nvidia.com/gpu"}
    if options.target == "gpu":
        assert res["limits"]["nvidia.com/gpu"] == str(options.gpus or 1) and c["image"] == base_image()
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    else:
        assert "nvidia.com/gpu" not in res["limits"]


def test_shutdown_outlasts_the_prestop_sleep_and_the_drain(base):
    options, _, by_kind, _ = base
    pod, c, _ = _workload(by_kind)
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", str(options.prestop_seconds)]
    assert pod["terminationGracePeriodSeconds"] > options.prestop_seconds + options.drain_seconds


def test_services_pdb_and_autoscaler_point_at_the_server_pods(base):
    options, out, by_kind, _ = base
    _, c, pod_labels = _workload(by_kind)
    port_names = {p["name"] for p in c["ports"]}
    for svc in by_kind.get("Service", []):
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    if by_kind.get("Service"):
        grpc = next(s for s in by_kind["Service"] if s["metadata"]["name"].endswith("-grpc"))
        assert grpc["spec"]["clusterIP"] == "None"  # headless: clients see every pod
    (pdb,) = by_kind["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    deployment = f"{options.name}-predictor" if options.kserve else options.name
    if "Deployment" in by_kind:
        assert ("replicas" in by_kind["Deployment"][0]["spec"]) == (options.autoscaler == "none")
    if options.autoscaler == "hpa":
        (hpa,) = by_kind["HorizontalPodAutoscaler"]
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment
        assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (options.replicas, options.replicas_max)
        (metric,) = hpa["spec"]["metrics"]
        (rule,) = yaml.safe_load((out / "prometheus-adapter-rules.yaml").read_text())["rules"]
        assert metric["pods"]["metric"]["name"] == rule["name"]["as"]
        assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": str(options.queue_target_us)}
        query = rule["metricsQuery"]
        queue, success = query.index("nv_inference_queue_duration_us"), query.index("nv_inference_request_success")
        assert queue < query.index(") / ") < success
        assert "rate(nv_inference_queue_duration_us" in (out / "hpa.yaml").read_text()  # the formula, commented
    if options.autoscaler == "keda":
        (so,) = by_kind["ScaledObject"]
        spec = so["spec"]
        assert spec["scaleTargetRef"]["name"] == deployment and spec["minReplicaCount"] == options.replicas
        (trigger,) = spec["triggers"]
        # KEDA's CRD: type and metadata (string values only) required, metricType Value or AverageValue.
        assert trigger["type"] == "prometheus" and trigger["metricType"] == "Value"
        assert all(isinstance(v, str) for v in trigger["metadata"].values())
        meta = trigger["metadata"]
        assert meta["threshold"] == str(options.queue_target_us) and meta["serverAddress"] == options.prometheus_url
        assert f'namespace="{options.namespace or "default"}"' in meta["query"]
        assert f'pod=~"{deployment}-' in meta["query"]


@pytest.mark.parametrize("case", sorted(c for c in CASES if c.startswith("kserve")))
def test_kserve_objects(case, tmp_path_factory):
    options, out, by_kind, _ = _render(case, tmp_path_factory)
    (runtime,) = by_kind["ServingRuntime"]
    (isvc,) = by_kind["InferenceService"]
    (sa,) = by_kind["ServiceAccount"]
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == "RawDeployment"
    assert annotations["serving.kserve.io/autoscalerClass"] == "external"
    predictor = isvc["spec"]["predictor"]
    assert predictor["triton"]["storageUri"] == options.repo and "runtimeVersion" not in predictor["triton"]
    assert predictor["serviceAccountName"] == sa["metadata"]["name"]
    formats = runtime["spec"]["supportedModelFormats"]
    assert {"name": "triton", "version": "2", "autoSelect": True, "priority": 2} in formats
    assert runtime["spec"]["containers"][0]["name"] == "kserve-container"
    secret = yaml.safe_load((out / "secret.example.yaml").read_text())
    assert sa["secrets"] == [{"name": secret["metadata"]["name"]}]
    if options.endpoint_url:
        assert secret["metadata"]["annotations"]["serving.kserve.io/s3-endpoint"] == "minio.storage:9000"
        assert secret["metadata"]["annotations"]["serving.kserve.io/s3-usehttps"] == "0"


def test_the_cpu_image_adds_what_the_runners_import_in_the_ranges_pyproject_gives(tmp_path):
    write_k8s(DeployOptions(**BASE), tmp_path / "k8s")
    text = (tmp_path / "k8s" / "Dockerfile").read_text()
    assert f"FROM {base_image()}" in text
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11's tomllib")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for requirement in RUNNER_REQUIREMENTS:
        assert requirement in deps and f'"{requirement}"' in text
    # The runners import nothing else outside the standard library and Triton's own module.
    allowed = {"json", "os", "time", "importlib", "numpy", "onnxruntime", "tokenizers", "triton_python_backend_utils",
               "request_batching", "tritonize"}
    runners = ROOT / "model_repository" / "backends"
    # The runners, and models/tokenization.py, which a repository copies beside the tokenizer runner.
    for path in [runners / name / "model.py" for name in ("onnxruntime", "tokenizer", "noop")] + [
            runners / "request_batching.py", ROOT / "models" / "tokenization.py"]:
        imported = set(re.findall(r"^\s*(?:import|from) (\w+)", path.read_text(), re.MULTILINE))
        assert imported <= allowed | {"__future__"}, (path, imported - allowed)
    # With --image the Dockerfile is not needed, and not written.
    write_k8s(DeployOptions(**BASE, image="registry.example/triton:1"), tmp_path / "own")
    assert not (tmp_path / "own" / "Dockerfile").exists()


def test_rewriting_replaces_the_whole_folder_and_leaves_nothing_beside_it(tmp_path):
    out = tmp_path / "k8s"
    write_k8s(DeployOptions(**BASE, autoscaler="keda"), out)
    assert (out / "scaledobject.yaml").exists()
    result = write_k8s(DeployOptions(**BASE), out)
    assert not (out / "scaledobject.yaml").exists() and (out / "hpa.yaml").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(result.files)
    assert [p.name for p in tmp_path.iterdir()] == ["k8s"]  # no temporary or old folder left


def test_the_cli_writes_the_base(tmp_path, capsys):
    out = tmp_path / "k8s"
    assert main(["deploy", "k8s", "--repo", "s3://models/prod", "--replicas", "3", "--target", "gpu",
                 "--autoscaler", "keda", "--target-queue-ms", "2.5", "--out", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "Deployment, Service, Service, PodDisruptionBudget, ScaledObject" in printed
    so = yaml.safe_load((out / "scaledobject.yaml").read_text())
    assert so["spec"]["triggers"][0]["metadata"]["threshold"] == "2500"
    assert autoscaling.QUEUE_METRIC in so["spec"]["triggers"][0]["metadata"]["query"]


def test_deploy_help_loads_no_stage():
    heavy = ("torch", "onnxruntime", "onnx", "tritonclient", "numpy", "yaml", "boto3")
    code = ("import sys\nfrom tritonize.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-P", "-c", code, "deploy", "k8s", "--help"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "--target-queue-ms" in proc.stdout and proc.stdout.strip().splitlines()[-1] == "[]"
