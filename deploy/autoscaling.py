"""Scaling the replicas on Triton's own measure of overload: the average time a request waits in the queue.

    queue time per request (us) = rate(nv_inference_queue_duration_us[1m]) / rate(nv_inference_request_success[1m])

Both are counters Triton exports per model on its metrics port: the first sums the microseconds requests
spent queued, the second counts the requests that succeeded. Their rates' ratio is the mean queue time of
the last minute's requests. It grows as soon as the instances cannot keep up, before latency percentiles
or CPU load say so (CPU is busy at any load under a spinning runtime, and idle on a GPU server whose GPU
is the bottleneck). The window is 1m: at least four scrapes at the common 15 s interval.

Two ways to feed it to the HorizontalPodAutoscaler:
- `hpa`: prometheus-adapter serves it per pod in the custom metrics API (the rule below, which goes into
  the adapter's configuration); the HPA (autoscaling/v2, a Pods metric) averages it over the pods.
- `keda`: a KEDA ScaledObject queries Prometheus itself, for the whole Deployment at once; KEDA then
  creates and owns the HPA.
"""
from __future__ import annotations

from .options import DeployOptions
from .workload import metadata

QUEUE_METRIC = "nv_inference_queue_duration_us"
SUCCESS_METRIC = "nv_inference_request_success"
# The name the custom metrics API serves the ratio under (the HPA asks for it by this name).
HPA_METRIC = "tritonize_queue_us_per_request"
WINDOW = "1m"
# The denominator's floor, in requests per second: an idle server (no requests, no queue time) reads 0
# rather than 0/0, which Prometheus returns as NaN and the autoscalers cannot use.
MIN_RATE = "0.001"


def ratio_query(queue_selector: str, success_selector: str, by: str = "") -> str:
    group = f" by ({by})" if by else ""
    return (f"sum{group} (rate({QUEUE_METRIC}{{{queue_selector}}}[{WINDOW}]))"
            f" / clamp_min(sum{group} (rate({SUCCESS_METRIC}{{{success_selector}}}[{WINDOW}])), {MIN_RATE})")


def header(options: DeployOptions) -> str:
    return (f"{__doc__.strip()}\n\nTarget: {options.target_queue_ms:g} ms = {options.queue_target_us} us per request "
            f"(--target-queue-ms); replicas {options.replicas}..{options.replicas_max}.\nKeep the target above the "
            "dynamic batcher's max_queue_delay_microseconds, which adds queue time on purpose.")


def _behavior() -> dict:
    # Up fast: a new pod takes a while to fetch and load its models, so waiting longer only lengthens the
    # overload. Down slowly, one pod at a time: the metric drops as soon as replicas were added, and every
    # removal drains a pod whose clients must move over.
    return {"scaleUp": {"stabilizationWindowSeconds": 0,
                        "policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}]},
            "scaleDown": {"stabilizationWindowSeconds": 300,
                          "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}}


def hpa(options: DeployOptions, target: str) -> dict:
    return {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": metadata(options, options.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            "minReplicas": options.replicas, "maxReplicas": options.replicas_max,
            "metrics": [{"type": "Pods", "pods": {"metric": {"name": HPA_METRIC},
                                                  "target": {"type": "AverageValue",
                                                             "averageValue": str(options.queue_target_us)}}}],
            "behavior": _behavior(),
        },
    }


def adapter_rules() -> dict:
    """prometheus-adapter's configuration (its --config file, or the Helm chart's `rules.custom` list):
    per pod, the ratio above. The adapter fills in the namespace and pod matchers of the HPA's pods."""
    return {"rules": [{
        "seriesQuery": f'{QUEUE_METRIC}{{namespace!="",pod!=""}}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": f"^{QUEUE_METRIC}$", "as": HPA_METRIC},
        "metricsQuery": ratio_query("<<.LabelMatchers>>", "<<.LabelMatchers>>", by="<<.GroupBy>>"),
    }]}


def adapter_help() -> str:
    return ("Not a Kubernetes object, and not in kustomization.yaml: these rules belong in prometheus-adapter's\n"
            "own configuration, beside the rules it has (its ConfigMap's config.yaml `rules:` list, or with the\n"
            "prometheus-community Helm chart, the `rules.custom` list of its values). Prometheus must label the\n"
            "series with `namespace` and `pod`, as its kubernetes-pods scrape job does for pods annotated\n"
            "prometheus.io/scrape. Check with:\n"
            f"  kubectl get --raw /apis/custom.metrics.k8s.io/v1beta1/namespaces/NAMESPACE/pods/*/{HPA_METRIC}")


def scaled_object(options: DeployOptions, target: str) -> dict:
    # One value for the whole Deployment, compared as is (metricType Value): the HPA then wants
    # ceil(replicas x value / target). AverageValue would divide the value by the replica count, which is
    # right for a total (requests per second), wrong for an average like this one.
    namespace = options.namespace or "default"
    pods = f'namespace="{namespace}",pod=~"{target}-[a-z0-9]+-[a-z0-9]+"'
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": metadata(options, options.name),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
            # Never to zero: an idle server has no queue to measure, and clients need a server to connect to.
            "minReplicaCount": options.replicas, "maxReplicaCount": options.replicas_max,
            "pollingInterval": 15,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": _behavior()}},
            "triggers": [{"type": "prometheus", "metricType": "Value", "metadata": {
                "serverAddress": options.prometheus_url,
                "query": ratio_query(pods, pods),
                "threshold": str(options.queue_target_us),
                # Prometheus without the series (no pod scraped yet) is an error, not a reason to scale down.
                "ignoreNullValues": "false",
            }}],
        },
    }
