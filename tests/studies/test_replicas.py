"""studies/replicas.py: 1 replica against 2, side by side, on the real server."""
import json

import pytest

from tritonize.studies.replicas import main

pytestmark = pytest.mark.server


def test_one_and_two_replicas_are_measured_side_by_side(cpu_repository, tmp_path):
    out = tmp_path / "report"
    assert main(["--repository", str(cpu_repository), "--model", "mlp", "--duration", "0.5", "--rounds", "1",
                 "--concurrency", "2", "--out", str(out)]) == 0
    runs = json.loads((out / "replicas.json").read_text())["runs"]
    assert [r["replicas"] for r in runs] == [1, 2]
    for r in runs:
        assert r["errors"] == 0 and r["sent"] > 0 and r["throughput_rps"] > 0
        assert r["cores_busy"] and all(0.0 <= v <= 1.0 for v in r["cores_busy"].values())
    text = (out / "replicas.md").read_text()
    assert "relative to one replica: 1: 1.00x, 2: " in text
