"""`tritonize publish`: upload a model repository to S3-compatible object storage, version by version."""
from __future__ import annotations

from pathlib import Path

from ..artifacts import DEFAULT_REPOSITORY
from .common import console, out


def register(sub) -> None:
    p = sub.add_parser("publish", help="upload a model repository to S3-compatible object storage",
                       description="Upload a model repository to s3://BUCKET/PREFIX. A version already in the store "
                                   "is never overwritten: a changed model goes up as a new version (its number claimed first, so "
                                   "two publishes at once never write the same one), identical content is skipped, "
                                   "config.pbtxt follows its versions and repository.json goes last (it names only "
                                   "whole versions, even after a publish was killed). Credentials and endpoint come from the standard AWS environment "
                                   "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, AWS_ENDPOINT_URL).")
    p.add_argument("repository", type=Path, metavar="REPO_DIR",
                   help=f"a repository `tritonize repo` wrote (its default: {DEFAULT_REPOSITORY})")
    p.add_argument("url", metavar="s3://BUCKET/PREFIX", help="where in the store")
    p.add_argument("--endpoint-url", metavar="URL",
                   help="an S3-compatible endpoint, http(s)://HOST[:PORT] (default: AWS_ENDPOINT_URL_S3 or "
                        "AWS_ENDPOINT_URL, else AWS)")
    p.add_argument("--connect-timeout", type=float, default=5.0, metavar="S",
                   help="seconds to wait for the endpoint (default: %(default)s)")
    p.set_defaults(func=run)


class _RichProgress:
    """One bar per file in flight, each removed when its file is done, so only long uploads stay on screen."""

    def __init__(self, progress):
        self.progress, self.task = progress, None

    def start_file(self, key: str, size: int) -> None:
        self.task = self.progress.add_task("/".join(key.split("/")[-3:]), total=size)  # model/version/file

    def sent(self, nbytes: int) -> None:
        self.progress.update(self.task, advance=nbytes)

    def end_file(self, key: str) -> None:
        self.progress.remove_task(self.task)


def run(args) -> int:
    from rich.markup import escape
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
    from rich.table import Table

    from ..model_repository.publish import publish

    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                        console=console, transient=True)
    with progress:
        result = publish(args.repository, args.url, endpoint_url=args.endpoint_url, progress=_RichProgress(progress),
                         connect_timeout_s=args.connect_timeout)
    table = Table("model", "version", "status", "bytes", title=f"{args.repository} -> {result.location.url}")
    for row in result.rows:
        version = row.version if row.version == row.local_version else f"{row.version} (local {row.local_version})"
        style = "green" if row.status == "uploaded" else "dim"
        table.add_row(row.model, version, f"[{style}]{row.status}", f"{row.bytes:,}")
    out.print(table)
    index = f"index {escape(result.index_key)} " + ("updated" if result.index_written else "unchanged")
    out.print(f"uploaded {result.uploaded_bytes:,} bytes; {index}", highlight=False)
    out.print(f"serve it with: tritonserver --model-repository={escape(result.triton_url)}", highlight=False,
              soft_wrap=True)
    return 0
