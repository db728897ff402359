"""tritonize top: each replica's share and queue time from its own Prometheus metrics, on real servers."""
import json

import numpy as np
import pytest

from tritonize.cli import main
from tritonize.client import TritonClient
from tritonize.serving.replica_metrics import MetricsError, read_counters, read_endpoints, window
from tritonize.serving.replicas import Replicas

pytestmark = pytest.mark.server


def test_top_shows_what_each_replica_answered(cpu_repository, tmp_path, capsys):
    x = {"x": np.zeros((1, 784), np.float32)}
    with Replicas(cpu_repository, 2, ["mlp"], health_interval_s=0) as replicas:
        endpoints_file = replicas.write_endpoints_file(tmp_path / "endpoints.json")
        endpoints = read_endpoints(endpoints_file)
        before = [read_counters(e["metrics"], "mlp") for e in endpoints]
        with TritonClient([e["grpc"] for e in endpoints]) as client:
            for _ in range(40):  # round-robin: 20 each
                client.infer("mlp", x)
            # Triton books a request just after answering it.
            for _ in range(50):
                after = [read_counters(e["metrics"], "mlp") for e in endpoints]
                if sum(a.success - b.success for a, b in zip(after, before)) >= 40:
                    break
        loads = window(endpoints, before, after)
        assert [load.requests for load in loads] == [20, 20]
        assert [load.share for load in loads] == [0.5, 0.5] and all(load.failures == 0 for load in loads)
        assert all(load.avg_queue_ms >= 0 for load in loads)

        assert main(["top", "--endpoints", str(endpoints_file), "--model", "mlp", "--interval", "0.2",
                     "--count", "1"]) == 0
        shown = capsys.readouterr().out
        assert all(e["grpc"] in shown for e in endpoints)


def test_a_bad_endpoints_file_is_refused_with_the_reason(tmp_path, capsys):
    (tmp_path / "e.json").write_text(json.dumps([{"grpc": "127.0.0.1:1"}]))
    with pytest.raises(MetricsError, match="expected a JSON list of objects with 'grpc' and 'metrics'"):
        read_endpoints(tmp_path / "e.json")
    assert main(["top", "--endpoints", str(tmp_path / "missing.json"), "--count", "1"]) == 2
    assert "expected an endpoints file" in capsys.readouterr().err
    with pytest.raises(MetricsError, match="could not read the metrics of http://127.0.0.1:9/metrics"):
        read_counters("http://127.0.0.1:9/metrics", timeout_s=1)
