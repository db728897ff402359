"""One server configuration (#33): `ServerConfig` is checked when it is made, each refusal naming the field,
what was expected and what was given; `to_argv` is the one place its options become tritonserver flags;
TritonServer, Replicas and `tritonize serve` all run one. No server is started here."""
from dataclasses import FrozenInstanceError, replace

import pytest

from tritonize.serving.admin import AdminKeyError, new_admin_key
from tritonize.serving.config import (
    ADMIN_KEY_REFERENCE,
    CPU_ONLY_ARGS,
    MEMORY_BOUND_ARGS,
    ServerConfig,
    ServerConfigError,
    config_of,
)
from tritonize.serving.placement import Placement, available_cpus
from tritonize.serving.server import ServerError, TritonServer

KEY = new_admin_key()
PORTS = {"http_port": 8000, "grpc_port": 8001, "metrics_port": 8002}


def _flags(argv: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for arg in argv[1:]:
        name, _, value = arg.partition("=")
        found.setdefault(name, []).append(value)
    return found


@pytest.mark.parametrize("options, message", [
    ({"http_port": 70000}, "http_port: expected a port from 1 to 65535 (0 or None: a free one), got 70000"),
    ({"grpc_port": "8001"}, "grpc_port: expected a port from 1 to 65535 (0 or None: a free one), got '8001'"),
    ({"metrics_port": True}, "metrics_port: expected a port from 1 to 65535"),
    ({"http_port": 9000, "metrics_port": 9000},
     "metrics_port: expected a port other than http_port's, got 9000 for both"),
    ({"address": "localhost:1"}, "address: expected an IP address to bind (None: every interface), got 'localhost:1'"),
    ({"model_control": "none"}, "model_control: expected one of explicit, poll, got 'none'"),
    ({"model_control": "poll", "poll_seconds": 0}, "poll_seconds: expected a whole number of seconds >= 1, got 0"),
    ({"drain_s": -1}, "drain_s: expected seconds >= 0, got -1"),
    ({"drain_s": float("nan")}, "drain_s: expected seconds >= 0, got nan"),
    ({"drain_s": 10, "stop_timeout_s": 10}, "stop_timeout_s: expected more than drain_s (10 s, the server's own exit "
                                            "timeout), got 10"),
    ({"ready_timeout_s": 0}, "ready_timeout_s: expected seconds > 0, got 0"),
    ({"cpu_only": "yes"}, "cpu_only: expected True or False (None: by the binary), got 'yes'"),
    ({"memory_bound": None}, "memory_bound: expected True or False, got None"),
    ({"placement": "0-1"}, "placement: expected a Placement (serving/placement.py) or None, got '0-1'"),
    ({"log_verbose": -1}, "log_verbose: expected a whole number >= 0 (0: quiet), got -1"),
    ({"extra_args": "--log-info=true"}, "extra_args: expected a list of tritonserver flags like --name=value, got "
                                        "'--log-info=true'"),
    ({"extra_args": ["log-info=true"]},
     "extra_args: expected tritonserver flags like --name=value, got 'log-info=true'"),
    ({"binary": 3}, "binary: expected a path to a tritonserver binary or None, got 3"),
])
def test_a_bad_option_is_refused_naming_the_field_the_expected_and_the_given(options, message):
    with pytest.raises(ServerConfigError) as e:
        ServerConfig(**options)
    assert message in str(e.value)
    assert isinstance(e.value, ValueError)  # the CLI shows it as one line, exit 2


def test_a_bad_admin_key_is_named_never_shown():
    with pytest.raises(AdminKeyError, match="admin_key: expected an admin key of at least 16 characters") as e:
        ServerConfig(admin_key="s3cret!")
    assert "s3cret" not in str(e.value)


def test_the_admin_key_is_made_once_shared_by_copies_and_never_in_repr():
    config = ServerConfig()
    assert len(config.admin_key) >= 16 and ServerConfig().admin_key != config.admin_key
    assert replace(config, http_port=9000).admin_key == config.admin_key  # every replica's copy
    assert config.admin_key not in repr(config) and KEY not in repr(ServerConfig(admin_key=KEY))
    with pytest.raises(FrozenInstanceError):
        config.drain_s = 1.0


def test_the_stop_timeout_follows_the_drain_unless_given():
    assert ServerConfig(drain_s=5).stop_after_s == 35
    assert replace(ServerConfig(drain_s=5), drain_s=60).stop_after_s == 90  # a copy with a longer drain is valid
    assert ServerConfig(drain_s=5, stop_timeout_s=8).stop_after_s == 8


def test_argv_has_every_option_once():
    config = ServerConfig(**PORTS, admin_key=KEY, drain_s=2.5, log_verbose=1, memory_bound=True,
                          extra_args=["--trace-config=rate=1"])
    argv = config.to_argv("/opt/tritonserver", "/models", ["mlp", "cnn"])
    flags = _flags(argv)
    assert argv[0] == "/opt/tritonserver" and argv[-1] == "--trace-config=rate=1"  # extra flags last: they win
    assert flags["--model-repository"] == ["/models"]
    assert flags["--model-control-mode"] == ["explicit"] and flags["--load-model"] == ["mlp", "cnn"]
    assert all(flags[f"--{kind}-address"] == ["127.0.0.1"] for kind in ("http", "grpc", "metrics"))
    assert [flags[f"--{kind}-port"] for kind in ("http", "grpc", "metrics")] == [["8000"], ["8001"], ["8002"]]
    assert flags["--exit-timeout-secs"] == ["3"]  # whole seconds, rounded up: never shorter than the drain
    assert flags["--strict-readiness"] == ["true"] and flags["--log-verbose"] == ["1"]
    assert set(MEMORY_BOUND_ARGS) <= set(argv)  # always: memory_bound sets the environment, not a flag
    for flag in ("--grpc-restricted-protocol", "--http-restricted-api"):
        (value,) = flags[flag]
        assert value.startswith("model-repository,") and value.endswith(f":tritonize-admin-key={KEY}")
    assert not set(CPU_ONLY_ARGS) & set(argv) and "--backend-directory" not in flags
    assert all(len(values) == 1 for name, values in flags.items() if name != "--load-model")


def test_argv_of_a_polling_cpu_server_on_every_interface(tmp_path):
    config = ServerConfig(**PORTS, address=None, model_control="poll", poll_seconds=7, cpu_only=True,
                          admin_key=ADMIN_KEY_REFERENCE)
    argv = config.to_argv("tritonserver", "s3://host:9000/bucket/models", backend_dir=tmp_path)
    flags = _flags(argv)
    assert flags["--model-control-mode"] == ["poll"] and flags["--repository-poll-secs"] == ["7"]
    assert "--load-model" not in flags and not any(name.endswith("-address") for name in flags)
    assert set(CPU_ONLY_ARGS) <= set(argv) and flags["--backend-directory"] == [str(tmp_path)]
    assert flags["--http-restricted-api"][0].endswith(f"={ADMIN_KEY_REFERENCE}")  # the kubelet expands it
    assert _flags(replace(config, model_control="explicit").to_argv("t", "r"))["--load-model"] == ["*"]


@pytest.mark.skipif(len(available_cpus()) < 2, reason="a placement needs two cores")
def test_argv_places_the_model_instances():
    placement = Placement.split()
    argv = ServerConfig(**PORTS, placement=placement).to_argv("t", "r", ["mlp"])
    assert argv[-len(placement.server_args()):] == placement.server_args()


def test_argv_needs_the_ports():
    with pytest.raises(ServerConfigError, match=r"grpc_port: expected a port for the command line \(TritonServer "
                                                r"picks free ones\), got None"):
        ServerConfig(http_port=8000).to_argv("t", "r")


def test_a_config_or_its_fields_not_both():
    config = ServerConfig()
    assert config_of(config, {}) is config and config_of(None, {"drain_s": 1.0}).drain_s == 1.0
    with pytest.raises(ServerConfigError, match="config: expected a ServerConfig or its fields as keywords, not both; "
                                                "got a config and drain_s, memory_bound"):
        config_of(config, {"memory_bound": True, "drain_s": 1.0})
    with pytest.raises(ServerConfigError, match="config: expected a ServerConfig or None, got"):
        config_of({"drain_s": 1.0}, {})


@pytest.fixture
def repository(tmp_path):
    for name in ("a", "b"):
        (tmp_path / "repo" / name / "1").mkdir(parents=True)
        (tmp_path / "repo" / name / "config.pbtxt").write_text(f'name: "{name}"\nbackend: "python"\n')
    return tmp_path / "repo"


def _server(*args, **kwargs) -> TritonServer:
    try:
        return TritonServer(*args, **kwargs)
    except ServerError as e:
        if "no tritonserver found" in str(e):
            pytest.skip(f"no tritonserver to make a TritonServer with: {e}")
        raise


def test_a_server_runs_its_config_with_free_ports_and_its_binary_deciding_cpu_only(repository):
    config = ServerConfig(admin_key=KEY, drain_s=1.0)
    server = _server(repository, config=config)
    assert server.config.admin_key == server.admin_key == KEY and server.drain_s == 1.0
    assert all(server.config.ports().values()) and len(set(server.config.ports().values())) == 3
    assert server.config.cpu_only is server.binary.bundled
    assert server.command(None) == server.config.to_argv(server.binary.path, server.repository, ["a", "b"])
    # The old keywords make the same config.
    same = _server(repository, admin_key=KEY, drain_s=1.0, **dict(zip(PORTS, server.config.ports().values())))
    assert same.config == server.config
    with pytest.raises(ServerConfigError, match="not both"):
        _server(repository, config=config, drain_s=2.0)
    with pytest.raises(ServerConfigError, match="models: expected none with model_control 'poll'"):
        _server(repository, ["a"], model_control="poll")


def test_replicas_share_one_config_each_on_ports_of_its_own(repository):
    from tritonize.serving.replicas import Replicas

    try:
        replicas = Replicas(repository, 3, config=ServerConfig(admin_key=KEY, drain_s=1.0), health_interval_s=0)
    except ServerError as e:
        pytest.skip(f"no tritonserver to make replicas with: {e}")
    configs = [s.config for s in replicas.servers]
    assert replicas.admin_key == KEY and {c.admin_key for c in configs} == {KEY}
    assert len({port for c in configs for port in c.ports().values()}) == 9
    assert {replace(c, http_port=None, grpc_port=None, metrics_port=None) for c in configs} == \
        {replace(configs[0], http_port=None, grpc_port=None, metrics_port=None)}
    with pytest.raises(ServerConfigError, match="grpc_port: expected none \\(each replica gets free ports\\), got "
                                                "grpc_port 9001"):
        Replicas(repository, 2, grpc_port=9001)


@pytest.mark.parametrize("flags, expected", [
    ([], {**PORTS, "drain_s": 5.0, "memory_bound": False, "stop_after_s": 35.0, "placement": None}),
    (["--http-port", "9000", "--drain-seconds", "40", "--memory-bound", "--timeout", "9"],
     {"http_port": 9000, "drain_s": 40.0, "memory_bound": True, "stop_after_s": 70.0, "ready_timeout_s": 9.0}),
    (["--replicas", "2", "--server", "/opt/tritonserver"],
     {"http_port": None, "grpc_port": None, "metrics_port": None, "binary": "/opt/tritonserver"}),
])
def test_serve_builds_one_config_from_its_flags(flags, expected, tmp_path):
    from tritonize.cli.main import build_parser
    from tritonize.cli.serve import server_config

    args = build_parser().parse_args(["serve", "--repo", str(tmp_path), *flags])
    config = server_config(args, KEY)
    assert config.admin_key == KEY
    assert {name: getattr(config, name) for name in expected} == expected
