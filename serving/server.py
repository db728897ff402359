"""A real `tritonserver`, started and stopped from Python.

`TritonServer` finds a server binary (on PATH as in NVIDIA's container, else the one bundled in the
`nvidia-pytriton` wheel), prepares a backend directory for the bundled one, starts it on loopback
ports, waits until it is ready, and stops it with a drain. The CLI's `serve`, the tests and the
benchmarks all use it.

- Locked down: the admin APIs (model control, shared memory, statistics, trace, logging) answer only
  requests that carry the server's admin key (serving/admin.py); `server.admin_key` is it, random
  unless given. Triton takes the key on its command line only, so local users who can list
  processes can read it there.
- Drain (`stop`): every model is unloaded first, so the server reports not ready at once, refuses
  new requests and completes those in flight, for up to `drain_s`; then SIGTERM, and tritonserver
  exits (SIGKILL only if it has not after `stop_timeout_s`).
- Never orphaned: serving/lifecycle.py and serving/reaper.py end the server, and remove what it
  leaves, when this process ends in any way.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from importlib import util as import_util
from pathlib import Path

from . import lifecycle
from .admin import ADMIN_KEY_ENV, AdminCallError, TritonAdmin
from .config import MEMORY_BOUND_ENV, ServerConfig, ServerConfigError, config_of
from .ports import HOST, free_port  # re-exported: servers, benchmarks and tests take their ports from here
from .reaper import end_orphaned_stubs, mapped_regions, unlink_regions

BUSY_STATES = ("READY", "LOADING", "UNLOADING")  # a model whose unload has not ended
INSTALL_HINT = ("install the bundled CPU server with `pip install -c constraints.txt nvidia-pytriton==0.7.0`, "
                "or run inside NVIDIA's container (nvcr.io/nvidia/tritonserver:<yy.mm>-py3) where `tritonserver` is on PATH")


class ServerError(RuntimeError):
    """The server could not be found, started, or did not become ready; says why."""


@dataclass(frozen=True)
class ServerBinary:
    path: Path
    bundled: bool  # the nvidia-pytriton build, which needs a backend directory of our own


def find_server(explicit: str | os.PathLike | None = None) -> ServerBinary:
    if explicit:
        path = Path(explicit).absolute()  # the server starts in its own folder (TritonServer.start)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise ServerError(f"no executable tritonserver at {path}; {INSTALL_HINT}")
        return ServerBinary(path, bundled=False)
    on_path = shutil.which("tritonserver")
    if on_path:
        return ServerBinary(Path(on_path), bundled=False)
    root = _pytriton_server_dir()
    if root and (root / "bin" / "tritonserver").is_file():
        return ServerBinary(root / "bin" / "tritonserver", bundled=True)
    raise ServerError(f"no tritonserver found on PATH or in the nvidia-pytriton package; {INSTALL_HINT}")


def _pytriton_server_dir() -> Path | None:
    found = import_util.find_spec("pytriton")
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / "tritonserver"


def prepare_backend_dir(target: Path) -> Path:
    """`<target>/python/` with the bundled Python backend and the stub for this interpreter's version.

    The wheel's own backends folder lacks the stub, and the stub must match the running Python."""
    root = _pytriton_server_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = {
        "libtriton_python.so": root / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": root / "backends" / "python" / "triton_python_backend_utils.py",
        "triton_python_backend_stub": root / "python_backend_stubs" / version / "triton_python_backend_stub",
    }
    python_dir = target / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name, src in sources.items():
        if not src.is_file():
            raise ServerError(f"the bundled server lacks {src} (Python {version}); {INSTALL_HINT}")
        link = python_dir / name
        if not link.exists():
            link.symlink_to(src)
    return target


def check_port_free(port: int, what: str) -> None:
    """Refuse a port another socket listens on. SO_REUSEADDR, as tritonserver binds, so that the
    TIME-WAIT connections a stopped server leaves (our own readiness probes among them) do not count:
    tritonserver binds over them, and a restart on the same ports works at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as e:
            raise ServerError(f"{what} port {port} on {HOST} is in use ({e.strerror}); pick another with --{what}-port") from None


def _server_env(memory_bound: bool = False) -> dict[str, str]:
    # serving/config.py says why memory_bound; a user's own malloc settings win.
    env = {**(MEMORY_BOUND_ENV if memory_bound else {}), **os.environ}
    env.pop(ADMIN_KEY_ENV, None)  # the server has its key on its command line; its models need not see it
    # The Python backend stub finds its environment through `python3` on PATH (it ignores PYTHONPATH),
    # so this interpreter's bin folder goes first; and it should load this interpreter's libpython.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    libdir = Path(sys.base_prefix) / "lib"
    if any(libdir.glob("libpython3*.so*")):
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libdir), env.get("LD_LIBRARY_PATH", "")]))
    return env


# One log line per match: the server also logs a bare `failed to load 'NAME'` line after the one
# with the reason, and a pattern that ran on into the next line took that line's timestamp as the reason.
FAILED_LOAD = re.compile(r"failed to load '([^']+)'[^:\n]*:[ \t]*([^\n]+)")


def load_failures(log: str) -> dict[str, str]:
    """Model name -> the server's reason, from the lines of a server log that report a failed load.

    The reason is logged as one quoted line with escaped newlines (a Python traceback, say); it is
    given back with real newlines, without the closing quote."""
    return {m.group(1): m.group(2).replace("\\n", "\n").strip().rstrip('"; \n')
            for m in FAILED_LOAD.finditer(log)}


def _from_config(name: str) -> property:
    return property(lambda self: getattr(self.config, name), doc=f"The config's {name} (read-only).")


class TritonServer:
    """A running tritonserver as a context manager.

    >>> with TritonServer("build/model_repository") as server:
    ...     print(server.grpc_url, server.admin_key)

    Its options are one ServerConfig (serving/config.py), given as `config` or as that config's fields as
    keywords (`TritonServer(repo, ["mlp"], drain_s=2.0)`); `server.config` is it, with free ports picked
    for those not given and `cpu_only` decided by the binary. `placement` starts the server on its cores and
    gives the model instances theirs, through Triton's host policies (or, with `stubs_alone`, by moving the
    stubs once ready). `admin_key` unlocks the restricted APIs; `drain_s` bounds the drain of `stop` and is
    the server's own exit timeout when it stops without us (parent gone).
    """

    # The options, as before there was a config: read from it, so that there is one copy of each.
    http_port = _from_config("http_port")
    grpc_port = _from_config("grpc_port")
    metrics_port = _from_config("metrics_port")
    admin_key = _from_config("admin_key")
    placement = _from_config("placement")
    drain_s = _from_config("drain_s")
    stop_timeout_s = _from_config("stop_after_s")
    ready_timeout_s = _from_config("ready_timeout_s")
    memory_bound = _from_config("memory_bound")
    log_verbose = _from_config("log_verbose")
    extra_args = _from_config("extra_args")

    def __init__(self, repository: str | os.PathLike, models: list[str] | None = None, *,
                 config: ServerConfig | None = None, **options):
        config = config_of(config, options)
        if config.model_control == "poll" and models is not None:
            raise ServerConfigError(f"models: expected none with model_control 'poll' (a polling server loads every "
                                    f"model in the repository), got {', '.join(models)}")
        if str(repository).startswith("s3://"):
            # A repository in object storage (`tritonize publish`): Triton reads it itself, credentials from the
            # AWS environment, the endpoint written into the URL; the models to load come from the store's index.
            from ..model_repository.store import stored_models, triton_repository_url

            self.repository: Path | str = triton_repository_url(str(repository))
            self.models = models if models is not None else stored_models(str(repository))
        else:
            self.repository = Path(repository).resolve()
            if not self.repository.is_dir():
                raise ServerError(f"no model repository at {self.repository}; create one with `tritonize repo`")
            self.models = models if models is not None else sorted(
                p.name for p in self.repository.iterdir() if (p / "config.pbtxt").is_file())
        if not self.models:
            raise ServerError(f"the model repository {self.repository} holds no model (no */config.pbtxt)")
        for kind, port in config.ports().items():
            if port:
                check_port_free(port, kind)
        self.binary = find_server(config.binary)
        self.config = replace(config, **{f"{kind}_port": port or free_port() for kind, port in config.ports().items()},
                              cpu_only=self.binary.bundled if config.cpu_only is None else config.cpu_only)
        self.process: subprocess.Popen | None = None
        self.workdir: Path | None = None
        self.log_path: Path | None = None
        self._reaper: subprocess.Popen | None = None
        self._workdir_removal = None  # weakref.finalize: the work folder goes when this object does, at the latest
        self._regions: set[str] = set()  # the Python backend's shared memory regions seen mapped by the server

    def __repr__(self) -> str:  # never the admin key
        return f"TritonServer({str(self.repository)!r}, grpc={self.grpc_url}, http={self.http_url})"

    @property
    def host(self) -> str:
        """Where clients reach it: the address it binds, or loopback where it binds every interface."""
        address = self.config.address
        return HOST if address is None or ipaddress.ip_address(address).is_unspecified else address

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self, backend_dir: Path | None) -> list[str]:
        return self.config.to_argv(self.binary.path, self.repository, self.models, backend_dir)

    def start(self) -> "TritonServer":
        self._remove_workdir()  # a previous run's, kept until now for its log
        self.workdir = Path(tempfile.mkdtemp(prefix="tritonize-server-"))
        self._workdir_removal = lifecycle.remove_at_gc(self, self.workdir)
        backend_dir = prepare_backend_dir(self.workdir / "backends") if self.binary.bundled else None
        self.log_path = self.workdir / "server.log"
        with open(self.log_path, "wb") as log:
            # Its own session: a Ctrl-C in the terminal reaches us, and we drain the server; a group
            # kill of the server reaches its stubs too. Its own folder as the current one: the Python
            # stubs put the server's current folder on sys.path, and a tritonize checkout there would
            # shadow distributions named like its folders (`kernels`, `models`...).
            self.process = lifecycle.spawn(self.command(backend_dir), stdout=log, stderr=subprocess.STDOUT,
                                           env=_server_env(self.memory_bound), start_new_session=True,
                                           cwd=self.workdir,
                                           preexec_fn=lifecycle.parent_death_preexec(self._child_setup()))
        lifecycle.close_at_exit(self)
        try:
            self._reaper = lifecycle.start_reaper(self.process.pid, self.workdir, self.stop_timeout_s)
            self._wait_ready()
            self._regions |= mapped_regions(self.process.pid)
            if self.placement is not None:
                self.placement.place_stubs(self.process.pid)
        except BaseException:
            self.stop()
            raise
        return self

    def _child_setup(self):
        """In the child before exec: the server's cores, so every thread it starts begins there."""
        if self.placement is None:
            return None
        cpus = self.placement.server_cpus
        return lambda: os.sched_setaffinity(0, cpus)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self._startup_error(f"tritonserver exited with code {self.process.returncode} while starting")
            if self.is_ready():
                return
            time.sleep(0.2)
        raise self._startup_error(f"tritonserver was not ready after {self.ready_timeout_s:.0f} s")

    def _startup_error(self, what: str) -> ServerError:
        log = self.log()
        failures = load_failures(log)
        if failures:
            what += "; " + "; ".join(f"model {name!r} failed to load: {why}" for name, why in failures.items())
        if "Address already in use" in log or "address in use" in log.lower():
            what += "; a port is in use (another server?)"
        return ServerError(f"{what}\n--- last lines of the server log ---\n{self.log_tail()}")

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def note_regions(self) -> set[str]:
        """Remember the shared memory regions the server maps now (a reloaded model has new ones), so
        that `stop` removes any the server leaves behind; the ones mapped now."""
        now = mapped_regions(self.process.pid) if self.process is not None else set()
        self._regions |= now
        return now

    def drain(self) -> list[str]:
        """Unload every loaded model and wait, up to `drain_s`, until none is loaded: from the first
        moment the server reports not ready (server and models), refuses new requests (gRPC NOT_FOUND,
        HTTP 404: "... has no available versions") and completes the requests in flight. The models
        still unloading when the time is up, which SIGTERM then leaves to the server's own exit timeout."""
        if self.process is None or self.process.poll() is not None or self.drain_s <= 0:
            return []
        deadline = time.monotonic() + self.drain_s
        # Over HTTP (urllib): the drain also runs from the exit hook, where a new gRPC channel or
        # gevent's HTTP client may no longer start (see serving/admin.py).
        try:
            with TritonAdmin(self.http_url, self.admin_key, "http") as admin:
                loaded = [name for name, m in admin.states().items() if m.state in BUSY_STATES]
                for name in loaded:
                    with contextlib.suppress(AdminCallError):  # e.g. refused for a model an ensemble uses
                        admin.unload(name)
                while True:
                    states = admin.states()
                    busy = [name for name in loaded if name in states and states[name].state in BUSY_STATES]
                    if not busy or time.monotonic() >= deadline:
                        return busy
                    time.sleep(0.05)
        except AdminCallError:  # the server stopped answering: SIGTERM and its own exit timeout do the rest
            return []

    def stop(self) -> int | None:
        """Drain, then SIGTERM, and wait for the server to exit (SIGKILL to its process group only after
        `stop_timeout_s`); then remove the shared memory regions it left. Its exit code."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.note_regions()
                self.drain()
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            code = self.process.returncode
            # A server killed from outside (SIGKILL, a crash) leaves its stubs running, orphaned.
            self._regions |= end_orphaned_stubs(self.process.pid)
            self.process = None
        unlink_regions(self._regions)
        self._regions = set()
        lifecycle.release_reaper(self._reaper)
        self._reaper = None
        lifecycle.forget(self)
        return code

    def _remove_workdir(self) -> None:
        if self._workdir_removal is not None:
            self._workdir_removal()
            self._workdir_removal = None
        self.workdir = None

    def close(self) -> None:
        self.stop()
        self._remove_workdir()

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
