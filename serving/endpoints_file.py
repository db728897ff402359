"""The endpoints file: where each replica of `tritonize serve --replicas N --endpoints-file F` answers,
as a JSON list that clients and scripts read. Written here (atomically) by the replicas, and read here
by everything that reads it: the client's discovery (client/discovery.py) and `tritonize top`.

    [{"grpc": "127.0.0.1:PORT", "http": "127.0.0.1:PORT", "metrics": "http://127.0.0.1:PORT/metrics",
      "pid": 1234}, ...]
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

from ..artifacts import named_disk_error


class EndpointsFileError(ValueError):
    """Not an endpoints file: what was found instead (the caller names the file and what it expected)."""


@dataclass(frozen=True)
class ReplicaEndpoint:
    """Where one replica answers, as the endpoints file has it."""
    grpc: str  # host:port, as gRPC clients take it
    http: str  # host:port
    metrics: str  # http://host:port/metrics
    pid: int  # the tritonserver process: a reader can tell a stale file (pid gone) from a live one

    def to_json(self) -> dict[str, str | int]:
        return asdict(self)


def write_endpoints_file(path: str | os.PathLike, endpoints: Sequence[ReplicaEndpoint]) -> Path:
    """Write `endpoints` to `path` as a JSON list, atomically: a temporary file in the same folder, then a
    rename over `path`, so a reader sees the whole old file or the whole new one, never half of one."""
    path = Path(path)
    check_endpoints_path(path)
    text = json.dumps([e.to_json() for e in endpoints], indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # addresses and pids, no secret: any local client may read them (mkstemp made 0600)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise named_disk_error(e, path) from None
        raise
    return path


def check_endpoints_path(path: Path) -> None:
    """Refuse an endpoints file that could not be written, before any server starts."""
    if path.is_dir():
        raise ValueError(f"endpoints file {path}: expected a file path, got a folder")
    if not path.parent.is_dir():
        raise ValueError(f"endpoints file {path}: expected a file in an existing folder, got {path.parent}, "
                         "which is not a folder")


def read_endpoints(text: str, required: Sequence[str] = ("grpc",)) -> list[dict]:
    """The entries of an endpoints file's text, each a JSON object with a string at every `required` key;
    EndpointsFileError says what was there instead ("got invalid JSON (...)", "got entry 0 = {...}")."""
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        raise EndpointsFileError(f"got invalid JSON ({e})") from None
    if not isinstance(entries, list):
        raise EndpointsFileError(f"got a JSON {type(entries).__name__}")
    for i, entry in enumerate(entries):
        if not (isinstance(entry, dict) and all(isinstance(entry.get(key), str) for key in required)):
            raise EndpointsFileError(f"got entry {i} = {json.dumps(entry)[:120]}")
    if not entries:
        raise EndpointsFileError("got an empty list (no server)")
    return entries
