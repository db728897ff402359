"""Bad requests to `tritonize deploy k8s` are refused before anything is written, in one line that names
what was expected and what was given; on the command line they exit 2 without a traceback."""
import pytest

from tritonize.cli.main import main
from tritonize.deploy.options import DeployError, DeployOptions

GOOD = {"repo": "s3://models/prod", "replicas": 2}


@pytest.mark.parametrize("change, expected, given", [
    ({"replicas": 0}, "--replicas: expected a whole number >= 1", "got 0"),
    ({"replicas": 1.5}, "--replicas: expected a whole number >= 1", "got 1.5"),
    ({"repo": "/srv/models"}, "expected s3://BUCKET/PREFIX", "'/srv/models'"),
    ({"repo": "gs://bucket/models"}, "expected s3://BUCKET/PREFIX", "'gs://bucket/models'"),
    ({"repo": "s3://Bad_Bucket/models"}, "bucket name of 3-63 lowercase", "'Bad_Bucket'"),
    ({"repo": "s3://127.0.0.1:9000/models/prod"}, "the endpoint comes from --endpoint-url", "127.0.0.1:9000"),
    ({"endpoint_url": "ftp://minio:21"}, "expected http://HOST[:PORT]", "'ftp://minio:21'"),
    ({"target": "tpu"}, "--target: expected one of cpu, gpu", "got 'tpu'"),
    ({"autoscaler": "vpa"}, "--autoscaler: expected one of hpa, keda, none", "got 'vpa'"),
    ({"model_control": "none"}, "--model-control: expected one of explicit, poll", "got 'none'"),
    ({"name": "Triton_1"}, "--name: expected a DNS-1035 label", "got 'Triton_1'"),
    ({"name": "x" * 41}, "at most 40 characters", "got 'xxxx"),
    ({"namespace": "ML"}, "--namespace: expected a DNS-1123 label", "got 'ML'"),
    ({"max_replicas": 1}, "--max-replicas: expected a whole number >= 2 (at least --replicas 2)", "got 1"),
    ({"target_queue_ms": 0}, "--target-queue-ms: expected a number of milliseconds above 0", "got 0"),
    ({"target_queue_ms": float("nan")}, "--target-queue-ms: expected a number of milliseconds above 0", "got nan"),
    ({"memory": "4 GB"}, "--memory: expected a size like 4Gi", "got '4 GB'"),
    ({"memory": "500m"}, "--memory: expected a size like 4Gi", "got '500m'"),
    ({"cpu": "two"}, "--cpu: expected a CPU count like 2", "got 'two'"),
    ({"shm_size": "4Gi"}, "--shm-size: expected less than the memory limit 4Gi", "got 4Gi"),
    ({"gpus": 2}, "--gpus: expected it only with --target gpu", "got --gpus 2 with --target cpu"),
    ({"target": "gpu", "gpus": 0}, "--gpus: expected a whole number >= 1", "got 0"),
    ({"models": ("mlp", "a b")}, "--models: expected model names of letters", "got 'a b'"),
    ({"models": ("mlp",), "model_control": "poll"}, "--models: expected no model list with --model-control poll",
     "got mlp"),
    ({"autoscaler": "keda", "prometheus_url": "prometheus:9090"}, "--prometheus-url: expected http(s)://",
     "got 'prometheus:9090'"),
    ({"drain_seconds": 0}, "--drain-seconds: expected a whole number >= 1", "got 0"),
    ({"image": "my image"}, "--image: expected an image reference", "got 'my image'"),
])
def test_bad_options_are_refused_in_one_line(change, expected, given):
    with pytest.raises(DeployError) as err:
        DeployOptions(**{**GOOD, **change})
    message = str(err.value)
    assert expected in message and given in message and "\n" not in message
    assert isinstance(err.value, ValueError)  # so the CLI shows it as a user error, exit 2


@pytest.mark.parametrize("argv, expected", [
    (["--replicas", "0"], "--replicas: expected a whole number >= 1, got 0"),
    (["--repo", "http://bucket/models"], "expected s3://BUCKET/PREFIX"),
    (["--target", "tpu"], "--target: expected one of cpu, gpu, got 'tpu'"),
])
def test_the_cli_exits_2_with_the_message_and_writes_nothing(argv, expected, tmp_path, capsys):
    out = tmp_path / "k8s"
    args = dict(zip(["--repo", "--replicas", "--target"], ["s3://models/prod", "2", "cpu"]))
    args.update(dict(zip(argv[::2], argv[1::2])))
    assert main(["deploy", "k8s", "--out", str(out), *[x for kv in args.items() for x in kv]]) == 2
    err = capsys.readouterr().err
    assert expected in " ".join(err.split()) and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_folder_tritonize_did_not_write_is_refused_and_left_as_it_was(tmp_path, capsys):
    mine = tmp_path / "k8s"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    assert main(["deploy", "k8s", "--repo", "s3://models/prod", "--replicas", "1", "--out", str(mine)]) == 2
    assert "no deploy.json" in " ".join(capsys.readouterr().err.split())
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]
