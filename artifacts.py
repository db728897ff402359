"""One artifact folder per model, described by a manifest, written atomically.

`artifacts/<model>/manifest.json` records which spec produced the folder (name + fingerprint), every
file with its SHA-256, the tool versions and each stage's report. A later stage calls
`load_manifest`, which refuses a folder that is missing, half-written, from another spec or corrupted.
Whole folders are built beside their final place and swapped in with a rename; single files are
written to a temporary name and renamed.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shutil
import uuid
from importlib import metadata
from pathlib import Path, PurePosixPath
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
_TEMPORARY = re.compile(r"\..+(\.tmp|\.tmp-[0-9a-f]{8}|\.old-[0-9a-f]{8})")


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
    finally:
        tmp.unlink(missing_ok=True)


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


def _weights_sha256(spec: ModelSpec) -> str | None:
    path = Path(spec.weights)
    return sha256(path) if path.is_file() else None


def model_dir(root: Path, spec: ModelSpec) -> Path:
    return Path(root) / spec.name


def new_manifest(spec: ModelSpec, folder: Path, files: list[str], **reports) -> dict:
    return {
        "model": spec.name,
        "spec_fingerprint": spec.fingerprint(),
        # A user's model: the reference, its file and that file's SHA-256 (None for a built-in model).
        "source": spec.source.to_json() if spec.source else None,
        # Trained weights the spec names: the file and its SHA-256 (None when the factory makes them).
        "weights": {"file": spec.weights, "sha256": _weights_sha256(spec)} if spec.weights else None,
        "created": now_iso(),
        "versions": tool_versions(),
        "files": {name: sha256(folder / name) for name in files},
        **reports,
    }


def _under(name: str, folder: str) -> bool:
    return name.startswith(folder.rstrip("/") + "/")


def load_manifest(root: Path, spec: ModelSpec, verify: bool = True, ignore_under: str | None = None) -> dict:
    """The manifest of `spec`'s artifact folder, after checking it belongs to `spec` and is intact.

    `ignore_under` leaves a sub-folder out of the check (a stage about to rebuild it).
    """
    folder = model_dir(root, spec)

    def unusable(problem: str) -> ArtifactError:
        return ArtifactError(f"model {spec.name!r}: {problem}; run `tritonize export {spec.reference} "
                             f"--artifacts {root}` to produce it", problem)

    if not folder.is_dir():
        raise unusable(f"no artifact folder at {folder}")
    path = folder / MANIFEST
    if not path.is_file():
        raise unusable(f"{path} is missing (incomplete export?)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise unusable(f"{path} is not valid JSON ({e})") from None
    if manifest.get("model") != spec.name or manifest.get("spec_fingerprint") != spec.fingerprint():
        raise unusable(f"{folder} was produced from another model description (expected {spec.name}@"
                       f"{spec.fingerprint()}, found {manifest.get('model')}@{manifest.get('spec_fingerprint')})")
    recorded = (manifest.get("source") or {}).get("sha256")
    if spec.source is not None and spec.source.sha256 and recorded != spec.source.sha256:
        raise unusable(f"{folder} was exported from {spec.source.file} as it was before it changed "
                       f"(SHA-256 {str(recorded)[:12]} then, {spec.source.sha256[:12]} now)")
    if spec.weights and (manifest.get("weights") or {}).get("sha256") != _weights_sha256(spec):
        raise unusable(f"{folder} was exported with other weights than {spec.weights} holds now")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not all(isinstance(v, str) for v in listed.values()):
        raise unusable(f"{path}: expected 'files' to map each file to its SHA-256, got {_brief(listed)}")
    for name in listed:
        _check_listed_name(folder, path, name, unusable)
    if verify:
        files = {k: v for k, v in listed.items() if not (ignore_under and _under(k, ignore_under))}
        for name, digest in files.items():
            file = folder / name
            if not file.is_file():
                raise unusable(f"{file} is listed in the manifest but missing")
            if sha256(file) != digest:
                raise unusable(f"{file} does not match its manifest digest (corrupted or edited)")
        # A file with no entry would be read unchecked (an entry deleted, or a file added, say an ONNX
        # graph's external data), so every file must have one.
        for name in _folder_files(folder):
            if name not in listed and name not in UNLISTED and not (ignore_under and _under(name, ignore_under)):
                raise unusable(f"{folder / name} is in the artifact folder but not listed in {path} "
                                f"(added, or its entry deleted)")
    return manifest


def _brief(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _check_listed_name(folder: Path, manifest: Path, name, unusable) -> None:
    """A manifest entry must name a file inside `folder`, as a plain relative POSIX path: a stage
    reads what the manifest lists, so an entry like ../../elsewhere would be read from anywhere."""
    parts = PurePosixPath(name).parts if isinstance(name, str) else ()
    if not parts or PurePosixPath(name).is_absolute() or any(p in (".", "..") for p in parts) \
            or PurePosixPath(name).as_posix() != name:
        raise unusable(f"{manifest} lists {_brief(name)} under 'files'; expected a path relative to {folder}, "
                       f"without '..'")
    # realpath, not Path.resolve: it never raises, even on a loop of links
    target = Path(os.path.realpath(folder / name))
    if not target.is_relative_to(os.path.realpath(folder)):  # through a symbolic link
        raise unusable(f"{manifest} lists {name!r}, which resolves to {target}, outside {folder}")


def _folder_files(folder: Path) -> Iterator[str]:
    """Every file of `folder` (links included, never followed) as a relative POSIX path, but the
    manifest itself and temporary names."""
    for top, dirs, files in os.walk(folder):
        rel = PurePosixPath(Path(top).relative_to(folder).as_posix())
        dirs[:] = [d for d in dirs if not _TEMPORARY.fullmatch(d)]
        # os.walk lists a link to a folder among the folders, and does not enter it: report it as a file.
        names = files + [d for d in dirs if (Path(top) / d).is_symlink()]
        for name in names:
            if not _TEMPORARY.fullmatch(name) and (rel / name).as_posix() != MANIFEST:
                yield (rel / name).as_posix()


def update_manifest(root: Path, spec: ModelSpec, files: list[str], replace_under: str | None = None, **reports) -> dict:
    """Add files (with fresh digests) and stage reports to an existing, verified manifest.

    `replace_under` drops the entries of a sub-folder that the caller has just replaced as a whole.
    """
    folder = model_dir(root, spec)
    manifest = load_manifest(root, spec, ignore_under=replace_under)
    if replace_under:
        manifest["files"] = {k: v for k, v in manifest["files"].items() if not _under(k, replace_under)}
    manifest["files"].update({name: sha256(folder / name) for name in files})
    manifest.update(reports)
    write_json(folder / MANIFEST, manifest)
    return manifest
