"""The admin key: a plain client may infer and read health, metadata and configs; statistics, shared
memory registration and model control need the server's key, on gRPC and HTTP alike."""
import os
import stat

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
    AdminKeyError,
    admin_headers,
    check_admin_key,
    new_admin_key,
    read_admin_key_file,
    restriction_args,
    write_admin_key_file,
)

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
