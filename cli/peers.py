"""`tritonize peers`: tritonize beside Mosec and LitServe (each from its own venv, built on demand), the
same ONNX files under one load generator, taking turns; on demand only, not part of `make test` or
`make run`. Wrap it in `flock /tmp/tritonize-bench.lock` on a shared machine."""
from __future__ import annotations

from pathlib import Path

from ..artifacts import DEFAULT_RESULTS, DEFAULT_ROOT
from .common import CliError, console, out

# The servers bench/peers/compare.py knows (a test keeps the two equal).
SERVER_NAMES = ("tritonize", "mosec-batched", "mosec-unbatched", "litserve", "litserve-batched")


def register(sub) -> None:
    p = sub.add_parser("peers", help="tritonize beside Mosec and LitServe on the same ONNX files, one load generator")
    p.add_argument("--models", nargs="+", default=["mlp", "cnn"], metavar="MODEL",
                   help="models with one FP32 input and one output (default: %(default)s)")
    p.add_argument("--levels", nargs="+", type=int, default=[1, 8, 32], metavar="C",
                   help="closed-loop concurrency levels (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; each runs every server at every level (default: 3)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per level (default: %(default)s)")
    p.add_argument("--servers", nargs="+", default=list(SERVER_NAMES), choices=SERVER_NAMES, metavar="SERVER",
                   help=f"tritonize and the peers to run, among {', '.join(SERVER_NAMES)} (default: all)")
    p.add_argument("--envs", type=Path, metavar="DIR",
                   help="where the peers' venvs are built and reused (default: ~/.cache/tritonize/peers)")
    p.add_argument("--artifacts", type=Path, default=DEFAULT_ROOT,
                   help="artifact root; models missing or stale there are exported and optimized, as by `tritonize run` "
                        "(default: %(default)s)")
    p.add_argument("--load-generator", choices=("auto", "wrk", "python"), default="auto",
                   help="auto: wrk where installed (a few microseconds of CPU a request), else tritonize's Python "
                        "senders (tens of microseconds: at 32 clients they take CPU the servers need)")
    p.add_argument("--peer-threads", type=int, default=1, metavar="N",
                   help="the peers' ONNX Runtime threads at every batch size (default: 1; tritonize adds threads for "
                        "large batches where `tritonize optimize` measured that they pay)")
    p.add_argument("--out", type=Path, default=DEFAULT_RESULTS / "peers",
                   help="folder for peers.json and peers.md (default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bench.peers.compare import PeersOptions, run_peers
    from ..bench.peers.envs import PeerError
    from ..bench.peers.report import markdown
    from ..pipeline.current import current_artifacts
    from .tables import FitMarkdown

    opts = PeersOptions(models=tuple(args.models), levels=tuple(args.levels), rounds=args.rounds,
                        duration_s=args.duration, servers=tuple(args.servers), out=args.out, artifacts=args.artifacts,
                        load_generator=args.load_generator, peer_threads=args.peer_threads)
    if args.envs is not None:
        opts.envs = args.envs

    def progress(line: str) -> None:
        console.print(line, highlight=False, markup=False)

    try:
        results = run_peers(opts, progress, current=lambda specs: current_artifacts(specs, opts.artifacts, progress))
    except PeerError as e:
        raise CliError(str(e)) from None
    out.print(FitMarkdown(markdown(results)))
    out.print(f"[bold green]written[/]: {opts.out / 'peers.json'}, {opts.out / 'peers.md'}")
    return 0
