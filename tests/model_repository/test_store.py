"""`tritonize publish` against a real S3-compatible store (moto on loopback): keys and bytes as the local
repository has them, versions never overwritten, identical content skipped, bad inputs refused in one line;
and the URL Triton reads the store from, served by the real tritonserver."""
import json
import shutil
import time
from pathlib import Path

import pytest

from tritonize.model_repository.contents import (
    LocalFile,
    LocalVersion,
    RepositoryError,
    assign_versions,
    read_local_repository,
)
from tritonize.model_repository.publish import publish
from tritonize.model_repository.store import StoreError, parse_s3_url, resolve_endpoint, triton_repository_url
from tritonize.serving.server import free_port  # a closed loopback port: an endpoint nobody answers on

LOCAL_FILES = {"config.pbtxt", "1/model.onnx", "1/model.py", "1/request_batching.py"}




def objects(store, url):
    """Key under the prefix -> (bytes, ETag, LastModified)."""
    location = parse_s3_url(url)
    client = store.client()
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=location.prefix + "/"):
        for o in page.get("Contents", []):
            body = client.get_object(Bucket=location.bucket, Key=o["Key"])["Body"].read()
            found[o["Key"][len(location.prefix) + 1:]] = (body, o["ETag"], o["LastModified"])
    return found


def index(store, url):
    return json.loads(objects(store, url)["repository.json"][0])


class Recorder:
    def __init__(self):
        self.keys, self.total = [], 0

    def start_file(self, key, size):
        self.keys.append(key)

    def sent(self, nbytes):
        self.total += nbytes

    def end_file(self, key):
        pass


def test_publish_uploads_every_file_then_the_config_then_the_index(s3_env, repo, url):
    ensemble = repo / "mlp_text"  # an ensemble's version folder is empty: S3 needs an object to show it
    (ensemble / "1").mkdir(parents=True)
    (ensemble / "config.pbtxt").write_text('name: "mlp_text"\nplatform: "ensemble"\n')
    progress = Recorder()
    result = publish(repo, url, progress=progress)

    stored = objects(s3_env, url)
    assert set(stored) == {f"mlp/{f}" for f in LOCAL_FILES} | {"mlp_text/config.pbtxt", "mlp_text/1/",
                                                                 "repository.json", "mlp/1.claim", "mlp_text/1.claim"}
    claim = json.loads(stored["mlp/1.claim"][0])  # who took the number, for whoever finds it
    assert claim["version"] == 1 and claim["sha256"] == read_local_repository(repo)[0].versions[0].digest
    for f in LOCAL_FILES:
        assert stored[f"mlp/{f}"][0] == (repo / "mlp" / f).read_bytes()
    assert progress.keys.index(next(k for k in progress.keys if k.endswith("mlp/config.pbtxt"))) == 3  # after 1/*
    assert progress.total == sum((repo / "mlp" / f).stat().st_size for f in LOCAL_FILES) + len(
        (ensemble / "config.pbtxt").read_bytes())
    assert [(r.model, r.version, r.status) for r in result.rows] == [
        ("mlp", "1", "uploaded"), ("mlp", "config", "uploaded"),
        ("mlp_text", "1", "uploaded"), ("mlp_text", "config", "uploaded")]
    assert result.uploaded_bytes == progress.total and result.index_written
    assert result.triton_url == f"s3://127.0.0.1:{s3_env.port}/{url[len('s3://'):]}"

    recorded = index(s3_env, url)["models"]["mlp"]
    local_index = json.loads((repo / "repository.json").read_text())
    assert recorded["latest"] == 1
    assert recorded["versions"]["1"]["source"] == local_index["models"]["mlp"]
    assert recorded["versions"]["1"]["files"]["model.onnx"]["sha256"] == local_index["models"]["mlp"][
        "artifact_onnx_sha256"]  # fp32: the export itself
    assert recorded["config_sha256"] == recorded["files"]["config.pbtxt"]["sha256"]


def test_publishing_again_unchanged_uploads_nothing(s3_env, repo, url):
    publish(repo, url)
    before = objects(s3_env, url)
    result = publish(repo, url, progress=(progress := Recorder()))
    assert {r.status for r in result.rows} == {"unchanged"}
    assert result.uploaded_bytes == 0 and progress.keys == [] and not result.index_written
    assert objects(s3_env, url) == before  # not even the index was rewritten


def test_a_changed_model_goes_up_as_a_new_version_and_the_live_one_stays(s3_env, repo, url, change_model_file):
    publish(repo, url)
    before = objects(s3_env, url)
    change_model_file(repo)
    result = publish(repo, url)

    assert [(r.version, r.local_version, r.status) for r in result.rows] == [
        ("2", "1", "uploaded"), ("config", "config", "unchanged")]
    after = objects(s3_env, url)
    assert {k: v for k, v in after.items() if k.startswith(("mlp/1/", "mlp/1.claim")) or k == "mlp/config.pbtxt"} == {
        k: v for k, v in before.items() if k != "repository.json"}  # version 1: same bytes, ETags and times
    assert after["mlp/2/model.onnx"][0] == (repo / "mlp" / "1" / "model.onnx").read_bytes()
    assert {k for k in after if k.startswith("mlp/2/")} == {f"mlp/2/{f}" for f in ("model.onnx", "model.py",
                                                                                   "request_batching.py")}
    recorded = index(s3_env, url)["models"]["mlp"]
    assert recorded["latest"] == 2 and set(recorded["versions"]) == {"1", "2"}
    assert recorded["versions"]["2"]["local_version"] == 1
    assert recorded["versions"]["1"]["sha256"] != recorded["versions"]["2"]["sha256"]
    assert publish(repo, url).uploaded_bytes == 0  # and now version 2 is the one it matches


def test_a_claimed_number_is_taken_even_with_nothing_under_it(s3_env, repo, url, change_model_file):
    """A publish killed after its claim, before any file: the next one goes above the claimed number."""
    publish(repo, url)
    location = parse_s3_url(url)
    s3_env.client().put_object(Bucket=location.bucket, Key=location.key("mlp", "2.claim"), Body=b"{}")
    change_model_file(repo)
    assert publish(repo, url).rows[0].version == "3"


def test_a_version_the_index_does_not_know_is_never_overwritten(s3_env, repo, url):
    publish(repo, url)
    location = parse_s3_url(url)
    s3_env.client().put_object(Bucket=location.bucket, Key=location.key("mlp", "2", "model.onnx"), Body=b"not ours")
    result = publish(repo, url)  # local content is version 1's, but the store's latest is an unknown 2
    assert [(r.version, r.status) for r in result.rows][0] == ("3", "uploaded")
    assert objects(s3_env, url)["mlp/2/model.onnx"][0] == b"not ours"


def test_a_config_change_alone_reuploads_only_the_config(s3_env, repo, url):
    publish(repo, url)
    config = repo / "mlp" / "config.pbtxt"
    config.write_text(config.read_text() + "\n# edited\n")
    result = publish(repo, url)
    assert [(r.version, r.status) for r in result.rows] == [("1", "unchanged"), ("config", "uploaded")]
    assert objects(s3_env, url)["mlp/config.pbtxt"][0] == config.read_bytes()


@pytest.mark.parametrize("local, stored, expected", [
    ([1], {}, [(1, False)]),
    ([1], {1: "d1"}, [(1, True)]),
    ([1], {1: "other"}, [(2, False)]),
    ([1], {1: "d1", 2: "other"}, [(3, False)]),  # matches only an older version: goes up again, to be served
    ([1], {1: "d1", 2: None}, [(3, False)]),
    ([5], {1: "other"}, [(5, False)]),  # above every stored number: keeps its own
    ([1, 2], {3: "d1", 4: "d2"}, [(3, True), (4, True)]),
    ([1, 2], {3: "d1", 4: "x"}, [(5, False), (6, False)]),
])
def test_version_numbers(local, stored, expected):
    versions = tuple(LocalVersion(n, (LocalFile(Path("unused"), "model.onnx", 1, f"sha-of-{n}"),)) for n in local)
    digests = {f"d{i + 1}": v.digest for i, v in enumerate(versions)}  # "d1": the first local version's content
    assert assign_versions(versions, {n: digests.get(d, d) for n, d in stored.items()}) == expected


@pytest.mark.parametrize("endpoint, expected", [
    ("http://127.0.0.1:9000", "s3://127.0.0.1:9000/bkt/a/b"),
    ("http://minio.local", "s3://minio.local:80/bkt/a/b"),
    ("https://s3.example.com", "s3://https://s3.example.com:443/bkt/a/b"),
    ("https://s3.example.com:8443/", "s3://https://s3.example.com:8443/bkt/a/b"),
    (None, "s3://bkt/a/b"),
])
def test_triton_repository_url(endpoint, expected):
    env = {"AWS_ENDPOINT_URL": endpoint} if endpoint else {}
    assert triton_repository_url("s3://bkt/a/b/", environ=env) == expected
    assert triton_repository_url("s3://bkt/a/b", endpoint_url=endpoint, environ={}) == expected


def test_the_endpoint_comes_from_the_flag_then_the_s3_variable_then_the_global_one():
    env = {"AWS_ENDPOINT_URL": "http://global:1", "AWS_ENDPOINT_URL_S3": "http://s3only:2"}
    assert triton_repository_url("s3://bkt", environ=env) == "s3://s3only:2/bkt"
    assert triton_repository_url("s3://bkt", "http://flag:3", environ=env) == "s3://flag:3/bkt"
    assert triton_repository_url("s3://bkt", environ={**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}) == "s3://bkt"


@pytest.mark.parametrize("url, message", [
    ("http://bkt/models", "expected s3://BUCKET/PREFIX, got 'http://bkt/models'"),
    ("s3://127.0.0.1:9000/bkt/models", "the endpoint comes from --endpoint-url or AWS_ENDPOINT_URL"),
    ("s3://Bad_Bucket/models", "got bucket 'Bad_Bucket'"),
    ("s3://bkt/a//b", "got '' in"),
    ("s3://bkt/a b", "got 'a b' in"),
])
def test_bad_urls_are_refused(url, message):
    with pytest.raises(StoreError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        parse_s3_url(url)


@pytest.mark.parametrize("endpoint, message", [
    ("ftp://host:21", "expected http://HOST[:PORT] or https://HOST[:PORT], got 'ftp://host:21'"),
    ("http://host:9000/path", "no credentials, path or query"),
    ("http://user:pw@host:9000", "no credentials, path or query"),
    ("http://[::1]:9000", "a host name or IPv4 address"),
    ("http://host:notaport", "got 'http://host:notaport'"),
])
def test_bad_endpoints_are_refused(endpoint, message):
    with pytest.raises(StoreError, match=message.replace("[", r"\[").replace("]", r"\]")):
        triton_repository_url("s3://bkt/x", endpoint_url=endpoint, environ={})


def cli(capsys, *argv):
    from tritonize.cli import main

    code = main(["publish", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_cli_prints_a_table_and_the_triton_url(s3_env, repo, url, capsys):
    code, out, err = cli(capsys, repo, url)
    assert code == 0, err
    version_bytes = sum(f.stat().st_size for f in (repo / "mlp" / "1").iterdir())
    assert "mlp" in out and "uploaded" in out and f"{version_bytes:,}" in out
    assert f"--model-repository=s3://127.0.0.1:{s3_env.port}/" in out
    code, out, _ = cli(capsys, repo, url)
    assert code == 0 and "unchanged" in out and "uploaded 0 bytes" in out


@pytest.mark.parametrize("case", ["url", "bucket", "credentials", "endpoint", "not_a_repo", "no_folder",
                                  "foreign_index"])
def test_bad_inputs_are_one_line_user_errors(case, s3_env, repo, url, tmp_path, monkeypatch, capsys):
    args, expected = [repo, url], None
    if case == "url":
        args, expected = [repo, "s3:/bkt"], "expected s3://BUCKET/PREFIX, got 's3:/bkt'"
    elif case == "bucket":
        args, expected = [repo, "s3://no-such-bucket/x"], "expected an existing bucket, got no bucket 'no-such-bucket'"
    elif case == "credentials":
        monkeypatch.delenv("AWS_ACCESS_KEY_ID")
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        expected = "no AWS credentials: expected AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    elif case == "endpoint":
        args, expected = [repo, url, "--endpoint-url", f"http://127.0.0.1:{free_port()}", "--connect-timeout", "1"], \
            "expected a reachable S3 endpoint, got no answer within 1 s"
    elif case == "not_a_repo":
        (tmp_path / "mine").mkdir()
        args, expected = [tmp_path / "mine", url], "expected a model repository folder written by `tritonize repo`"
    elif case == "no_folder":
        args, expected = [tmp_path / "missing", url], "got nothing at"
    elif case == "foreign_index":
        location = parse_s3_url(url)
        s3_env.client().put_object(Bucket=location.bucket, Key=location.key("repository.json"), Body=b"[1, 2]")
        expected = "expected a tritonize index (format 'tritonize-store/1'), got another file"
    start = time.monotonic()
    code, _, err = cli(capsys, *args)
    assert code == 2 and time.monotonic() - start < 15
    assert expected in " ".join(err.split()), err
    assert "Traceback" not in err and err.strip().startswith("error:")


def test_a_repository_without_versions_or_with_names_triton_cannot_read_is_refused(repo):
    (repo / "mlp" / "1" / "bad name.txt").write_text("x")
    with pytest.raises(RepositoryError, match="expected file and folder names of letters.*got 'bad name.txt'"):
        read_local_repository(repo)
    shutil.rmtree(repo / "mlp" / "1")
    with pytest.raises(RepositoryError, match="expected at least one version folder"):
        read_local_repository(repo)


def test_a_model_pinned_to_its_version_numbers_is_not_renumbered(s3_env, repo, url, change_model_file):
    config = repo / "mlp" / "config.pbtxt"
    config.write_text(config.read_text() + "version_policy: { specific: { versions: [1] } }\n")
    publish(repo, url)
    change_model_file(repo)
    before = objects(s3_env, url)
    with pytest.raises(StoreError, match="expected a config.pbtxt without a specific version_policy.*goes up as 2"):
        publish(repo, url)
    assert objects(s3_env, url) == before  # refused before anything went up


def test_the_index_is_written_only_over_the_one_that_was_read(s3_env, repo, url):
    """Two publishes at once: the index write is conditional on the ETag read, so the later one fails."""
    from tritonize.model_repository.store import Store

    publish(repo, url)
    location = parse_s3_url(url)
    store = Store(s3_env.client(), location, resolve_endpoint(), 5.0)
    current, etag = store.read_index(store.listing())
    s3_env.client().put_object(Bucket=location.bucket, Key=location.key("repository.json"),
                               Body=json.dumps({**current, "updated": "by another publish"}).encode())
    for stale in (etag, None):
        with pytest.raises(StoreError, match="expected the index as it was read, got it changed meanwhile"):
            store.write_index(current, stale)
    assert index(s3_env, url)["updated"] == "by another publish"


@pytest.mark.server
def test_the_real_server_serves_the_latest_published_version_from_the_store(s3_env, repo, url, change_model_file):
    """tritonserver on the s3:// URL, after version 2 was published beside version 1: it serves 2."""
    import numpy as np
    import onnxruntime as ort
    import tritonclient.grpc as grpcclient

    from tritonize.models import get_spec
    from tritonize.serving.server import TritonServer

    publish(repo, url)
    change_model_file(repo)
    result = publish(repo, url)
    # As `tritonize serve --repo s3://...` starts it: the models from the store's index, the endpoint in the URL.
    server = TritonServer(url, ready_timeout_s=60)
    assert server.models == ["mlp"] and server.repository == result.triton_url
    assert f"--model-repository={result.triton_url}" in server.command(None)
    with server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        assert client.is_model_ready("mlp", "2") and not client.is_model_ready("mlp", "1")
        spec = get_spec("mlp")
        x = spec.example_inputs(4)
        inputs = []
        for name, value in x.items():
            tensor = grpcclient.InferInput(name, list(value.shape), spec.inputs[0].triton_dtype)
            tensor.set_data_from_numpy(value)
            inputs.append(tensor)
        got = client.infer("mlp", inputs).as_numpy(spec.output_names[0])
    expected = ort.InferenceSession(str(repo / "mlp" / "1" / "model.onnx")).run(None, x)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_server_on_a_prefix_with_nothing_published_is_refused_with_the_reason(s3_env, url):
    from tritonize.serving.server import TritonServer

    with pytest.raises(StoreError, match=r"expected a repository published with `tritonize publish`, got no objects"):
        TritonServer(url + "-empty")
