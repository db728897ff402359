"""How a tritonserver runs: one frozen `ServerConfig`, checked when it is made, and its command line.

Every server tritonize starts or describes takes its options from here: `TritonServer` (serving/server.py),
the replicas (serving/replicas.py, one config for all, each with its own ports), `tritonize serve`
(cli/serve.py) and a Kubernetes pod's container args (deploy/server_args.py). `to_argv` is the one place
that turns options into tritonserver flags, so the ports, the model control, the locked-down admin APIs,
the drain, the memory-bound and CPU-only flags read the same on a laptop and in a cluster; what differs
between them (addresses, ports, the repository) differs only in the config's values.

A bad value is refused when the config is made (`ServerConfigError`, a ValueError), naming the field,
what was expected and what was given; the admin key is named, never shown.
"""
from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .admin import ADMIN_KEY_ENV, check_admin_key, new_admin_key, restriction_args
from .placement import Placement
from .ports import HOST

DEFAULT_DRAIN_S = 5.0
STOP_MARGIN_S = 30.0  # by default, how long after the drain a server may take to exit before SIGKILL
MODEL_CONTROL = ("explicit", "poll")
PORT_KINDS = ("http", "grpc", "metrics")
# A pod's args name the key as the kubelet expands it from the container's env ($(VAR) syntax): the pod
# spec shows only the reference; the value stays in the Secret (and in the process's argv).
ADMIN_KEY_REFERENCE = f"$({ADMIN_KEY_ENV})"

# Oversized requests and the server's memory. With its defaults, tritonserver 2.51 kept request objects
# of its gRPC front end for reuse, buffers included: refused 205 MB requests left it at ~1 GiB, for good.
# The pool is always off (MEMORY_BOUND_ARGS: it costs nothing measurable). glibc still keeps part of the
# freed heap: measured, 43 MiB grew to 187 MiB after 4 such requests and 254 MiB after 12 (the growth
# slowing). `memory_bound=True` (`serve --memory-bound`, and every Kubernetes pod, deploy/, where a memory
# limit turns growth into an OOM kill) also has glibc map blocks of 64 KiB and more on their own and trim
# its heap past 128 KiB: the server then stays within 2 MiB of its baseline (tests/serving/test_memory.py).
# It is not the default because it costs throughput wherever batches form: measured side by side with wrk
# on the MLP, 0.7-0.8x the requests/s at 8 clients and 0.6-0.7x at 32 (docs/tuning.md).
MEMORY_BOUND_ARGS = ("--grpc-infer-allocation-pool-size=0",)
MEMORY_BOUND_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "131072"}
# Flags that quiet a server without a GPU: no pinned or CUDA memory pool to allocate, no GPU metrics.
# The bundled CPU server gets them locally; a --target cpu pod gets them too.
CPU_ONLY_ARGS = ("--pinned-memory-pool-byte-size=0", "--cuda-memory-pool-byte-size=0:0", "--allow-gpu-metrics=false")


class ServerConfigError(ValueError):
    """A server option that cannot be used: the field, what was expected and what was given."""


def _refuse(name: str, expected: str, got: object) -> ServerConfigError:
    return ServerConfigError(f"{name}: expected {expected}, got {got!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ServerConfig:
    """Every option of one tritonserver; copies of one config (`dataclasses.replace`) share its admin key."""
    # Where it listens. None or 0: a free loopback port, picked when a TritonServer is made from it.
    http_port: int | None = None
    grpc_port: int | None = None
    metrics_port: int | None = None
    address: str | None = HOST  # the interface all three bind; None: every one (a pod, reached on its IP)
    # What it loads: "explicit", the models named to `to_argv` (and the model-repository API may load and
    # unload); "poll", every model in the repository, which it polls every `poll_seconds`.
    model_control: str = "explicit"
    poll_seconds: int = 30
    # The admin APIs answer only requests carrying this key (serving/admin.py). None: a new random one,
    # made here; ADMIN_KEY_REFERENCE: the pod's Secret. Never in repr.
    admin_key: str | None = field(default=None, repr=False)
    drain_s: float = DEFAULT_DRAIN_S  # how long `stop` waits for requests in flight; the server's exit timeout
    cpu_only: bool | None = None  # CPU_ONLY_ARGS; None: TritonServer decides by its binary (the bundled one is)
    placement: Placement | None = None  # cores for the server and its model instances (serving/placement.py)
    memory_bound: bool = False  # glibc maps and trims large blocks (MEMORY_BOUND_ENV): see above
    log_verbose: int = 0
    extra_args: tuple[str, ...] = ()  # more tritonserver flags, last on the command line (e.g. --trace-config=...)
    # How tritonize runs it; not on its command line.
    binary: str | os.PathLike | None = None  # the tritonserver to run; None: PATH, then nvidia-pytriton's
    ready_timeout_s: float = 120.0
    stop_timeout_s: float | None = None  # SIGTERM to SIGKILL; None: drain_s + STOP_MARGIN_S

    def __post_init__(self) -> None:
        for kind, port in self.ports().items():
            if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535):
                raise _refuse(f"{kind}_port", "a port from 1 to 65535 (0 or None: a free one)", port)
        fixed = [(kind, port) for kind, port in self.ports().items() if port]
        for i, (kind, port) in enumerate(fixed):
            for other, same in fixed[i + 1:]:
                if port == same:
                    raise ServerConfigError(f"{other}_port: expected a port other than {kind}_port's, got {port} "
                                            f"for both")
        if self.address is not None:
            try:
                ipaddress.ip_address(self.address)
            except ValueError:
                raise _refuse("address", "an IP address to bind (None: every interface)", self.address) from None
        if self.model_control not in MODEL_CONTROL:
            raise _refuse("model_control", f"one of {', '.join(MODEL_CONTROL)}", self.model_control)
        if isinstance(self.poll_seconds, bool) or not isinstance(self.poll_seconds, int) or self.poll_seconds < 1:
            raise _refuse("poll_seconds", "a whole number of seconds >= 1", self.poll_seconds)
        if self.admin_key is None:  # made once, here: every copy of this config (each replica) shares it
            object.__setattr__(self, "admin_key", new_admin_key())
        elif self.admin_key != ADMIN_KEY_REFERENCE:
            check_admin_key(self.admin_key)  # an AdminKeyError (a ValueError) naming admin_key, not showing it
        if not (_is_number(self.drain_s) and self.drain_s >= 0 and math.isfinite(self.drain_s)):
            raise _refuse("drain_s", "seconds >= 0", self.drain_s)
        if self.stop_timeout_s is not None and not (_is_number(self.stop_timeout_s)
                                                    and self.stop_timeout_s > self.drain_s):
            raise ServerConfigError(f"stop_timeout_s: expected more than drain_s ({self.drain_s:g} s, the server's "
                                    f"own exit timeout), got {self.stop_timeout_s!r}")
        if not (_is_number(self.ready_timeout_s) and self.ready_timeout_s > 0):
            raise _refuse("ready_timeout_s", "seconds > 0", self.ready_timeout_s)
        for name in ("cpu_only", "memory_bound"):
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "cpu_only" and value is None):
                raise _refuse(name, "True or False" + (" (None: by the binary)" if name == "cpu_only" else ""), value)
        if self.placement is not None and not isinstance(self.placement, Placement):
            raise _refuse("placement", "a Placement (serving/placement.py) or None", self.placement)
        if isinstance(self.log_verbose, bool) or not isinstance(self.log_verbose, int) or self.log_verbose < 0:
            raise _refuse("log_verbose", "a whole number >= 0 (0: quiet)", self.log_verbose)
        self._check_extra_args()
        if self.binary is not None and not isinstance(self.binary, (str, os.PathLike)):
            raise _refuse("binary", "a path to a tritonserver binary or None", self.binary)

    def _check_extra_args(self) -> None:
        if isinstance(self.extra_args, (str, bytes)) or not isinstance(self.extra_args, Iterable):
            raise _refuse("extra_args", "a list of tritonserver flags like --name=value", self.extra_args)
        args = tuple(self.extra_args)  # a list given is kept as a tuple: the config stays immutable
        for arg in args:
            if not isinstance(arg, str) or not arg.startswith("--"):
                raise _refuse("extra_args", "tritonserver flags like --name=value", arg)
        object.__setattr__(self, "extra_args", args)

    def ports(self) -> dict[str, int | None]:
        return {"http": self.http_port, "grpc": self.grpc_port, "metrics": self.metrics_port}

    @property
    def stop_after_s(self) -> float:
        """How long `stop` waits, after SIGTERM, for the server to exit before SIGKILL."""
        return self.drain_s + STOP_MARGIN_S if self.stop_timeout_s is None else self.stop_timeout_s

    def to_argv(self, binary: str | os.PathLike, repository: str | os.PathLike, models: Iterable[str] = (),
                backend_dir: Path | None = None) -> list[str]:
        """tritonserver's command line: `binary` reading `repository`. `models`: the ones an "explicit" server
        loads (none: every one); a polling server loads what the repository holds. `backend_dir`: a backend
        folder of the server's own (the bundled build's)."""
        missing = [kind for kind, port in self.ports().items() if not port]
        if missing:
            raise _refuse(f"{missing[0]}_port", "a port for the command line (TritonServer picks free ones)",
                          getattr(self, f"{missing[0]}_port"))
        argv = [str(binary), f"--model-repository={repository}", f"--model-control-mode={self.model_control}"]
        if self.model_control == "explicit":
            # Only the named models load: a repository may also hold configs for other targets (GPU) that
            # this server cannot load. `*` loads every model at start, as Triton's `none` mode would, and the
            # model-repository API (behind the admin key) may still load and unload.
            argv += [f"--load-model={m}" for m in models] or ["--load-model=*"]
        else:
            # The server picks up what `tritonize publish` adds: new versions go up under new numbers, config
            # last, so a poll never sees half a model.
            argv.append(f"--repository-poll-secs={self.poll_seconds}")
        if self.address is not None:
            argv += [f"--{kind}-address={self.address}" for kind in PORT_KINDS]
        argv += [
            # Ready only once every model has loaded: TritonServer's start, a pod's readiness probe and the
            # Services rely on it. (Triton's default, written out because they do.)
            "--strict-readiness=true",
            *(f"--{kind}-port={port}" for kind, port in self.ports().items()),
            f"--log-verbose={self.log_verbose}",
            # On SIGTERM the server stops taking requests and waits this long for those in flight (the drain).
            f"--exit-timeout-secs={math.ceil(self.drain_s)}",
            *MEMORY_BOUND_ARGS,
            *restriction_args(self.admin_key),
        ]
        if backend_dir is not None:
            argv.append(f"--backend-directory={backend_dir}")
        if self.cpu_only:
            argv += CPU_ONLY_ARGS
        if self.placement is not None:
            argv += self.placement.server_args()
        return argv + list(self.extra_args)


def config_of(config: ServerConfig | None, options: dict) -> ServerConfig:
    """`config`, or one made of `options`: ServerConfig's fields as keywords, as TritonServer and Replicas
    took them before there was a config (much code still passes them). Not both."""
    if config is None:
        return ServerConfig(**options)
    if not isinstance(config, ServerConfig):
        raise _refuse("config", "a ServerConfig or None", config)
    if options:
        raise ServerConfigError(f"config: expected a ServerConfig or its fields as keywords, not both; got a config "
                                f"and {', '.join(sorted(options))}")
    return config
