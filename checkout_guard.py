"""Keeps a tritonize checkout from shadowing the distributions installed beside it.

The checkout's root is the package `tritonize` itself, and its folders are named like distributions on
PyPI: `kernels/`, `models/`, `client/`, `bench/`... Python puts the current folder first on `sys.path`
for `python`, `python -c`, `python -m` and notebooks, so from the checkout's root a plain `import
kernels` would find tritonize's `kernels/` folder before Hugging Face's `kernels` distribution (which
transformers imports). The project's own processes never run with the root on `sys.path`; this guard
covers a user's: `make` installs a `.pth` line into the virtual environment that imports this module
when the interpreter starts (tritonserver's Python stubs included).

What it does: for a top-level import that a checkout folder on `sys.path` would answer, the rest of
`sys.path` is asked first, so an installed distribution imports as itself. A name only the checkout
holds is refused with an error naming `tritonize.<name>` when it is one of tritonize's own modules
(importing it as a second, top-level copy would split its state), and left to Python otherwise (the
`tests/` and `docs/` folders). Nothing changes outside a checkout, or for imports of `tritonize.*`.
docs/design.md says why a guard rather than another layout.
"""
from __future__ import annotations

import os
import sys
from importlib.machinery import ModuleSpec, PathFinder

ROOT = os.path.dirname(os.path.realpath(__file__))
# The line `make` writes into the venv's site-packages (`python -P -m tritonize.checkout_guard --install`).
PTH_NAME = "tritonize-checkout-guard.pth"
PTH_LINE = "import tritonize.checkout_guard\n"


def _is_root(entry: str, cwd: str, resolved: dict[tuple[str, str], bool]) -> bool:
    key = (entry, "" if os.path.isabs(entry) else cwd)  # a relative entry ('' too) moves with the cwd
    if key not in resolved:
        resolved[key] = os.path.realpath(os.path.join(cwd, entry) if key[1] else entry) == ROOT
    return resolved[key]


class CheckoutGuard:
    """A meta path finder placed before Python's own: see the module's docstring."""

    def __init__(self) -> None:
        self._resolved: dict[tuple[str, str], bool] = {}

    def find_spec(self, fullname: str, path=None, target=None) -> ModuleSpec | None:
        if path is not None or fullname.startswith("tritonize"):
            return None  # a submodule is found through its parent's __path__, never through sys.path
        try:
            cwd = os.getcwd()
        except OSError:  # the current folder was removed: '' then finds nothing anyway
            return None
        entries = [str(e) for e in sys.path]
        rooted = [e for e in entries if _is_root(e, cwd, self._resolved)]
        ours = PathFinder.find_spec(fullname, [ROOT]) if rooted else None
        if ours is None:
            return None
        elsewhere = PathFinder.find_spec(fullname, [e for e in entries if e not in rooted], target)
        if elsewhere is not None or ours.origin is None:  # no origin: a plain folder (tests/, docs/)
            return elsewhere
        raise ModuleNotFoundError(
            f"No module named {fullname!r}: {os.path.join(ROOT, fullname)} is tritonize's own module, "
            f"imported as `tritonize.{fullname}` (this folder, {ROOT}, is the package `tritonize`); "
            f"no installed distribution provides a top-level {fullname!r}", name=fullname)

    def invalidate_caches(self) -> None:
        self._resolved.clear()


def install() -> None:
    """Put the guard first among the meta path finders, once."""
    if not any(type(f).__name__ == CheckoutGuard.__name__ for f in sys.meta_path):
        sys.meta_path.insert(0, CheckoutGuard())


def install_in_environment() -> str:
    """Write the guard's .pth line into this interpreter's site-packages (temp file, then rename); its path."""
    import sysconfig

    site_packages = sysconfig.get_path("purelib")
    path = os.path.join(site_packages, PTH_NAME)
    try:
        with open(path + ".tmp", "w") as f:
            f.write(PTH_LINE)
        os.replace(path + ".tmp", path)
    except BaseException:
        if os.path.exists(path + ".tmp"):
            os.unlink(path + ".tmp")
        raise
    return path


install()

if __name__ == "__main__":
    if sys.argv[1:] != ["--install"]:
        sys.exit(f"usage: python -P -m tritonize.checkout_guard --install (given: {' '.join(sys.argv[1:]) or 'nothing'})")
    print(f"checkout guard: {install_in_environment()}")
