"""What a local model repository holds, digested for publishing: its models, their version folders and
files with SHA-256s; and which number each local version gets in a store that already holds some.

Pure local work, no network: `store.py` reads a repository with `read_local_repository` before it touches
the store, so every local problem is reported first.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..artifacts import INDEX_FILE, sha256

CONFIG_FILE = "config.pbtxt"
# Triton parses s3://HOST:PORT/BUCKET/PATH with one regex, each path segment [0-9a-zA-Z.-_]; a path outside it
# is read as s3://BUCKET/... and the endpoint is silently lost, so every name published must fit it.
SEGMENT = re.compile(r"[0-9A-Za-z._-]+")
VERSION = re.compile(r"[1-9][0-9]*")  # Triton reads the folder name as a number: "01" would not round-trip
_SPECIFIC = re.compile(r"version_policy\s*:?\s*\{\s*specific\b")


class RepositoryError(ValueError):
    """A local folder that is not a publishable model repository: what was expected and what was given.
    A ValueError, so the CLI shows it as a user error (exit 2)."""


@dataclass(frozen=True)
class LocalFile:
    path: Path
    relative: str  # POSIX path under its version folder (or its model folder, for model-level files)
    size: int
    sha256: str

    def record(self) -> dict:
        return {"sha256": self.sha256, "bytes": self.size}


@dataclass(frozen=True)
class LocalVersion:
    number: int
    files: tuple[LocalFile, ...]  # none: an empty folder (an ensemble's), stored as a marker object

    @property
    def digest(self) -> str:
        return _digest({f.relative: f.sha256 for f in self.files})

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class LocalModel:
    name: str
    versions: tuple[LocalVersion, ...]  # ascending
    files: tuple[LocalFile, ...]  # model-level: config.pbtxt last
    source: dict  # the local repository.json's entry: runner, variant, spec fingerprint

    @property
    def config(self) -> LocalFile:
        return next(f for f in self.files if f.relative == CONFIG_FILE)

    def pins_versions(self) -> bool:
        """Whether its config serves named versions (`version_policy: { specific ... }`): a version published
        under another number would then not be served."""
        return bool(_SPECIFIC.search(self.config.path.read_text(errors="replace")))


def _digest(files: Mapping[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()


def _files(folder: Path, skip_versions: bool = False) -> tuple[LocalFile, ...]:
    found = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).parts
        # Skipped: a local server's Python stub leaves __pycache__ in the version folders it ran, and hidden
        # files are tritonize's temporary names or an editor's; neither is part of the model.
        if (any(p.startswith(".") or p == "__pycache__" for p in rel) or path.suffix == ".pyc"
                or skip_versions and VERSION.fullmatch(rel[0])):
            continue
        if not all(SEGMENT.fullmatch(p) for p in rel):
            raise RepositoryError(f"{path}: expected file and folder names of letters, digits, '.', '_' and "
                                  f"'-' (what Triton reads from S3), got {'/'.join(rel)!r}")
        found.append(LocalFile(path, "/".join(rel), path.stat().st_size, sha256(path)))
    return tuple(sorted(found, key=lambda f: f.relative == CONFIG_FILE))  # stable: config.pbtxt last


def read_local_repository(folder: Path) -> list[LocalModel]:
    """The models of a repository `tritonize repo` wrote (marked by its repository.json)."""
    folder = Path(folder)
    expected = "expected a model repository folder written by `tritonize repo` (with repository.json)"
    if not folder.is_dir():
        raise RepositoryError(f"{expected}, got {'a file' if folder.exists() else 'nothing'} at {folder}")
    try:
        index = json.loads((folder / INDEX_FILE).read_text())
    except FileNotFoundError:
        raise RepositoryError(f"{expected}, got {folder} without {INDEX_FILE}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise RepositoryError(f"{expected}, got an unreadable {folder / INDEX_FILE} ({e})") from None
    if not isinstance(index, dict) or not isinstance(index.get("models"), dict):
        raise RepositoryError(f"{expected}, got {folder / INDEX_FILE} without a \"models\" table")
    models = []
    for name in sorted(set(index["models"]) | {p.parent.name for p in folder.glob(f"*/{CONFIG_FILE}")}):
        model_dir = folder / name
        if not (model_dir / CONFIG_FILE).is_file():
            raise RepositoryError(f"{folder / INDEX_FILE} lists model {name!r}: expected "
                                  f"{model_dir / CONFIG_FILE}, got none")
        if not SEGMENT.fullmatch(name):
            raise RepositoryError(f"model folder {model_dir}: expected a name of letters, digits, '.', '_' and "
                                  f"'-', got {name!r}")
        numbers = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and VERSION.fullmatch(p.name))
        if not numbers:
            raise RepositoryError(f"model {name!r}: expected at least one version folder (1/, 2/, ...) in "
                                  f"{model_dir}, got none")
        versions = tuple(LocalVersion(n, _files(model_dir / str(n))) for n in numbers)
        source = index["models"].get(name, {})
        models.append(LocalModel(name, versions, _files(model_dir, skip_versions=True),
                                 source if isinstance(source, dict) else {}))
    if not models:
        raise RepositoryError(f"{expected}, got {folder} with no model (no */{CONFIG_FILE})")
    return models


def assign_versions(local: tuple[LocalVersion, ...], stored: Mapping[int, str | None]) -> list[tuple[int, bool]]:
    """(store version, unchanged) per local version. `stored`: the store's version numbers -> content digest
    (None where unknown: not in the index, or objects missing). The local versions are unchanged when the
    store's last ones hold the same content in the same order; else all go up above every stored number
    (their own numbers when those are above it already), so the store's latest versions are the local ones."""
    taken = sorted(stored)
    tail = taken[-len(local):] if len(taken) >= len(local) else []
    if tail and all(stored[n] == v.digest for n, v in zip(tail, local)):
        return [(n, True) for n in tail]
    top = taken[-1] if taken else 0
    if local[0].number > top:
        return [(v.number, False) for v in local]
    return [(top + 1 + i, False) for i in range(len(local))]
