"""One artifact folder per model, described by a manifest, written atomically.

`artifacts/<model>/manifest.json` records which spec produced the folder (name + fingerprint), every
file with its SHA-256, the tool versions and each stage's report. A later stage calls
`ModelArtifacts.load` (model_artifacts.py), which refuses a folder that is missing, half-written, from
another spec or corrupted.
Whole folders are built beside their final place and swapped in with a rename; single files are
written to a temporary name and renamed.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import os
import platform
import re
import shutil
import uuid
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # the CLI reads the names below without importing the models
    from .models.spec import ModelSpec

# Every file and folder name a stage writes, in one place: the stages and the CLI import them from here.
DEFAULT_ROOT = Path("artifacts")  # artifacts/<model>/: what export and optimize write
DEFAULT_REPOSITORY = Path("build/model_repository")  # what `tritonize repo` writes and `serve` reads
DEFAULT_RESULTS = Path("build/results")  # benchmark reports: <root>/<host>-<date>[-quick]/
MANIFEST = "manifest.json"  # artifacts/<model>/manifest.json: which spec, which files, each stage's report
ONNX_FILE = "model.onnx"  # the exported graph; also each variant's file and a repository's copy
WEIGHTS_FILE = "weights.safetensors"  # the PyTorch weights the ONNX file was exported from
PARITY_FILE = "parity.json"  # export's check against PyTorch
VARIANTS_DIR = "variants"  # artifacts/<model>/variants/<variant>/model.onnx: optimize's variants
VARIANTS = ("fp32", "ort_opt", "int8", "int8_static")  # the ONNX variants optimize can build, by folder name
CHOICE_FILE = "choice.json"  # optimize's pick among the variants, and why
TUNING_FILE = "tuning.json"  # <artifacts>/tuning.json: the batching sweep's measured settings, by model
ENGINE_FILE = "model.plan"  # a TensorRT engine
ENGINE_INFO = "engine.json"  # how that engine was built
INDEX_FILE = "repository.json"  # a generated model repository's index: what each model serves
RESULTS_FILE = "results.json"  # a benchmark report folder's raw results: what marks the folder as one
# Files an artifact folder may hold without a manifest entry. TensorRT's timing cache is shared by the
# engine builds of every precision and rewritten by each, so no digest of it stays true; it only
# speeds builds up, and every engine built with it is parity-checked before it is listed.
TENSORRT_TIMING_CACHE = "tensorrt/timing.cache"
UNLISTED = (TENSORRT_TIMING_CACHE,)
# The hidden temporary names of write_json, atomic_dir and a stage's own `.<file>.tmp`: a stage in
# progress (or one killed) leaves them, and no stage ever reads one, so they are not artifacts.
# A write the machine refused (disk or quota full, a failed device, a read-only filesystem): what every
# writer passes on as is, and the CLI reports as one line naming the file.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS)
TEMPORARY_NAME = re.compile(r"\..+(\.tmp|\.tmp-[0-9a-f]{8}|\.old-[0-9a-f]{8})")


class ArtifactError(RuntimeError):
    """An artifact folder that a stage cannot use, with what to do about it. `problem` is the what
    alone, for callers that do something about it themselves (`tritonize run` rebuilds)."""

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem or message


def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("tritonize", "torch", "onnx", "onnxruntime", "onnxscript", "numpy", "triton"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_json(path: Path, obj) -> None:
    """Write JSON to a temporary name beside `path`, then rename: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        raise named_disk_error(e, path) from None
    finally:
        tmp.unlink(missing_ok=True)


def named_disk_error(e: OSError, path: Path) -> OSError:
    """`e`, naming `path` where it names no file: a full disk often shows only when buffered bytes are
    flushed, and Python's error then has no file name, which the CLI's one line needs."""
    if e.filename is None and e.errno in DISK_ERRNOS:
        return OSError(e.errno, e.strerror, str(path))
    return e


@contextlib.contextmanager
def atomic_dir(final: Path, marker: str | None = None) -> Iterator[Path]:
    """Yield an empty folder beside `final`; on success it replaces `final`, on error it is removed.

    With `marker` (a file every folder of this kind holds, e.g. manifest.json), an existing `final`
    that has files but not the marker is someone else's folder: it is refused before any work, never
    replaced.
    """
    final = Path(final)
    if marker:
        check_replaceable(final, marker)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise named_disk_error(e, final) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def check_replaceable(final: Path, marker: str) -> None:
    """Raise unless `final` is absent, empty, or holds `marker` (then a tritonize stage wrote it)."""
    if final.is_dir() and any(final.iterdir()) and not (final / marker).is_file():
        raise FileExistsError(f"{final} exists and holds files but no {marker}, so it was not written by tritonize; "
                              f"refusing to replace it (expected a new folder or one from an earlier run)")
    if final.exists() and not final.is_dir():
        raise FileExistsError(f"{final} exists and is not a folder; refusing to replace it")


def model_dir(root: Path, spec: ModelSpec) -> Path:
    return Path(root) / spec.name
