"""The store as a fault domain (#35; the guarantees are written in docs/design.md): publishes that race, a
publish killed at several points, and a store that cannot be reached, hangs (SIGSTOP) or goes away (SIGKILL)
while a real tritonserver serves from it. Every store here is a real moto server: the session's, or one
started by the test in a process of its own (`own_s3_store`)."""
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tritonize.model_repository.contents import read_local_repository
from tritonize.model_repository.publish import carry_out, plan_publish, publish
from tritonize.model_repository.store import StoreConflict, parse_s3_url


def _whole_versions(client, url) -> dict[str, dict[str, str]]:
    """model -> {number: digest} as the store's index names them, after checking that every version it
    names is whole: each file there, with the recorded size and the SHA-256 of its bytes."""
    location = parse_s3_url(url)
    index = json.loads(client.get_object(Bucket=location.bucket, Key=location.key("repository.json"))["Body"].read())
    named = {}
    for model, entry in index["models"].items():
        for number, record in entry["versions"].items():
            for rel, f in record["files"].items():
                body = client.get_object(Bucket=location.bucket, Key=location.key(model, number, rel))["Body"].read()
                assert (len(body), hashlib.sha256(body).hexdigest()) == (f["bytes"], f["sha256"]), (model, number, rel)
        assert entry["latest"] == max(map(int, entry["versions"]))
        named[model] = {n: r["sha256"] for n, r in entry["versions"].items()}
    return named


def _digest(repo) -> str:
    return read_local_repository(repo)[0].versions[0].digest


def _second_model(repo, name="mlpb"):
    """The repository with a copy of its MLP under another name: two models to publish."""
    shutil.copytree(repo / "mlp", repo / name)
    config = repo / name / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "mlp"', f'name: "{name}"'))
    index = json.loads((repo / "repository.json").read_text())
    index["models"][name] = index["models"]["mlp"]
    (repo / "repository.json").write_text(json.dumps(index))


def test_of_two_publishes_that_chose_one_number_one_gets_it_and_the_other_uploads_nothing(
        s3_env, repo, url, change_model_file, tmp_path):
    publish(repo, url)
    other = shutil.copytree(repo, tmp_path / "other")
    change_model_file(repo)
    change_model_file(other)
    late = plan_publish(other, url)  # it listed the store: version 2 looked free
    publish(repo, url)  # and this publish took it meanwhile
    before = _whole_versions(s3_env.client(), url)
    with pytest.raises(StoreConflict, match=r"claiming version 2 of model 'mlp'.*claimed by another publish.*nothing "
                                            r"of this publish was uploaded: publish again"):
        carry_out(late)
    assert _whole_versions(s3_env.client(), url) == before  # version 2 is the first publish's, whole
    assert publish(other, url).rows[0].version == "3"  # publishing again goes above it


def test_a_publish_that_lost_the_index_race_adds_its_versions_to_the_newer_index(s3_env, repo, url, change_model_file,
                                                                                 tmp_path):
    _second_model(repo)
    publish(repo, url)
    other = shutil.copytree(repo, tmp_path / "other")
    change_model_file(repo, "mlp")
    change_model_file(other, "mlpb")
    late = plan_publish(other, url)  # read the index before the next publish rewrote it
    publish(repo, url)
    carry_out(late)  # its conditional index write fails once; it reads the index again and adds to it
    named = _whole_versions(s3_env.client(), url)
    assert {m: sorted(v) for m, v in named.items()} == {"mlp": ["1", "2"], "mlpb": ["1", "2"]}


def test_publishes_racing_for_real_never_share_a_version_and_the_index_names_only_whole_ones(
        s3_env, repo, url, change_model_file, tmp_path):
    publish(repo, url)
    racers = []
    for i in range(4):
        copy = shutil.copytree(repo, tmp_path / f"racer{i}")
        change_model_file(copy)
        racers.append(copy)
    start, outcomes = threading.Barrier(len(racers)), [None] * len(racers)

    def race(i):
        start.wait()
        try:
            outcomes[i] = publish(racers[i], url).rows[0].version
        except StoreConflict as e:  # lost a claim, or the index INDEX_ATTEMPTS times
            outcomes[i] = e

    threads = [threading.Thread(target=race, args=(i,)) for i in range(len(racers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    won = [o for o in outcomes if isinstance(o, str)]
    assert won and len(won) == len(set(won)), outcomes  # one winner per number, at least one
    named = _whole_versions(s3_env.client(), url)["mlp"]
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, str):  # each winner's number holds its own content
            assert named[outcome] == _digest(racers[i]), (i, outcomes)


# Each point is an event of the killed publish's progress: (event, the file's name, which change the
# publish carries). "start" of the first file: its numbers claimed, nothing uploaded; "sent" during the
# first file; "end" of its last version file: every version file up, the index not; "end" of config.pbtxt
# when the config changed too: everything up but the index.
KILL_POINTS = [("start", "model.onnx", "model"), ("sent", "model.onnx", "model"),
               ("end", "request_batching.py", "model"), ("end", "config.pbtxt", "model+config")]
_KILLED_PUBLISH = """
import os, signal, sys
from pathlib import Path
from tritonize.model_repository.contents import read_local_repository
from tritonize.model_repository.publish import publish
event, name = sys.argv[3], sys.argv[4]

class KillAt:
    key = ""
    def start_file(self, key, size):
        self.key = key
        self.maybe("start")
    def sent(self, nbytes):
        self.maybe("sent")
    def end_file(self, key):
        self.maybe("end")
    def maybe(self, happened):
        if happened == event and self.key.endswith("/" + name):
            os.kill(os.getpid(), signal.SIGKILL)

publish(Path(sys.argv[1]), sys.argv[2], progress=KillAt())
"""


def test_a_publish_killed_at_any_point_leaves_an_index_of_whole_versions_and_the_next_publish_completes(
        s3_env, repo, url, change_model_file):
    publish(repo, url)
    client = s3_env.client()
    for event, name, change in KILL_POINTS:
        change_model_file(repo)
        if change == "model+config":
            config = repo / "mlp" / "config.pbtxt"
            config.write_text(config.read_text() + f"# {uuid.uuid4()}\n")
        before = _whole_versions(client, url)
        killed = subprocess.run([sys.executable, "-P", "-c", _KILLED_PUBLISH, str(repo), url, event, name],
                                capture_output=True, text=True, timeout=120)
        assert killed.returncode == -signal.SIGKILL, (event, name, killed.stderr)
        assert _whole_versions(client, url) == before, (event, name)  # the killed version is not named
        result = publish(repo, url)  # the next publish completes, above the killed one's number
        top = max(map(int, before["mlp"]))
        assert int(result.rows[0].version) == top + 2 and result.index_written, (event, name)
        assert _whole_versions(client, url)["mlp"][result.rows[0].version] == _digest(repo), (event, name)


@pytest.mark.parametrize("fault", ["stopped", "paused"])
def test_serve_on_a_store_that_cannot_be_reached_is_one_line_and_exit_2_within_seconds(
        own_s3_store, repo, fault, capsys):
    """Refused connections (stopped) fail at once; accepted and never answered (paused), after two 5 s
    waits: either way before any tritonserver starts, so none reports ready with nothing loaded."""
    from tritonize.cli.main import main

    url = f"s3://{own_s3_store.store.bucket}/models"
    publish(repo, url)  # the store holds a repository: only the fault keeps serve from it
    own_s3_store.stop() if fault == "stopped" else own_s3_store.pause()
    started = time.monotonic()
    code = main(["serve", "--repo", url, "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"])
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 2 and took < 15, (code, took, err)
    expected = ("expected a reachable S3 endpoint" if fault == "stopped" else
                "expected an answer, got none within 5 s twice (the endpoint accepts connections but does not answer)")
    assert err.startswith("error: ") and expected in " ".join(err.split()), err
    print(f"\nstore {fault} at start: serve exit {code} in {took:.1f} s")


@pytest.mark.server
def test_served_models_keep_serving_while_the_store_hangs_and_then_goes_away(own_s3_store, repo):
    """A polling server (as the Kubernetes pods run: every 1 s here) on the store, under a steady client:
    the store paused 4 s, resumed, then killed for 4 s. Every request is answered, and right."""
    import numpy as np
    import onnxruntime as ort
    import tritonclient.grpc as grpcclient

    from tritonize.models import get_spec
    from tritonize.serving.server import TritonServer

    url = f"s3://{own_s3_store.store.bucket}/models"
    publish(repo, url)
    spec = get_spec("mlp")
    x = spec.example_inputs(2)
    expected = ort.InferenceSession(str(repo / "mlp" / "1" / "model.onnx")).run(None, x)[0]
    counts, running = {"sent": 0, "failed": 0, "wrong": 0}, threading.Event()
    # A short stop: with the store gone, tritonserver's exit waits ~25 s on its S3 client's retries inside the
    # poll (docs/design.md); stop's SIGKILL after stop_timeout_s bounds it, as it bounds any stop.
    with TritonServer(url, None, model_control="poll", poll_seconds=1, ready_timeout_s=60, drain_s=1,
                      stop_timeout_s=3) as server:
        def load():
            client = grpcclient.InferenceServerClient(server.grpc_url)
            inputs = []
            for name, value in x.items():
                tensor = grpcclient.InferInput(name, list(value.shape), spec.inputs[0].triton_dtype)
                tensor.set_data_from_numpy(value)
                inputs.append(tensor)
            while running.is_set():
                counts["sent"] += 1
                try:
                    got = client.infer("mlp", inputs, client_timeout=10).as_numpy(spec.output_names[0])
                except Exception:  # noqa: BLE001 - every failure counts, whatever its kind
                    counts["failed"] += 1
                    continue
                counts["wrong"] += not np.allclose(got, expected, rtol=1e-5, atol=1e-5)

        running.set()
        thread = threading.Thread(target=load)
        thread.start()
        try:
            time.sleep(1)
            own_s3_store.pause()
            time.sleep(4)
            own_s3_store.resume()
            time.sleep(1)
            own_s3_store.stop()
            time.sleep(4)
        finally:
            running.clear()
            thread.join(timeout=30)
        assert grpcclient.InferenceServerClient(server.grpc_url).is_model_ready("mlp")
    assert counts["sent"] > 50 and counts["failed"] == 0 and counts["wrong"] == 0, counts
    print(f"\nstore paused 4 s, then gone 4 s, under load: {counts}")
