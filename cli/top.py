"""`tritonize top`: each replica's share of the requests and its queue time, from its own metrics."""
from __future__ import annotations

import time
from pathlib import Path

from .common import CliError, out


def register(sub) -> None:
    p = sub.add_parser("top", help="the load balance across replicas: each one's share of requests and queue time",
                       description="Reads every replica's Prometheus metrics (the endpoints file `tritonize serve "
                                   "--replicas N --endpoints-file F` writes) twice per interval and shows each "
                                   "replica's answered requests, share, failures and average queue time per "
                                   "request in that interval: the measure deploy k8s autoscales on.")
    p.add_argument("--endpoints", type=Path, required=True, metavar="FILE", help="the endpoints file")
    p.add_argument("--model", help="count one model (default: every model)")
    p.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds per window (default: %(default)s)")
    p.add_argument("--count", type=int, default=0, metavar="N", help="stop after N windows (default: until Ctrl-C)")
    p.set_defaults(func=run)


def run(args) -> int:
    from rich.table import Table

    from ..serving.replica_metrics import read_counters, read_endpoints, window

    if not args.interval > 0 or args.count < 0:
        raise CliError(f"expected --interval > 0 and --count >= 0, got {args.interval} and {args.count}")
    endpoints = read_endpoints(args.endpoints)
    before = [read_counters(e["metrics"], args.model) for e in endpoints]
    shown = 0
    while args.count == 0 or shown < args.count:
        time.sleep(args.interval)
        after = [read_counters(e["metrics"], args.model) for e in endpoints]
        table = Table("replica", "requests", "share", "failures", "avg queue ms",
                      title=f"{args.interval:g} s window{' of ' + args.model if args.model else ''}")
        for load in window(endpoints, before, after):
            table.add_row(load.grpc, str(load.requests), f"{load.share:.0%}", str(load.failures),
                          "-" if load.requests == 0 else f"{load.avg_queue_ms:.3f}")
        out.print(table)
        before, shown = after, shown + 1
    return 0
