"""What the wheel holds: the packages pyproject.toml lists and nothing of the checkout's own: no pytest
file (test_*.py, conftest.py), none of the project's studies (studies/); and from the wheel alone,
`tritonize bench --project` says in one line that the studies run from a checkout."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import tritonize

ROOT = Path(tritonize.__file__).resolve().parent


def _source_copy(to: Path) -> Path:
    """The checkout's sources (pyproject.toml, the README, every module and package folder) without its
    build/ folder, whose stale files setuptools would pack too, and away from other builds of the tree."""
    to.mkdir()
    for name in ("pyproject.toml", "README.md", *(p.name for p in ROOT.glob("*.py"))):
        shutil.copy2(ROOT / name, to / name)
    for folder in (d for d in ROOT.iterdir() if (d / "__init__.py").is_file()):
        shutil.copytree(folder, to / folder.name, ignore=shutil.ignore_patterns("__pycache__"))
    return to


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built the way `make wheel-check` builds it (no dependencies, no build isolation)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = _source_copy(tmp / "source")
    built = subprocess.run([sys.executable, "-P", "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                            "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    [path] = (tmp / "dist").glob("tritonize-*.whl")
    return path


@pytest.mark.heavy  # a whole wheel built
def test_the_wheel_holds_no_pytest_file_and_no_study(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    files = [n for n in names if n.startswith("tritonize/")]
    assert "tritonize/bench/suite/run.py" in files and "tritonize/bench/peers/peer_apps/mosec_app.py" in files
    assert "tritonize/kernels/benchmark.py" in files and "tritonize/bench/gpu_kernels.py" in files
    pytest_files = [n for n in files if Path(n).name.startswith("test_") or Path(n).name == "conftest.py"]
    assert pytest_files == []
    assert [n for n in files if n.startswith("tritonize/studies/")] == []


# Python as where only the wheel is installed: its files first on the path, and the checkout's in-place
# install (setuptools' editable finder, which would find any folder of the checkout) taken off.
WHEEL_ONLY = ("import sys\n"
              "sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]\n")


def _from_wheel(site: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-P", "-c", WHEEL_ONLY + code], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(site)})


@pytest.mark.heavy  # a whole wheel built
def test_from_the_wheel_bench_project_says_the_studies_run_from_a_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    where = _from_wheel(site, "import tritonize\nprint(tritonize.__file__)\nimport tritonize.studies", tmp_path)
    assert where.stdout.strip() == str(site / "tritonize" / "__init__.py"), where.stderr
    assert "No module named 'tritonize.studies'" in where.stderr
    done = _from_wheel(site, "from tritonize.cli import main\n"
                             f"sys.exit(main(['bench', 'mlp', '--project', '--results', {str(tmp_path / 'results')!r}]))",
                       tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: --project runs the project's own studies, which are not installed: they run from a checkout of "
        "tritonize (clone it, `make setup`, then `.venv/bin/tritonize bench --project`)"]
    assert not (tmp_path / "results").exists()
