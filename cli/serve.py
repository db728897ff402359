"""`tritonize serve`: a real tritonserver on a repository, until Ctrl-C, SIGTERM or SIGHUP."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..artifacts import DEFAULT_REPOSITORY
from .common import CliError, console, out

ADMIN_KEY_ENV = "TRITONIZE_ADMIN_KEY"  # serving.admin.ADMIN_KEY_ENV; named here so that --help loads no stage
KEY_FILE_NAME = "admin_key"

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
"""


def register(sub) -> None:
    p = sub.add_parser("serve", help="run tritonserver on a repository until Ctrl-C", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", default=str(DEFAULT_REPOSITORY), metavar="FOLDER|s3://BUCKET/PREFIX",
                   help="repository folder, or one in S3-compatible storage that `tritonize publish` wrote (endpoint "
                        "and credentials from the AWS environment, AWS_ENDPOINT_URL included) (default: %(default)s)")
    p.add_argument("--models", nargs="+", help="models to load (default: every model in the repository)")
    p.add_argument("--http-port", type=int, default=8000, help="(default: %(default)s, as tritonserver)")
    p.add_argument("--grpc-port", type=int, default=8001, help="(default: %(default)s)")
    p.add_argument("--metrics-port", type=int, default=8002, help="(default: %(default)s)")
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


def run(args) -> int:
    import contextlib
    import signal
    import threading
    import time

    from ..serving.admin import write_admin_key_file
    from ..serving.health import ModelHealth
    from ..serving.idle import poll_idle
    from ..serving.server import TritonServer

    if not args.drain_seconds >= 0:
        raise CliError(f"--drain-seconds: expected seconds >= 0, got {args.drain_seconds:g}")
    if not args.health_interval >= 0:
        raise CliError(f"--health-interval: expected seconds >= 0 (0: no checks), got {args.health_interval:g}")
    key, key_where, write_key_to = admin_key_source(args.admin_key_file)
    server = TritonServer(args.repo, args.models or None, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, binary=args.server, ready_timeout_s=args.timeout,
                          placement=_placement(args.server_cpus, args.instance_cpus, args.stubs_alone),
                          admin_key=key, drain_s=args.drain_seconds,
                          stop_timeout_s=max(30.0, args.drain_seconds + 30.0))
    # Ctrl-C, SIGTERM and SIGHUP only set a flag: a KeyboardInterrupt raised inside subprocess's own
    # polling can leave its wait lock taken, and the stop would then hang. SIGHUP (the terminal went
    # away) stops the server like SIGTERM instead of killing serve without a drain.
    stop = threading.Event()
    caught: list[int] = []

    def on_signal(signum, _frame):
        caught.append(signum)
        stop.set()

    handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    host = contextlib.ExitStack()
    health = None
    try:
        if args.poll_idle:
            host.enter_context(poll_idle())
        with console.status(f"starting {server.binary.path} on {args.repo}"):
            server.start()
        if key is None:
            path = write_key_to or server.workdir / KEY_FILE_NAME
            write_admin_key_file(path, server.admin_key)
            key_where = key_where.format(path)
        if args.health_interval > 0:
            health = ModelHealth(server, args.health_interval,
                                 report=lambda line: console.print(f"[yellow]health:[/] {line}", highlight=False)).start()
        out.print(f"[bold green]ready[/]: models {', '.join(server.models)}\n"
                  f"  gRPC    {server.grpc_url}\n  HTTP    {server.http_url}\n  metrics {server.metrics_url}\n"
                  f"  admin key: {key_where}\n"
                  + (f"  placement: {server.placement.describe()}\n" if server.placement else "")
                  + ("  idle cores poll (PM QoS CPU latency 0 us, held until the server stops)\n" if args.poll_idle else "")
                  + (f"  model health: stubs checked every {args.health_interval:g} s\n" if health else "")
                  + f"Ctrl-C (or SIGTERM, SIGHUP) drains for up to {args.drain_seconds:g} s and stops the server.",
                  highlight=False)
        while not stop.wait(0.5):
            if server.process.poll() is not None:
                raise CliError(f"tritonserver exited with code {server.process.returncode}\n{server.log_tail()}")
        name = signal.Signals(caught[0]).name if caught else "stop"
        console.print(f"{name}: draining (not ready, new requests refused, up to {args.drain_seconds:g} s "
                      "for those in flight)...", highlight=False)
        started = time.monotonic()
        if health is not None:
            health.stop()
        code = server.stop()
        console.print(f"stopped in {time.monotonic() - started:.1f} s (tritonserver exit code {code})",
                      highlight=False)
        return 0
    finally:
        if health is not None:
            health.stop()
        server.close()
        host.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
