"""bench/ in rooms (docs/design.md): each room and every module in it imports without the project's
studies, which only a checkout has (studies/, tritonize.studies); `tritonize bench --project` says so
in one line where they are absent; and no shipped package holds a pytest file."""
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import tritonize
from tritonize.cli import main

ROOT = Path(tritonize.__file__).resolve().parent
ROOMS = ("load", "suite", "report", "peers")


def _modules(folder: Path, package: str) -> list[str]:
    # peer_apps/ are files the peers run in their own venvs (mosec, litserve), not modules of tritonize
    return [package] + sorted(f"{package}.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__")


def test_every_room_and_its_modules_import_no_study():
    """One fresh interpreter imports bench/ and every module of every room, one at a time, and names the
    first one after which a study module is loaded (one process: each start imports torch again)."""
    modules = [m for package in ("tritonize.bench", *(f"tritonize.bench.{room}" for room in ROOMS))
               for m in _modules(ROOT / Path(*package.split(".")[1:]), package)]
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "    studies = sorted(m for m in sys.modules if m.startswith('tritonize.studies'))\n"
            "    if studies:\n"
            "        print(name, 'loaded', studies)\n"
            "        break\n"
            "print(len(sys.modules))")
    proc = subprocess.run([sys.executable, "-P", "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "loaded" not in proc.stdout, proc.stdout
    assert len(modules) > 25  # every room's modules were there to import


def test_bench_project_without_the_studies_says_where_they_run_in_one_line(monkeypatch, capsys, tmp_path):
    """As from a wheel, which leaves studies/ out: refused before anything is measured or written."""
    monkeypatch.setitem(sys.modules, "tritonize.studies", None)  # what an import finds where the folder is absent
    monkeypatch.delitem(sys.modules, "tritonize.studies.project", raising=False)
    assert main(["bench", "mlp", "--project", "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "error: --project runs the project's own studies, which are not installed: they run from a checkout" in err
    assert not (tmp_path / "results").exists()


def test_no_shipped_package_holds_a_pytest_file_or_the_studies():
    """The folders pyproject.toml ships (tests/test_wheel.py checks the built wheel itself)."""
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    folders = [ROOT / Path(*p.split(".")[1:]) for p in packages]
    assert all(f.is_dir() for f in folders)
    pytest_files = [str(p.relative_to(ROOT)) for f in folders for p in f.glob("*.py")
                    if p.name.startswith("test_") or p.name == "conftest.py"]
    assert pytest_files == []
    assert "tritonize.studies" not in packages and (ROOT / "studies" / "__init__.py").is_file()
