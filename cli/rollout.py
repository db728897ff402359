"""`tritonize rollout`: publish a model's new version and switch the replicas to it one by one, checked,
rolled back on the first failure (deploy/rollout.py)."""
from __future__ import annotations

import os
from pathlib import Path

from .common import CliError, console, out

ADMIN_KEY_ENV = "TRITONIZE_ADMIN_KEY"  # serving.admin.ADMIN_KEY_ENV; named here so that --help loads no stage
DEFAULT_ROWS = 8  # deploy.rollout.DEFAULT_ROWS, for the same reason


def register(sub) -> None:
    p = sub.add_parser("rollout", help="publish a model's new version and roll it out replica by replica",
                       description="Publish REPO_DIR to the store (a changed model becomes version V+1 there), then "
                                   "on each replica in turn: load the model again (admin key), wait for V+1 to be "
                                   "ready, and check --rows rows sent to V+1 against ONNX Runtime in-process. On any "
                                   "failure, every replica already switched and the failing one are pinned back to "
                                   "the version they served, and the command exits 2.")
    p.add_argument("model", metavar="MODEL", help="the model to roll out (a folder of REPO_DIR)")
    p.add_argument("--repo", type=Path, required=True, metavar="REPO_DIR", help="the local repository to publish")
    p.add_argument("--store", required=True, metavar="s3://BUCKET/PREFIX", help="the store the replicas read")
    p.add_argument("--endpoints", required=True, metavar="FILE_OR_URLS",
                   help="the replicas: an endpoints file (PATH.json or file:PATH, as `serve --replicas` writes) "
                        "or host:port gRPC addresses, comma-separated")
    p.add_argument("--admin-key-file", type=Path, metavar="PATH",
                   help=f"the replicas' admin key, in a 0600 file (default: ${ADMIN_KEY_ENV})")
    p.add_argument("--rows", type=int, default=DEFAULT_ROWS, metavar="N",
                   help="rows checked on each replica (default: %(default)s)")
    p.add_argument("--ready-timeout", type=float, default=120.0, metavar="S",
                   help="seconds a replica may take to load the new version (default: %(default)s)")
    p.add_argument("--endpoint-url", metavar="URL",
                   help="an S3-compatible endpoint, http(s)://HOST[:PORT] (default: AWS_ENDPOINT_URL_S3 or "
                        "AWS_ENDPOINT_URL, else AWS)")
    p.set_defaults(func=run)


def admin_key(key_file: Path | None) -> str:
    from ..serving.admin import check_admin_key, read_admin_key_file

    from_env = os.environ.get(ADMIN_KEY_ENV)
    if key_file is not None:
        return read_admin_key_file(key_file)
    if from_env is None:
        raise CliError(f"rollout needs the replicas' admin key: expected --admin-key-file PATH or ${ADMIN_KEY_ENV}, "
                       "got neither")
    return check_admin_key(from_env.strip(), f"${ADMIN_KEY_ENV}")


def run(args) -> int:
    from rich.markup import escape
    from rich.table import Table

    from ..deploy.rollout import RolloutError, rollout

    key = admin_key(args.admin_key_file)
    with console.status(f"rolling out {escape(args.model)}") as status:
        def report(line: str) -> None:
            status.update(line)
            console.print(line, highlight=False)

        result = rollout(args.model, args.repo, args.store, args.endpoints, key, args.rows,
                         endpoint_url=args.endpoint_url, ready_timeout_s=args.ready_timeout, report=report)
    table = Table("replica", "before", "after", "check", "seconds",
                  title=f"{args.model} version {result.version} -> {len(result.replicas)} replicas")
    for r in result.replicas:
        style = "green" if r.ok else "red"
        table.add_row(r.replica, ",".join(map(str, r.before)) or "-", ",".join(map(str, r.after)) or "-",
                      f"[{style}]{escape(r.check)}", f"{r.seconds:.1f}")
    out.print(table)
    if not result.ok:
        raise RolloutError(f"rollout of {args.model} version {result.version} rolled back: {result.failure}")
    out.print(f"[green]{args.model} version {result.version} serves on every replica", highlight=False)
    return 0
