"""The admin key: a plain client may infer and read health, metadata and configs; statistics, shared
memory registration and model control need the server's key, on gRPC and HTTP alike."""
import json
import os
import re
import stat
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from tritonize.cli.main import main
from tritonize.cli.serve import admin_key_source
from tritonize.models import get_spec
from tritonize.serving.admin import (
    ADMIN_HEADER,
    GRPC_ADMIN_HEADER,
    AdminCallError,
    AdminKeyError,
    ModelState,
    TritonAdmin,
    admin_headers,
    check_admin_key,
    config_json,
    new_admin_key,
    read_admin_key_file,
    restriction_args,
    write_admin_key_file,
)
from tritonize.serving.server import TritonServer

MODULES = {"grpc": grpcclient, "http": httpclient}


def _client(server, protocol):
    return MODULES[protocol].InferenceServerClient(server.grpc_url if protocol == "grpc" else server.http_url)


def _refused(protocol, call):
    with pytest.raises(InferenceServerException) as e:
        call()
    if protocol == "grpc":
        assert e.value.status() == "StatusCode.UNAVAILABLE"
        assert f"This protocol is restricted, expecting header '{GRPC_ADMIN_HEADER}'" in e.value.message()
    else:
        assert e.value.status() == "403"
        assert f"This API is restricted, expecting header '{ADMIN_HEADER}'" in e.value.message()


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_restricted_calls_need_the_key_and_inference_does_not(server, protocol):
    client, module = _client(server, protocol), MODULES[protocol]
    key, wrong = admin_headers(server.admin_key, protocol), admin_headers(new_admin_key(), protocol)
    for headers in (None, wrong):
        _refused(protocol, lambda: client.get_inference_statistics("mlp", headers=headers))
        _refused(protocol, lambda: client.get_model_repository_index(headers=headers))
        _refused(protocol, lambda: client.unload_model("mlp", headers=headers))
    stats = client.get_inference_statistics("mlp", headers=key)
    assert (stats.model_stats[0].name if protocol == "grpc" else stats["model_stats"][0]["name"]) == "mlp"

    name = f"tritonize_admin_test_{protocol}_{os.getpid()}"
    region = shm.create_shared_memory_region(name, f"/{name}", 64)
    try:
        _refused(protocol, lambda: client.register_system_shared_memory(name, f"/{name}", 64))
        _refused(protocol, lambda: client.register_system_shared_memory(name, f"/{name}", 64, headers=wrong))
        client.register_system_shared_memory(name, f"/{name}", 64, headers=key)
        status = client.get_system_shared_memory_status(name, headers=key)
        assert name in (status.regions if protocol == "grpc" else {r["name"] for r in status})
        client.unregister_system_shared_memory(name, headers=key)
    finally:
        shm.destroy_shared_memory_region(region)

    # Without any key: inference, health, metadata and the model's config.
    assert client.is_server_ready() and client.is_model_ready("mlp")
    client.get_model_metadata("mlp")
    client.get_model_config("mlp")
    spec = get_spec("mlp")
    x = spec.example_inputs(2)["x"]
    tensor = module.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    assert client.infer("mlp", [tensor]).as_numpy("logits").shape == (2, 10)


def test_the_key_goes_to_both_protocols_and_is_never_shown():
    key = new_admin_key()
    assert len(key) >= 40 and check_admin_key(key) == key and new_admin_key() != key
    assert restriction_args(key) == [
        f"--grpc-restricted-protocol=model-repository,shared-memory,statistics,trace,logging:{ADMIN_HEADER}={key}",
        f"--http-restricted-api=model-repository,shared-memory,statistics,trace,logging:{ADMIN_HEADER}={key}"]
    assert admin_headers(key, "grpc") == {"triton-grpc-protocol-tritonize-admin-key": key}
    assert admin_headers(key, "http") == {"tritonize-admin-key": key} and admin_headers(None) is None
    for bad, says in (("short", "got 5 characters"), ("x" * 20 + " y:z", "got 24 characters, some outside that set")):
        with pytest.raises(AdminKeyError, match=f"admin_key: expected an admin key of at least 16 characters from "
                                                f"A-Z a-z 0-9 . _ ~ -, {says}") as e:
            check_admin_key(bad)
        assert bad not in str(e.value)


def test_key_files_are_private(tmp_path):
    key = new_admin_key()
    path = write_admin_key_file(tmp_path / "key", key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and read_admin_key_file(path) == key
    with pytest.raises(AdminKeyError, match="cannot create it"):
        write_admin_key_file(path, key)  # never over an existing file
    path.chmod(0o644)
    with pytest.raises(AdminKeyError, match=r"expected a file only its owner may read \(chmod 600 .*\), got mode 644"):
        read_admin_key_file(path)


def test_serve_takes_the_key_from_one_place(tmp_path, monkeypatch, capsys):
    path = write_admin_key_file(tmp_path / "key", new_admin_key())
    assert admin_key_source(path)[1] == f"read from {path}"
    assert admin_key_source(tmp_path / "new")[1:] == (f"new, written to {tmp_path / 'new'} (mode 0600)",
                                                      tmp_path / "new")
    monkeypatch.setenv("TRITONIZE_ADMIN_KEY", "too-short")
    assert main(["serve", "--repo", str(tmp_path), "--admin-key-file", str(path)]) == 2
    assert "give the admin key one way: --admin-key-file or $TRITONIZE_ADMIN_KEY, got both" in capsys.readouterr().err
    assert main(["serve", "--repo", str(tmp_path)]) == 2
    assert "$TRITONIZE_ADMIN_KEY: expected an admin key of at least 16 characters" in capsys.readouterr().err


# The admin client: one class for load (with a config override), unload, the repository index and
# statistics, on either protocol, with the key.

@pytest.fixture(scope="module")
def tiny_server(tiny_repository):
    """A server of the two Python-backend models (echo, slow): up in a second or two, and this module's
    own, so that the loads and unloads here touch no other test's models."""
    with TritonServer(tiny_repository) as server:
        yield server


def _url(server, protocol):
    return server.grpc_url if protocol == "grpc" else server.http_url


def _settle(admin, model, timeout_s=10.0) -> ModelState:
    """The model's state once it is neither loading nor unloading."""
    deadline = time.monotonic() + timeout_s
    while (state := admin.states()[model]).state in ("LOADING", "UNLOADING") and time.monotonic() < deadline:
        time.sleep(0.05)
    return state


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_admin_client_loads_unloads_and_reads_the_index_and_statistics(tiny_server, protocol):
    from google.protobuf import json_format

    with TritonAdmin(_url(tiny_server, protocol), tiny_server.admin_key, protocol) as admin:
        assert admin.states()["echo"] == ModelState("echo", "1", "READY", "")
        assert admin.ready_versions("echo") == (1,) and admin.ready_versions("nothing") == ()
        before = sum(s.success.count for s in admin.statistics("echo"))
        with grpcclient.InferenceServerClient(tiny_server.grpc_url) as client:  # inference needs no key
            tensor = grpcclient.InferInput("x", [1], "FP32")
            tensor.set_data_from_numpy(np.array([3.0], np.float32))
            assert client.infer("echo", [tensor]).as_numpy("y")[0] == 3.0
        # Triton counts a request just after it sends the response, so the count may lag a moment.
        deadline = time.monotonic() + 5
        while (stats := admin.statistics("echo")[0]).success.count == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert (stats.name, stats.version, stats.success.count) == ("echo", "1", before + 1)
        assert stats.inference_count >= 1 and stats.compute_infer.ns > 0 and stats.fail.count == 0

        # A config override (a ModelConfig over gRPC, its JSON dict over HTTP), then the original put back:
        # Triton keeps an override for later plain loads of unchanged files.
        original = admin.config("echo")
        assert original.name == "echo" and original.instance_group[0].count == 1
        changed = type(original)()
        changed.CopyFrom(original)
        changed.instance_group[0].count = 2
        try:
            admin.load("echo", changed if protocol == "grpc" else
                       json_format.MessageToDict(changed, preserving_proto_field_name=True))
            assert admin.config("echo").instance_group[0].count == 2
        finally:
            admin.load("echo", original)
        assert admin.config("echo").instance_group[0].count == 1 and admin.states()["echo"].state == "READY"

        admin.unload("slow")
        assert _settle(admin, "slow").state == "UNAVAILABLE" and admin.ready_versions("slow") == ()
        admin.load("slow")
        assert admin.states()["slow"].state == "READY"


@pytest.mark.server
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_admin_client_says_which_call_failed_and_why(tiny_server, protocol):
    url = _url(tiny_server, protocol)
    for key, says in ((None, "this TritonAdmin has no admin key"),
                      (new_admin_key(), "the server refused this admin key (is it this server's?)")):
        with TritonAdmin(url, key, protocol) as admin, pytest.raises(AdminCallError) as e:
            admin.index()
        assert str(e.value).startswith(f"repository index on {url} ({'gRPC' if protocol == 'grpc' else 'HTTP'}): ")
        assert "restricted, expecting header" in e.value.detail and e.value.detail.endswith(says)
        assert key is None or key not in str(e.value)
    with TritonAdmin(url, tiny_server.admin_key, protocol) as admin, pytest.raises(AdminCallError) as e:
        admin.load("no_such_model")
    assert f"load of model 'no_such_model' on {url}" in str(e.value) and "no_such_model" in e.value.detail


def test_a_config_override_is_a_model_config_a_dict_or_json_text():
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name="m", max_batch_size=8)
    config.version_policy.specific.versions[:] = [3]
    # The form get_model_config(as_json=True) gives, which tritonserver 2.51 takes: proto field names,
    # 64-bit integers as strings.
    assert json.loads(config_json(config)) == {"name": "m", "max_batch_size": 8,
                                               "version_policy": {"specific": {"versions": ["3"]}}}
    assert config_json({"name": "m"}) == '{"name": "m"}' and config_json('{"name": "m"}') == '{"name": "m"}'
    assert config_json(None) is None
    for bad, says in ((3, "expected a ModelConfig message, a dict or JSON text, got int"),
                      (mc.ModelInput(), "got ModelInput"),
                      ("name: m", "expected a model config as JSON text, got text that is not JSON"),
                      ("[1]", "expected a model config as JSON text of an object, got another JSON value")):
        with pytest.raises(ValueError, match=f"config: .*{says}"):
            config_json(bad)


def test_the_admin_client_checks_what_it_is_given_and_never_shows_the_key():
    key = new_admin_key()
    for args, kwargs, says in ((("h:1", key, "tcp"), {}, "protocol: expected one of grpc, http, got 'tcp'"),
                               (("http://h:1", key, "http"), {}, "url: expected the server's http host:port"),
                               (("h:1", "short"), {}, "admin_key: expected an admin key of at least 16"),
                               (("h:1", key), {"timeout_s": 0}, "timeout_s: expected seconds > 0, got 0"),
                               (("h:1", key), {"load_timeout_s": -1}, "load_timeout_s: expected seconds > 0")):
        with pytest.raises(ValueError, match=re.escape(says)):
            TritonAdmin(*args, **kwargs)
    with TritonAdmin("127.0.0.1:1", key, "http") as admin:
        assert repr(admin) == "TritonAdmin('127.0.0.1:1', protocol='http', admin_key=<set>)"
        with pytest.raises(ValueError, match="timeout_s: expected seconds > 0, got 0"):
            admin.index(timeout_s=0)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_server_that_is_not_there_is_an_admin_call_error(protocol):
    from tritonize.serving.ports import free_port

    url = f"127.0.0.1:{free_port()}"
    admin = TritonAdmin(url, new_admin_key(), protocol, timeout_s=2)
    with pytest.raises(AdminCallError, match=f"unload of model 'm' on {url} .*[Cc]onnect"):
        admin.unload("m")
    admin.close()
    with pytest.raises(AdminCallError, match="this TritonAdmin is closed; make a new one"):
        admin.index()
