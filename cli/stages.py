"""`tritonize stages`: where one request's time goes, stage by stage, for one served model at
concurrency 1 (bench/suite/stages.py): Triton's trace API, the runner's own step timings in the stub and the
client's clock on one time line. docs/latency-floor.md reads its tables."""
from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

from ..artifacts import DEFAULT_RESULTS, DEFAULT_ROOT
from .common import CliError, out

PROTOCOLS = ("grpc", "http", "http-lean")  # bench/load/served.py's PROTOCOLS; a test keeps the two equal


def register(sub) -> None:
    p = sub.add_parser("stages", help="one request's time, stage by stage (Triton's trace, the stub's steps, the "
                                      "client), at concurrency 1")
    p.add_argument("model", nargs="?", default="mlp", help="a built-in ONNX model (default: %(default)s)")
    p.add_argument("--protocol", default="http-lean", choices=PROTOCOLS,
                   help="the client: tritonclient over grpc or http, or the lean HTTP sender (default: %(default)s)")
    p.add_argument("--requests", type=int, default=1000, help="traced requests, and as many untraced after them "
                                                              "(default: %(default)s)")
    p.add_argument("--warmup", type=int, default=100, help="traced requests sent first and left out "
                                                            "(default: %(default)s)")
    p.add_argument("--artifacts", type=Path, default=DEFAULT_ROOT, help="artifact root (default: %(default)s)")
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS / "stages",
                   help="folder for stages-MODEL-PROTOCOL.json and .md (default: %(default)s)")
    p.add_argument("--no-stub-timings", action="store_true", help="leave the stub's own step timings off")
    p.add_argument("--no-dynamic-batching", action="store_true", help="serve without the dynamic batcher")
    p.add_argument("--server-arg", action="append", default=[], metavar="FLAG",
                   help="one more tritonserver flag, repeatable (e.g. --server-arg=--http-thread-count=2)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bench.suite.stages import markdown, measure, write_outputs
    from .tables import FitMarkdown

    if args.requests < 1 or args.warmup < 0:
        raise CliError(f"expected --requests >= 1 and --warmup >= 0, got {args.requests} and {args.warmup}")
    command = shlex.join(["tritonize", "stages", *sys.argv[2:]]) if sys.argv[1:2] == ["stages"] else "tritonize stages"
    with tempfile.TemporaryDirectory(prefix="tritonize-stages-") as tmp:
        result = measure(args.model, args.protocol, args.requests, args.artifacts.resolve(), Path(tmp), args.warmup,
                         not args.no_stub_timings, not args.no_dynamic_batching, args.server_arg, command)
    paths = write_outputs(result, args.out)
    out.print(FitMarkdown(markdown(result)))
    out.print(f"[bold green]written[/]: {', '.join(map(str, paths))}")
    return 0
