"""`tritonize serve`: a real tritonserver on a repository, until Ctrl-C or SIGTERM."""
from __future__ import annotations

from pathlib import Path

from ..artifacts import DEFAULT_REPOSITORY
from .common import CliError, console, out


def register(sub) -> None:
    p = sub.add_parser("serve", help="run tritonserver on a repository until Ctrl-C")
    p.add_argument("--repo", type=Path, default=DEFAULT_REPOSITORY, help="repository folder (default: %(default)s)")
    p.add_argument("--models", nargs="+", help="models to load (default: every model in the repository)")
    p.add_argument("--http-port", type=int, default=8000, help="(default: %(default)s, as tritonserver)")
    p.add_argument("--grpc-port", type=int, default=8001, help="(default: %(default)s)")
    p.add_argument("--metrics-port", type=int, default=8002, help="(default: %(default)s)")
    p.add_argument("--server", help="path to a tritonserver binary (default: PATH, then nvidia-pytriton's)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness (default: %(default)s)")
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


def run(args) -> int:
    import contextlib
    import signal
    import threading

    from ..serving.idle import poll_idle
    from ..serving.server import TritonServer

    server = TritonServer(args.repo, args.models or None, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, binary=args.server, ready_timeout_s=args.timeout,
                          placement=_placement(args.server_cpus, args.instance_cpus, args.stubs_alone))
    # Ctrl-C and SIGTERM only set a flag: a KeyboardInterrupt raised inside subprocess's own polling
    # can leave its wait lock taken, and the stop would then hang.
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    host = contextlib.ExitStack()
    try:
        if args.poll_idle:
            host.enter_context(poll_idle())
        with console.status(f"starting {server.binary.path} on {args.repo}"):
            server.start()
        out.print(f"[bold green]ready[/]: models {', '.join(server.models)}\n"
                  f"  gRPC    {server.grpc_url}\n  HTTP    {server.http_url}\n  metrics {server.metrics_url}\n"
                  + (f"  placement: {server.placement.describe()}\n" if server.placement else "")
                  + ("  idle cores poll (PM QoS CPU latency 0 us, held until the server stops)\n" if args.poll_idle else "")
                  + "Ctrl-C stops the server.")
        while not stop.wait(0.5):
            if server.process.poll() is not None:
                raise CliError(f"tritonserver exited with code {server.process.returncode}\n{server.log_tail()}")
        console.print("stopping (SIGINT, waiting for in-flight requests)...")
        return 0
    finally:
        server.close()
        host.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
