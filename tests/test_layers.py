"""The layering in pyproject's [tool.importlinter] holds on the tree, and an import the wrong way
breaks it: lint-imports runs on a copy of the package with one such import added."""
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
# The checkout's root is the package: its .py files and the folders with an __init__.py (export,
# kernels, ..., not tests/, docs/ or .venv) are all of it, as import-linter sees it.
PACKAGE_FOLDERS = sorted(d.name for d in ROOT.iterdir() if (d / "__init__.py").is_file())

LAYERS = "tritonize layers"
BENCH_ROOMS = "bench rooms"
KERNELS = "kernels import only torch and triton"
KERNEL_DEPENDENCIES = {"torch", "triton"}


def lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """lint-imports with the pyproject.toml in cwd; no cache, so nothing is written anywhere."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_copy_is_the_whole_package():
    expected = {"bench", "cli", "client", "export", "kernels", "model_repository", "models", "serving", "studies"}
    assert expected <= set(PACKAGE_FOLDERS)
    assert not {"tests", "docs", ".venv"} & set(PACKAGE_FOLDERS)


def test_the_contracts_hold_on_the_tree():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(f"{name} KEPT" in result.stdout for name in (LAYERS, BENCH_ROOMS, KERNELS)), result.stdout


def test_the_kernels_contract_forbids_every_third_party_dependency():
    """Every import name of every distribution pyproject depends on (all extras too), but torch's and
    triton's, is forbidden to the kernels: a dependency added to pyproject must be added there too."""
    config = tomllib.loads(PYPROJECT.read_text())
    project = config["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    names = {re.match(r"[A-Za-z0-9._-]+", r).group(0) for r in requirements}
    by_distribution: dict[str, set[str]] = {}
    for top_level, distributions in importlib.metadata.packages_distributions().items():
        for distribution in distributions:
            by_distribution.setdefault(_normalize(distribution), set()).add(top_level)
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["name"] == KERNELS)
    forbidden = set(contract["forbidden_modules"])
    missing = {}
    for name in sorted(names - KERNEL_DEPENDENCIES):
        # A distribution not installed here (tensorrt, onnxruntime-gpu) has no import names to look up.
        modules = {m for m in by_distribution.get(_normalize(name), ()) if not m.startswith("_")}
        if modules - forbidden:
            missing[name] = sorted(modules - forbidden)
    assert not missing, f"not forbidden to tritonize.kernels: {missing}"
    assert "tritonize.*" in forbidden


def _normalize(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


@pytest.fixture
def package_copy(tmp_path):
    """The package's .py files under tmp_path/tritonize, and the project's pyproject.toml alone in
    tmp_path/config, so lint-imports run there with PYTHONPATH=tmp_path analyses the copy."""
    package = tmp_path / "tritonize"
    package.mkdir()
    for path in ROOT.glob("*.py"):
        shutil.copy2(path, package / path.name)
    for folder in PACKAGE_FOLDERS:
        shutil.copytree(ROOT / folder, package / folder, ignore=_not_python)
    config = tmp_path / "config"
    config.mkdir()
    shutil.copy2(PYPROJECT, config / "pyproject.toml")
    return tmp_path


def _not_python(folder, names):
    """copytree's ignore: everything but .py files and the folders that may hold them."""
    return [n for n in names
            if n == "__pycache__" or not (n.endswith(".py") or os.path.isdir(os.path.join(folder, n)))]


@pytest.mark.parametrize("path, line, broken", [
    ("export/stage.py", "import tritonize.bench", LAYERS),  # a lower layer imports a higher one
    ("models/spec.py", "from tritonize.artifacts import MANIFEST", LAYERS),
    # the installed package never reaches the project's studies, which only a checkout has
    ("bench/suite/run.py", "import tritonize.studies.project", LAYERS),
    ("bench/load/loadgen.py", "from tritonize.bench.report.tables import table", BENCH_ROOMS),  # a room below another
    ("bench/report/tables.py", "import tritonize.bench.peers.compare", BENCH_ROOMS),
    ("kernels/flash_attention.py", "import numpy", KERNELS),  # a third-party package the kernels may not use
    ("kernels/conv_relu_pool.py", "from tritonize.timing import measure_latency", KERNELS),
])
def test_a_wrong_way_import_breaks_its_contract(package_copy, path, line, broken):
    config = package_copy / "config"
    clean = lint_imports(config, pythonpath=package_copy)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    edited = package_copy / "tritonize" / path
    text = edited.read_text().rstrip("\n") + f"\n{line}\n"
    edited.write_text(text)
    result = lint_imports(config, pythonpath=package_copy)
    assert result.returncode != 0, result.stdout
    assert f"{broken} BROKEN" in result.stdout, result.stdout + result.stderr
    # The import is reported at the line it was added on, which the checkout's file does not have:
    # the copy, not the installed checkout, was analysed.
    module = "tritonize." + path.removesuffix(".py").replace("/", ".")
    assert re.search(rf"{re.escape(module)} -> \S+ \(l\.{text.count(chr(10))}\)", result.stdout), result.stdout
    assert [p.name for p in config.iterdir()] == ["pyproject.toml"]  # no cache written
