"""The load balance across replicas, from each replica's own Prometheus metrics (`tritonize top`).

Each tritonserver counts its answered requests (`nv_inference_request_success`), its failures
(`nv_inference_request_failure`) and the time its requests spent queued (`nv_inference_queue_duration_us`,
cumulative microseconds) on its metrics port, which is not behind the admin key. Two reads a window
apart give each replica's share of the requests in that window and its average queue time per request:
the quantity the Kubernetes autoscaler in deploy/autoscaling.py scales on, so what `top` shows locally is
what would drive the replica count in a cluster.
"""
from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .endpoints_file import EndpointsFileError
from .endpoints_file import read_endpoints as read_endpoints_file

COUNTERS = {"nv_inference_request_success": "success", "nv_inference_request_failure": "failure",
            "nv_inference_queue_duration_us": "queue_us"}


class MetricsError(ValueError):
    """A replica's metrics could not be read or an endpoints file is not one; says which and why."""


@dataclass(frozen=True)
class Counters:
    """Cumulative counts of one replica (all models, or one), as read at one moment."""
    success: float = 0.0
    failure: float = 0.0
    queue_us: float = 0.0


@dataclass(frozen=True)
class ReplicaLoad:
    """One replica over a window."""
    grpc: str
    requests: int  # answered in the window
    failures: int
    share: float  # of all replicas' answered requests in the window
    avg_queue_ms: float  # queue time per answered request (NaN when none was answered)


def read_endpoints(path: str | Path) -> list[dict]:
    """The replicas of an endpoints file (`tritonize serve --replicas N --endpoints-file F`): grpc and metrics."""
    try:
        text = Path(path).read_text()
    except (OSError, ValueError) as e:
        raise MetricsError(f"expected an endpoints file (a JSON list that `tritonize serve --endpoints-file` "
                           f"writes), got {path}: {e}") from None
    try:
        return read_endpoints_file(text, required=("grpc", "metrics"))
    except EndpointsFileError as e:
        raise MetricsError(f"expected a JSON list of objects with 'grpc' and 'metrics' in {path}, {e}") from None


def read_counters(metrics_url: str, model: str | None = None, timeout_s: float = 5.0) -> Counters:
    """One replica's cumulative counters, summed over its models (or over `model`'s versions)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout_s) as response:
            text = response.read().decode("utf-8")
    except (OSError, ValueError) as e:
        raise MetricsError(f"could not read the metrics of {metrics_url}: {e}") from None
    sums = dict.fromkeys(COUNTERS.values(), 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            field = COUNTERS.get(sample.name) or COUNTERS.get(sample.name.removesuffix("_total"))
            if field and (model is None or sample.labels.get("model") == model):
                sums[field] += sample.value
    return Counters(**sums)


def window(endpoints: list[dict], before: list[Counters], after: list[Counters]) -> list[ReplicaLoad]:
    """Each replica's load between two reads (a replica restarted in between starts again from 0)."""
    deltas = []
    for b, a in zip(before, after):
        restarted = a.success < b.success
        base = Counters() if restarted else b
        deltas.append((a.success - base.success, a.failure - base.failure, a.queue_us - base.queue_us))
    total = sum(d[0] for d in deltas)
    return [ReplicaLoad(e["grpc"], int(ok), int(failed), ok / total if total else 0.0,
                        queue_us / ok / 1000 if ok else float("nan"))
            for e, (ok, failed, queue_us) in zip(endpoints, deltas)]
