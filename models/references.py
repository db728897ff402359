"""Models named by reference: a built-in name, `path/to/file.py:ATTR`, `package.module:ATTR`, or a
name an installed package registers in the `tritonize.models` entry-point group.

ATTR is a `ModelSpec` or a callable taking no arguments that returns one. A resolved spec carries its
`ModelSource` (the reference, the file that defines it and that file's SHA-256), which export records
in the manifest, so that an edited model file is exported again rather than silently reused. Once
resolved, a user's model is known by its name for the rest of the process, so that every stage that
looks a model up by name (`get_spec`) finds it as it finds a built-in one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import sys
from importlib import metadata
from pathlib import Path

from .spec import ModelSource, ModelSpec

ENTRY_POINT_GROUP = "tritonize.models"


class ModelReferenceError(ValueError):
    """A reference that does not lead to a usable ModelSpec; the message names the reference."""


def is_reference(text: str) -> bool:
    """Whether `text` names a model by `file.py:ATTR` or `module:ATTR` rather than by name."""
    return ":" in text


def _with_source(spec: ModelSpec, reference: str, file: Path) -> ModelSpec:
    """`spec` carrying where it came from: the reference, the defining file and that file's SHA-256."""
    digest = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else ""
    return dataclasses.replace(spec, source=ModelSource(reference=reference, file=str(file), sha256=digest))


def _load_file(reference: str, path: Path) -> object:
    if not path.is_file():
        raise ModelReferenceError(f"model reference {reference!r}: no file {path} (expected FILE.py:ATTR with an "
                                  f"existing Python file)")
    if path.suffix != ".py":
        raise ModelReferenceError(f"model reference {reference!r}: expected a .py file, got {path.name}")
    # A module name of its own per file, so two user files named model.py do not replace each other.
    name = f"tritonize_user_model_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling-free introspection look modules up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's file: say which and why, whatever it raised
        del sys.modules[name]
        raise ModelReferenceError(f"model reference {reference!r}: importing {path} failed: "
                                  f"{type(e).__name__}: {e}") from e
    return module


def _load_module(reference: str, module_name: str) -> object:
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise ModelReferenceError(f"model reference {reference!r}: cannot import module {module_name!r} ({e}); "
                                  f"expected FILE.py:ATTR or an importable package.module:ATTR") from e
    except Exception as e:  # noqa: BLE001 - the user's module raised while importing
        raise ModelReferenceError(f"model reference {reference!r}: importing {module_name} failed: "
                                  f"{type(e).__name__}: {e}") from e


def _spec_from(reference: str, target: object, attr: str) -> ModelSpec:
    if isinstance(target, ModelSpec):
        return target
    if callable(target):
        try:
            made = target()
        except Exception as e:  # noqa: BLE001 - the user's callable: say which and why
            raise ModelReferenceError(f"model reference {reference!r}: calling {attr}() raised "
                                      f"{type(e).__name__}: {e}") from e
        if isinstance(made, ModelSpec):
            return made
        raise ModelReferenceError(f"model reference {reference!r}: {attr}() returned a {type(made).__name__}, "
                                  f"expected a tritonize ModelSpec")
    raise ModelReferenceError(f"model reference {reference!r}: {attr} is a {type(target).__name__}, expected a "
                              f"tritonize ModelSpec or a function with no arguments that returns one")


def load_reference(reference: str) -> ModelSpec:
    """The spec behind `file.py:ATTR` or `module:ATTR`, with its source recorded (not registered)."""
    where, _, attr = reference.rpartition(":")
    if not where or not attr.isidentifier():
        raise ModelReferenceError(f"model reference {reference!r}: expected FILE.py:ATTR or package.module:ATTR "
                                  f"with ATTR a Python name")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        module, file = _load_file(reference, path), path.resolve()
    else:
        module = _load_module(reference, where)
        file = Path(getattr(module, "__file__", "") or where).resolve()
    if not hasattr(module, attr):
        public = sorted(n for n in vars(module) if not n.startswith("_"))
        raise ModelReferenceError(f"model reference {reference!r}: {where} has no attribute {attr!r} "
                                  f"(it defines {', '.join(public[:12]) or 'nothing public'})")
    return _with_source(_spec_from(reference, getattr(module, attr), attr), reference, file)


def entry_point_specs() -> dict[str, metadata.EntryPoint]:
    """The models installed packages register: entry-point name -> entry point."""
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_entry_point(entry: metadata.EntryPoint) -> ModelSpec:
    reference = f"{entry.value} (entry point {entry.name!r} of {entry.dist.name if entry.dist else 'a package'})"
    try:
        target = entry.load()
    except Exception as e:  # noqa: BLE001 - the package's module raised while importing
        raise ModelReferenceError(f"model reference {reference!r}: loading it failed: {type(e).__name__}: {e}") from e
    module = sys.modules.get(entry.module)
    file = Path(getattr(module, "__file__", "") or "")
    return _with_source(_spec_from(reference, target, entry.attr or entry.value), entry.value, file)
