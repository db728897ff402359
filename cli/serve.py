"""`tritonize serve`: a real tritonserver on a repository (or N replicas of it), until Ctrl-C, SIGTERM or SIGHUP."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import threading
from pathlib import Path

from ..artifacts import DEFAULT_REPOSITORY
from .common import CliError, console, out

ADMIN_KEY_ENV = "TRITONIZE_ADMIN_KEY"  # serving.admin.ADMIN_KEY_ENV; named here so that --help loads no stage
KEY_FILE_NAME = "admin_key"
DEFAULT_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}  # tritonserver's own; one server only

EPILOG = f"""\
admin key:
  The server answers inference, health, metadata and model config requests from anyone; model
  load/unload and the repository index, shared memory registration, statistics, trace and log
  settings need the admin key as a request header: 'tritonize-admin-key' over HTTP,
  'triton-grpc-protocol-tritonize-admin-key' over gRPC (Triton's prefix for restricted gRPC calls).
  The key comes from --admin-key-file PATH (read if the file exists, which only its owner may read;
  else a new key is written there, mode 0600), or from ${ADMIN_KEY_ENV}; with neither, a new key is
  written to a 0600 file in the server's private work folder, removed when it stops. serve prints
  where the key is, never the key. tritonserver takes the key on its command line: local users who
  can list processes can read it there.

stopping:
  Ctrl-C, SIGTERM and SIGHUP drain: the models are unloaded, so the server reports not ready at
  once and refuses new requests (gRPC NOT_FOUND, HTTP 404 "... has no available versions") while
  the requests in flight complete, for up to --drain-seconds; then tritonserver exits. If serve itself
  is killed, tritonserver gets SIGTERM (parent-death signal) and a helper process removes what it
  leaves (shared memory, its work folder).

model health:
  Every --health-interval seconds serve checks the models' Python-backend stub processes; a model
  whose stub died (the server keeps it READY while every request fails) is reloaded.

replicas:
  --replicas N starts N tritonservers side by side on free loopback ports, all reading the same
  repository (a folder or s3://), with one admin key and a health loop each. --endpoints-file F gets,
  once all are ready, a JSON list with one object per replica, written atomically (a temporary file,
  then a rename): {{"grpc": "host:port", "http": "host:port", "metrics": "http://host:port/metrics",
  "pid": <tritonserver pid>}}; serve prints the same. Ctrl-C, SIGTERM and SIGHUP remove F and drain
  all replicas at once. It is a stand-in for a cluster in tests and demos (give the grpc addresses
  to `tritonize infer --url` or to TritonClient), not an orchestrator: a replica whose tritonserver
  dies is restarted on its ports after 1 s, then 2, 4... (5 restarts at most), and F is rewritten with
  its new pid; one past its restarts is given up and leaves F (serve then exits 1, at once when none is
  left). Nothing is rescheduled or scaled. For a real cluster, see `tritonize deploy k8s`.
"""


def register(sub) -> None:
    p = sub.add_parser("serve", help="run tritonserver on a repository until Ctrl-C", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", default=str(DEFAULT_REPOSITORY), metavar="FOLDER|s3://BUCKET/PREFIX",
                   help="repository folder, or one in S3-compatible storage that `tritonize publish` wrote (endpoint "
                        "and credentials from the AWS environment, AWS_ENDPOINT_URL included) (default: %(default)s)")
    p.add_argument("--models", nargs="+", help="models to load (default: every model in the repository)")
    p.add_argument("--http-port", type=int, help=f"(default: {DEFAULT_PORTS['http']}, as tritonserver; with "
                   "--replicas > 1 a free port per replica, and a fixed one is refused)")
    p.add_argument("--grpc-port", type=int, help=f"(default: {DEFAULT_PORTS['grpc']})")
    p.add_argument("--metrics-port", type=int, help=f"(default: {DEFAULT_PORTS['metrics']})")
    p.add_argument("--replicas", type=int, default=1, metavar="N",
                   help="start N servers on the same repository, on free loopback ports: a stand-in for a cluster in "
                        "tests and demos, not an orchestrator (see below) (default: %(default)s)")
    p.add_argument("--endpoints-file", type=Path, metavar="F",
                   help="once serving, write the servers' addresses and pids there as JSON (atomically); removed "
                        "when serve stops")
    p.add_argument("--server", help="path to a tritonserver binary (default: PATH, then nvidia-pytriton's)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness (default: %(default)s)")
    p.add_argument("--admin-key-file", type=Path, metavar="PATH",
                   help=f"the admin key's file: read if it exists, else a new key is written there (mode 0600). "
                        f"Default: ${ADMIN_KEY_ENV} if set, else a new key in a 0600 file serve names (see below)")
    p.add_argument("--drain-seconds", type=float, default=5.0, metavar="S",
                   help="on Ctrl-C/SIGTERM/SIGHUP, how long requests in flight may take to complete (default: "
                        "%(default)s); also the server's own exit timeout")
    p.add_argument("--health-interval", type=float, default=1.0, metavar="S",
                   help="seconds between checks of the models' stub processes; 0 turns the checks off "
                        "(default: %(default)s)")
    p.add_argument("--server-cpus", metavar="LIST", help="cores for the server's own threads, e.g. 0 or 0-3 "
                   "(with --instance-cpus; run clients there too)")
    p.add_argument("--instance-cpus", metavar="RANGE", help="cores for the model instances of CPU-target configs, "
                   "e.g. 1 or 4-7 (Triton host policy)")
    p.add_argument("--stubs-alone", action="store_true",
                   help="with the two above: only the Python-backend stubs on --instance-cpus, their instance threads "
                        "with the server (each stub keeps its caches, and every request crosses cores)")
    p.add_argument("--memory-bound", action="store_true",
                   help="keep the server's memory at its baseline after oversized requests (glibc maps large blocks "
                        "and trims its heap; Kubernetes pods always do): costs 0.6-0.8x the throughput where batches "
                        "form, so it is off by default")
    p.add_argument("--poll-idle", action="store_true",
                   help="while serving, keep idle cores polling instead of halting (a PM QoS CPU latency request of "
                        "0 us, released on exit; needs write access to /dev/cpu_dma_latency): cheaper wake-ups per "
                        "request, paid for with idle cores that spin")
    p.set_defaults(func=run)


def _placement(server_cpus: str | None, instance_cpus: str | None, stubs_alone: bool):
    from ..serving.placement import Placement

    if (server_cpus is None) != (instance_cpus is None):
        raise CliError("--server-cpus and --instance-cpus go together (e.g. --server-cpus 0 --instance-cpus 1), "
                       f"got only {'--server-cpus' if server_cpus else '--instance-cpus'}")
    if stubs_alone and server_cpus is None:
        raise CliError("--stubs-alone places the stubs on --instance-cpus: give --server-cpus and --instance-cpus "
                       "too (e.g. --server-cpus 0 --instance-cpus 1 --stubs-alone)")
    return None if server_cpus is None else Placement.parse(server_cpus, instance_cpus, stubs_alone)


def admin_key_source(key_file: Path | None) -> tuple[str | None, str, Path | None]:
    """(key, where it is, a file to write a new key to): the key is None when serve makes one."""
    from ..serving.admin import check_admin_key, read_admin_key_file

    from_env = os.environ.get(ADMIN_KEY_ENV)
    if key_file is not None and from_env is not None:
        raise CliError(f"give the admin key one way: --admin-key-file or ${ADMIN_KEY_ENV}, got both")
    if from_env is not None:
        return check_admin_key(from_env.strip(), f"${ADMIN_KEY_ENV}"), f"from ${ADMIN_KEY_ENV}", None
    if key_file is not None and key_file.exists():
        return read_admin_key_file(key_file), f"read from {key_file}", None
    if key_file is not None:
        if not key_file.parent.is_dir():
            raise CliError(f"--admin-key-file {key_file}: expected an existing file or a new file in an existing "
                           f"folder, got a path in {key_file.parent}, which is not a folder")
        return None, f"new, written to {key_file} (mode 0600)", key_file
    return None, "new, written to {} (mode 0600, removed when the server stops)", None


@contextlib.contextmanager
def _stop_on_signals():
    """(an Event set by Ctrl-C, SIGTERM or SIGHUP, the signals caught); the old handlers come back after.

    The handlers only set the flag: a KeyboardInterrupt raised inside subprocess's own polling can leave
    its wait lock taken, and the stop would then hang. SIGHUP (the terminal went away) stops the servers
    like SIGTERM instead of killing serve without a drain."""
    stop = threading.Event()
    caught: list[int] = []

    def on_signal(signum, _frame):
        caught.append(signum)
        stop.set()

    handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield stop, caught
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def _signal_name(caught: list[int]) -> str:
    return signal.Signals(caught[0]).name if caught else "stop"


def _check_options(args) -> None:
    if not args.drain_seconds >= 0:
        raise CliError(f"--drain-seconds: expected seconds >= 0, got {args.drain_seconds:g}")
    if not args.timeout > 0:
        raise CliError(f"--timeout: expected seconds > 0, got {args.timeout:g}")
    if not args.health_interval >= 0:
        raise CliError(f"--health-interval: expected seconds >= 0 (0: no checks), got {args.health_interval:g}")
    if args.replicas < 1:
        raise CliError(f"--replicas: expected a number of servers >= 1, got {args.replicas}")
    fixed = [f"--{kind}-port {getattr(args, kind + '_port')}" for kind in ("http", "grpc", "metrics")
             if getattr(args, kind + "_port")]  # 0 asks for a free port, as each replica gets anyway
    if args.replicas > 1 and fixed:
        raise CliError(f"--replicas {args.replicas} starts each replica on free ports (listed in --endpoints-file): "
                       f"expected no fixed port, got {', '.join(fixed)}")
    if args.endpoints_file is not None:
        from ..serving.endpoints_file import check_endpoints_path

        try:
            check_endpoints_path(args.endpoints_file)
        except ValueError as e:
            raise CliError(f"--endpoints-file: {e}") from None


def run(args) -> int:
    _check_options(args)
    key, key_where, write_key_to = admin_key_source(args.admin_key_file)
    config = server_config(args, key)
    served = _Replicas(args, config) if args.replicas > 1 else _One(args, config)
    return _serve(args, served, key is None, key_where, write_key_to)


def server_config(args, key: str | None):
    """The one ServerConfig (serving/config.py) of every server serve starts: a single one on the ports
    given (tritonserver's own by default), replicas each on free ones; a new admin key when `key` is None."""
    from ..serving.config import ServerConfig

    ports = {}
    if args.replicas == 1:
        given = {kind: getattr(args, f"{kind}_port") for kind in DEFAULT_PORTS}
        ports = {f"{kind}_port": DEFAULT_PORTS[kind] if port is None else port for kind, port in given.items()}
    # stop_timeout_s: the config's default, the drain and 30 s more for tritonserver to exit.
    return ServerConfig(**ports, binary=args.server, ready_timeout_s=args.timeout, admin_key=key,
                        placement=_placement(args.server_cpus, args.instance_cpus, args.stubs_alone),
                        drain_s=args.drain_seconds, memory_bound=args.memory_bound)


def _serve(args, served, new_key: bool, key_where: str, write_key_to: Path | None) -> int:
    """Start `served` (one server or the replicas), say where it answers, and serve until a signal or its
    end; then drain and stop it. What differs between one server and replicas is `served`'s."""
    import time

    from ..serving.admin import write_admin_key_file
    from ..serving.endpoints_file import write_endpoints_file
    from ..serving.idle import poll_idle

    host = contextlib.ExitStack()
    endpoints_file = None
    with _stop_on_signals() as (stop, caught):
        try:
            if args.poll_idle:
                host.enter_context(poll_idle())
            with console.status(served.starting()):
                served.start()
            if new_key:  # one key for all replicas, in the first one's work folder unless a file was named
                path = write_key_to or served.servers[0].workdir / KEY_FILE_NAME
                write_admin_key_file(path, served.servers[0].admin_key)
                key_where = served.key_note(key_where.format(path))
            if args.endpoints_file is not None:  # written once all are ready: its appearance means "serving"
                endpoints_file = write_endpoints_file(args.endpoints_file, served.endpoints())
            served.say_ready(key_where, _notes(args, served, endpoints_file))
            while not stop.wait(0.5):
                if served.watch() and endpoints_file is not None:  # a restart's new pid, a replica given up
                    endpoints_file = write_endpoints_file(args.endpoints_file, served.endpoints())
            console.print(f"{_signal_name(caught)}: {served.draining()} (not ready, new requests refused, up to "
                          f"{args.drain_seconds:g} s for those in flight)...", highlight=False)
            _remove(endpoints_file)
            started = time.monotonic()
            codes = served.stop()
            console.print(f"stopped in {time.monotonic() - started:.1f} s (tritonserver {codes})", highlight=False)
            return served.outcome()
        finally:
            _remove(endpoints_file)
            served.close()
            host.close()


def _notes(args, served, endpoints_file: Path | None) -> str:
    """The ready message's lines on what applies to every server."""
    many = len(served.servers) > 1
    placement = served.servers[0].placement
    stop = "servers stop" if many else "server stops"
    return ((f"  endpoints file: {endpoints_file}\n" if endpoints_file else "")
            + (f"  placement{' (each replica)' if many else ''}: {placement.describe()}\n" if placement else "")
            + (f"  idle cores poll (PM QoS CPU latency 0 us, held until the {stop})\n" if args.poll_idle else "")
            + (f"  model health: stubs checked every {args.health_interval:g} s\n" if args.health_interval > 0 else ""))


def _health_line(line: str) -> None:
    console.print(f"[yellow]health:[/] {line}", highlight=False)


def _remove(path) -> None:
    """Remove the endpoints file: it lists servers that take requests, and these are about to stop."""
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class _One:
    """One server on fixed ports, with its model-health loop; if it dies, serve ends with its log."""

    def __init__(self, args, config):
        from ..serving.server import TritonServer

        self.args = args
        self.server = TritonServer(args.repo, args.models or None, config=config)
        self.servers = [self.server]
        self.health = None

    def starting(self) -> str:
        return f"starting {self.server.binary.path} on {self.args.repo}"

    def start(self) -> None:
        from ..serving.health import ModelHealth

        self.server.start()
        if self.args.health_interval > 0:
            self.health = ModelHealth(self.server, self.args.health_interval, report=_health_line).start()

    def key_note(self, where: str) -> str:
        return where

    def endpoints(self) -> list:
        from ..serving.replicas import endpoint_of

        return [endpoint_of(self.server)]

    def say_ready(self, key_where: str, notes: str) -> None:
        s = self.server
        out.print(f"[bold green]ready[/]: models {', '.join(s.models)}\n"
                  f"  gRPC    {s.grpc_url}\n  HTTP    {s.http_url}\n  metrics {s.metrics_url}\n"
                  f"  admin key: {key_where}\n{notes}"
                  f"Ctrl-C (or SIGTERM, SIGHUP) drains for up to {self.args.drain_seconds:g} s and stops the server.",
                  highlight=False)

    def watch(self) -> bool:
        if self.server.process.poll() is not None:
            raise CliError(f"tritonserver exited with code {self.server.process.returncode}\n{self.server.log_tail()}")
        return False

    def draining(self) -> str:
        return "draining"

    def stop(self) -> str:
        self._stop_health()
        return f"exit code {self.server.stop()}"

    def outcome(self) -> int:
        return 0

    def close(self) -> None:
        self._stop_health()
        self.server.close()

    def _stop_health(self) -> None:
        if self.health is not None:
            self.health.stop()


class _Replicas:
    """N servers on free ports (serving/replicas.py runs their health loops and restarts one that dies, with
    a back-off, up to a limit); serve exits 1 if one was given up, and at once when none is left."""

    def __init__(self, args, config):
        from ..serving.replicas import Replicas

        self.args = args
        self.replicas = Replicas(args.repo, args.replicas, args.models or None, config=config,
                                 health_interval_s=args.health_interval, report=_health_line)
        self.servers = self.replicas.servers

    def starting(self) -> str:
        return f"starting {len(self.servers)} x {self.servers[0].binary.path} on {self.args.repo}"

    def start(self) -> None:
        self.replicas.start()

    def key_note(self, where: str) -> str:
        return where.replace("the server stops", "the replicas stop")

    def endpoints(self) -> list:
        return self.replicas.endpoints()

    def say_ready(self, key_where: str, notes: str) -> None:
        import json

        endpoints = self.endpoints()
        rows = "".join(f"  replica {i}: gRPC {e.grpc}  HTTP {e.http}  metrics {e.metrics}  pid {e.pid}\n"
                       for i, e in enumerate(endpoints))
        out.print(f"[bold green]ready[/]: {len(endpoints)} replicas, models {', '.join(self.replicas.models)}\n"
                  f"{rows}  admin key (all replicas): {key_where}\n{notes}", highlight=False)
        out.print(json.dumps([e.to_json() for e in endpoints], indent=2), markup=False, highlight=False,
                  soft_wrap=True)
        out.print(f"Ctrl-C (or SIGTERM, SIGHUP) drains all {len(endpoints)} replicas for up to "
                  f"{self.args.drain_seconds:g} s and stops them.", highlight=False)

    def watch(self) -> bool:
        """Report what heal() did; True when the endpoints changed (a restart's new pid, a replica given up)."""
        from rich.markup import escape

        events = self.replicas.heal()
        for e in events:
            tail = f"\n{escape(self.servers[e.index].log_tail(10))}" if e.what in ("died", "gave up") else ""
            style = "green" if e.what == "restarted" else "red"
            console.print(f"[bold {style}]replica {e.index}[/] ({self.servers[e.index].grpc_url}): {e.what}: "
                          f"{escape(e.detail)}{tail}", highlight=False)
        if len(self.replicas.gone) == len(self.servers):
            raise CliError(f"every replica's tritonserver exited and was given up after "
                           f"{self.replicas.restart_limit} restart(s) each; see the logs above")
        return any(e.what in ("restarted", "gave up") for e in events)

    def draining(self) -> str:
        left = len(self.servers) - len(self.replicas.gone)
        return f"draining {left} replica{'s' if left != 1 else ''}"

    def stop(self) -> str:
        return f"exit codes {', '.join('-' if c is None else str(c) for c in self.replicas.stop())}"

    def outcome(self) -> int:
        gone, restarts = sorted(self.replicas.gone), sum(self.replicas.restarts)
        if restarts:
            console.print(f"{restarts} restart(s) while serving: " + ", ".join(
                f"replica {i} x{n}" for i, n in enumerate(self.replicas.restarts) if n), highlight=False)
        if not gone:
            return 0
        console.print(f"[bold red]{len(gone)} of {len(self.servers)} replicas given up while serving: "
                      f"{', '.join(f'replica {i}' for i in gone)}", highlight=False)
        return 1

    def close(self) -> None:
        self.replicas.close()
