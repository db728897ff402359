"""One model's artifact folder as one typed object: loaded and verified once, then passed along.

`ModelArtifacts.load(root, spec)` checks, once, that `root/<model>/` belongs to `spec` (name, fingerprint,
source file, weights) and that every file matches the SHA-256 its manifest records; the stages that come
after (optimize, the repository writer, the benchmarks, the peers) take the object instead of
`(root, spec)`, so a command reads and hashes each model's folder once. The manifest is read by
attribute (`artifacts.manifest.optimize.chosen`) and parsed strictly: a field of the wrong shape is
refused with its path (`optimize.variants.int8.parity_ok`). `record()` adds a stage's files and report
and rewrites the manifest atomically. File names, the atomic writers and the digests live in
artifacts.py.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Iterator

from .artifacts import (
    MANIFEST,
    TEMPORARY_NAME,
    ONNX_FILE,
    UNLISTED,
    ArtifactError,
    model_dir,
    now_iso,
    sha256,
    tool_versions,
    write_json,
)

if TYPE_CHECKING:
    from .models.spec import ModelSpec


def _brief(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 200 else text[:197] + "..."


def _expect(data: dict, key: str, kinds: tuple[type, ...], at: str, what: str, required: bool = True):
    """`data[key]` when it is one of `kinds` (None allowed when not `required`); else a ValueError naming
    the field's path in the manifest (`at`: the path of `data`, "" at the top), what was expected and
    what was found."""
    name = f"{at}.{key}" if at else key
    if key not in data or data[key] is None:
        if required:
            raise ValueError(f"{name}: expected {what}, got nothing")
        return None
    value = data[key]
    # bool is an int in Python; a count or a size that is True is a bug of whoever wrote it.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ValueError(f"{name}: expected {what}, got {_brief(value)}")
    return value


@dataclass(frozen=True)
class VariantReport:
    """What optimize measured of one variant (the fields later stages read; the rest stays in `raw`)."""
    name: str
    built: bool
    parity_ok: bool
    error: str | None
    threads: dict | None  # export/threads.py's ThreadProfile as JSON, parsed where it is used
    measured_threads: bool  # False: written before optimize measured threads (None above: it measured nothing)
    raw: dict = field(repr=False)

    @classmethod
    def parse(cls, name: str, data, at: str) -> VariantReport:
        if not isinstance(data, dict):
            raise ValueError(f"{at}: expected a variant's report (an object), got {_brief(data)}")
        built = _expect(data, "built", (bool,), at, "true or false")
        return cls(name=name, built=built,
                   parity_ok=bool(built and _expect(data, "parity_ok", (bool,), at, "true or false")),
                   error=_expect(data, "error", (str,), at, "a message", required=False),
                   threads=_expect(data, "threads", (dict,), at, "a thread profile", required=False),
                   measured_threads="threads" in data, raw=data)


@dataclass(frozen=True)
class OptimizeReport:
    """optimize's pick among the variants, and each variant's report."""
    chosen: str
    why: str
    variants: dict[str, VariantReport]
    raw: dict = field(repr=False)

    @classmethod
    def parse(cls, data, at: str = "optimize") -> OptimizeReport:
        if not isinstance(data, dict):
            raise ValueError(f"{at}: expected optimize's report (an object), got {_brief(data)}")
        variants = _expect(data, "variants", (dict,), at, "an object of variant reports")
        return cls(chosen=_expect(data, "chosen", (str,), at, "a variant name"),
                   why=_expect(data, "why", (str,), at, "a sentence"),
                   variants={n: VariantReport.parse(n, v, f"{at}.variants.{n}") for n, v in variants.items()},
                   raw=data)


@dataclass(frozen=True)
class ExportReport:
    """How the ONNX file was made, and export's parity check against PyTorch."""
    exporter: str
    opset: int
    parity_ok: bool
    max_abs_err: float
    cases: int

    @classmethod
    def parse(cls, export, parity) -> ExportReport:
        if not isinstance(export, dict):
            raise ValueError(f"export: expected export's report (an object), got {_brief(export)}")
        if not isinstance(parity, dict):
            raise ValueError(f"parity: expected export's parity check (an object), got {_brief(parity)}")
        return cls(exporter=_expect(export, "exporter", (str,), "export", "the exporter's name"),
                   opset=_expect(export, "opset", (int,), "export", "an opset number"),
                   parity_ok=_expect(parity, "ok", (bool,), "parity", "true or false"),
                   max_abs_err=float(_expect(parity, "max_abs_err", (int, float), "parity", "a number")),
                   cases=_expect(parity, "cases", (int,), "parity", "a count"))


@dataclass(frozen=True)
class Manifest:
    """`manifest.json`: which spec produced the folder, every file with its SHA-256, and each stage's report."""
    model: str
    spec_fingerprint: str
    files: dict[str, str]  # relative POSIX path -> SHA-256
    created: str
    versions: dict[str, str]
    source: dict | None  # a user's model: reference, file, the file's SHA-256
    weights: dict | None  # trained weights the spec names: file, SHA-256
    export: ExportReport
    optimize: OptimizeReport | None
    tensorrt: dict[str, dict]  # precision -> engine.json's record
    raw: dict = field(repr=False)

    @classmethod
    def parse(cls, data) -> Manifest:
        """Strict: every field a stage reads has the shape it expects, or a ValueError names its path."""
        where = ""  # the top of the manifest: fields are named by their own path
        if not isinstance(data, dict):
            raise ValueError(f"expected an object, got {_brief(data)}")
        files = _expect(data, "files", (dict,), where, "an object mapping each file to its SHA-256")
        if not all(isinstance(v, str) for v in files.values()):
            raise ValueError(f"files: expected an object mapping each file to its SHA-256, got {_brief(files)}")
        optimize = data.get("optimize")
        return cls(model=_expect(data, "model", (str,), where, "the model's name"),
                   spec_fingerprint=_expect(data, "spec_fingerprint", (str,), where, "the spec's fingerprint"),
                   files=files, created=_expect(data, "created", (str,), where, "a time", required=False) or "",
                   versions=_expect(data, "versions", (dict,), where, "tool versions", required=False) or {},
                   source=_expect(data, "source", (dict,), where, "the user's model file", required=False),
                   weights=_expect(data, "weights", (dict,), where, "the weights file", required=False),
                   export=ExportReport.parse(data.get("export"), data.get("parity")),
                   optimize=None if optimize is None else OptimizeReport.parse(optimize),
                   tensorrt=_expect(data, "tensorrt", (dict,), where, "the engines by precision", required=False)
                   or {}, raw=data)

    def to_json(self) -> dict:
        return self.raw


def _weights_sha256(spec: ModelSpec) -> str | None:
    path = Path(spec.weights)
    return sha256(path) if path.is_file() else None


def _under(name: str, folder: str) -> bool:
    return name.startswith(folder.rstrip("/") + "/")


def new_manifest(spec: ModelSpec, folder: Path, files: list[str], **reports) -> Manifest:
    """The manifest of a folder being built (`folder`, before it is renamed into place)."""
    data = {
        "model": spec.name,
        "spec_fingerprint": spec.fingerprint(),
        # A user's model: the reference, its file and that file's SHA-256 (None for a built-in model).
        "source": spec.source.to_json() if spec.source else None,
        # Trained weights the spec names: the file and its SHA-256 (None when the factory makes them).
        "weights": {"file": spec.weights, "sha256": _weights_sha256(spec)} if spec.weights else None,
        "created": now_iso(),
        "versions": tool_versions(),
        "files": {name: _digest(folder / name) for name in files},
        **reports,
    }
    return Manifest.parse(data)


class ModelArtifacts:
    """`root/<model>/`, verified against `spec` when loaded; what every later stage of a command reads."""

    def __init__(self, root: Path, spec: ModelSpec, manifest: Manifest):
        self.root, self.spec, self.manifest = Path(root), spec, manifest

    def __repr__(self) -> str:
        return f"ModelArtifacts({self.folder}, {self.spec.name}@{self.spec.fingerprint()})"

    @property
    def folder(self) -> Path:
        return model_dir(self.root, self.spec)

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    @property
    def onnx_sha256(self) -> str:
        return self.manifest.files[ONNX_FILE]

    def unusable(self, problem: str) -> ArtifactError:
        return _unusable(self.root, self.spec, problem)

    @classmethod
    def load(cls, root: Path, spec: ModelSpec, ignore_under: str | None = None) -> ModelArtifacts:
        """Read `spec`'s artifact folder and check that it belongs to `spec` and is intact: every listed
        file present with its digest, no file unlisted. `ignore_under` leaves a sub-folder out of the
        check (a stage about to rebuild it)."""
        folder = model_dir(root, spec)
        if not folder.is_dir():
            raise _unusable(root, spec, f"no artifact folder at {folder}")
        path = folder / MANIFEST
        if not path.is_file():
            raise _unusable(root, spec, f"{path} is missing (incomplete export?)")
        data = _read_manifest(path)
        try:
            data = json.loads(data)
        except json.JSONDecodeError as e:
            raise _unusable(root, spec, f"{path} is not valid JSON ({e})") from None
        if not isinstance(data, dict) or data.get("model") != spec.name \
                or data.get("spec_fingerprint") != spec.fingerprint():
            found = f"{data.get('model')}@{data.get('spec_fingerprint')}" if isinstance(data, dict) else _brief(data)
            raise _unusable(root, spec, f"{folder} was produced from another model description (expected "
                                        f"{spec.name}@{spec.fingerprint()}, found {found})")
        try:
            manifest = Manifest.parse(data)
        except ValueError as e:
            raise _unusable(root, spec, f"{path}: {e}") from None
        artifacts = cls(root, spec, manifest)
        artifacts._check_sources()
        for name in manifest.files:
            _check_listed_name(folder, path, name, artifacts.unusable)
        artifacts._verify_files(ignore_under)
        return artifacts

    def _check_sources(self) -> None:
        recorded = (self.manifest.source or {}).get("sha256")
        spec = self.spec
        if spec.source is not None and spec.source.sha256 and recorded != spec.source.sha256:
            raise self.unusable(f"{self.folder} was exported from {spec.source.file} as it was before it changed "
                                f"(SHA-256 {str(recorded)[:12]} then, {spec.source.sha256[:12]} now)")
        if spec.weights and (self.manifest.weights or {}).get("sha256") != _weights_sha256(spec):
            raise self.unusable(f"{self.folder} was exported with other weights than {spec.weights} holds now")

    def _verify_files(self, ignore_under: str | None) -> None:
        folder, listed = self.folder, self.manifest.files
        for name, digest in listed.items():
            if ignore_under and _under(name, ignore_under):
                continue
            file = folder / name
            if not file.is_file():
                raise self.unusable(f"{file} is listed in the manifest but missing")
            if _digest(file) != digest:
                raise self.unusable(f"{file} does not match its manifest digest (corrupted or edited)")
        # A file with no entry would be read unchecked (an entry deleted, or a file added, say an ONNX
        # graph's external data), so every file must have one.
        for name in _folder_files(folder):
            if name not in listed and name not in UNLISTED and not (ignore_under and _under(name, ignore_under)):
                raise self.unusable(f"{folder / name} is in the artifact folder but not listed in "
                                    f"{self.manifest_path} (added, or its entry deleted)")

    def record(self, files: list[str], replace_under: str | None = None, **reports) -> None:
        """Add files (with fresh digests) and stage reports, and rewrite the manifest atomically.
        `replace_under` drops the entries of a sub-folder that the caller has just replaced as a whole."""
        data = dict(self.manifest.raw)
        listed = dict(data["files"])
        if replace_under:
            listed = {k: v for k, v in listed.items() if not _under(k, replace_under)}
        listed.update({name: _digest(self.folder / name) for name in files})
        data.update(reports, files=listed)
        manifest = Manifest.parse(data)  # a stage's bug, caught before it is written
        write_json(self.manifest_path, manifest.to_json())
        self.manifest = manifest


def _unusable(root: Path, spec: ModelSpec, problem: str) -> ArtifactError:
    return ArtifactError(f"model {spec.name!r}: {problem}; run `tritonize export {spec.reference} "
                         f"--artifacts {root}` to produce it", problem)


# The two ways a command touches an artifact folder's bytes, each in one function, so a test can count
# them (one manifest read and one digest per file, per model, per command).
def _read_manifest(path: Path) -> str:
    return path.read_text()


def _digest(path: Path) -> str:
    return sha256(path)


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
        dirs[:] = [d for d in dirs if not TEMPORARY_NAME.fullmatch(d)]
        # os.walk lists a link to a folder among the folders, and does not enter it: report it as a file.
        names = files + [d for d in dirs if (Path(top) / d).is_symlink()]
        for name in names:
            if not TEMPORARY_NAME.fullmatch(name) and (rel / name).as_posix() != MANIFEST:
                yield (rel / name).as_posix()

