"""The set-up's promises (issue #32): the venv is exactly the lock; no folder of the checkout shadows an
installed distribution, whoever starts Python in the checkout's root; no process the project starts
puts the root on sys.path; the built wheel works outside the checkout."""
from __future__ import annotations

import ast
import base64
import functools
import hashlib
import http.server
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
import zipfile
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

import tritonize
from tritonize import checkout_guard

ROOT = Path(tritonize.__file__).resolve().parent
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^]]*\])?==(\S+)")


def locked_pins(path: Path = LOCK) -> dict[str, str]:
    return {canonicalize_name(m.group(1)): m.group(2) for m in map(PIN.match, path.read_text().splitlines()) if m}


def run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.locked_env
def test_the_venv_holds_exactly_the_lock():
    frozen = run([sys.executable, "-P", "-m", "pip", "freeze", "--all", "--exclude-editable"], ROOT)
    assert frozen.returncode == 0, frozen.stderr
    installed = {canonicalize_name(m.group(1)): m.group(2) for m in map(PIN.match, frozen.stdout.splitlines()) if m}
    locked = locked_pins()
    assert len(locked) > 100  # the whole environment, transitive dependencies included
    differ = {n: (locked.get(n), installed.get(n)) for n in locked.keys() | installed.keys()
              if locked.get(n) != installed.get(n)}
    assert not differ, f"(lock, venv) where they differ; `make setup` installs the lock: {differ}"


def test_every_locked_version_is_hashed():
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text().split("\n", 2)[-1])
    unhashed = [b.split()[0] for b in blocks if PIN.match(b) and "--hash=sha256:" not in b]
    assert not unhashed, f"lines without hashes in {LOCK.name}: {unhashed}"
    assert locked_pins()["torch"].endswith("+cpu")  # the CPU build, never a CUDA download


def test_the_gpu_lock_agrees_with_the_main_lock():
    gpu, main = locked_pins(ROOT / "requirements-gpu.lock"), locked_pins()
    assert {"onnxruntime-gpu", "tensorrt"} <= gpu.keys()
    assert {n: v for n, v in gpu.items() if n in main and main[n] != v} == {}


@pytest.mark.locked_env
def test_an_installed_distribution_imports_as_itself_from_the_checkout_root():
    # The lock holds Hugging Face's `kernels` (transformers needs it) beside tritonize's kernels/ folder.
    assert "kernels" in locked_pins()
    users_python = [sys.executable]  # as a user starts it in the root: without -P, the root first on sys.path
    shown = run([*users_python, "-c", "import kernels, tritonize.kernels as own; print(kernels.__file__); "
                 "print(own.__file__)"], ROOT)
    assert shown.returncode == 0, shown.stderr
    theirs, ours = shown.stdout.split()
    assert "site-packages" in theirs and Path(ours) == ROOT / "kernels" / "__init__.py"


def _throwaway_wheel(folder: Path, name: str) -> Path:
    """A wheel of a distribution named like one of tritonize's folders, built by hand (a wheel is a zip)."""
    files = {f"{name}/__init__.py": "WHO = 'throwaway'\n", f"{name}/__main__.py": "print('throwaway main')\n",
             f"{name}-0.0.1.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n",
             f"{name}-0.0.1.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tritonize-tests\n"
                                              "Root-Is-Purelib: true\nTag: py3-none-any\n"}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(text.encode())}" for path, text in files.items()]
    files[f"{name}-0.0.1.dist-info/RECORD"] = "\n".join([*record, f"{name}-0.0.1.dist-info/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def scratch_venv(tmp_path_factory):
    """A fresh venv holding a throwaway `models` distribution, tritonize (installed in place, as the
    project's venv has it) and the guard, installed the way `make setup` installs it."""
    folder = tmp_path_factory.mktemp("collision")
    venv = folder / "venv"
    subprocess.run([sys.executable, "-P", "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    uv = Path(sys.executable).parent / "uv"
    subprocess.run([str(uv), "pip", "install", "--quiet", "--offline", "--no-deps", "--python", str(python),
                    str(_throwaway_wheel(folder, "models"))], check=True, timeout=120)
    site = Path(run([str(python), "-P", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                    folder).stdout.strip())
    # tritonize's in-place install is setuptools' editable finder and its .pth: the same files here.
    ours = Path(sysconfig.get_path("purelib"))
    editable = list(ours.glob("__editable__*tritonize*"))
    assert editable, f"tritonize is not installed in place in {ours} (make setup does that)"
    for path in editable:
        shutil.copy(path, site / path.name)
    installed = run([str(python), "-P", "-m", "tritonize.checkout_guard", "--install"], folder)
    assert installed.returncode == 0, installed.stderr
    return python, site / checkout_guard.PTH_NAME


IMPORTS = {  # how a user starts Python in the checkout's root, each putting it first on sys.path
    "python -c": (["-c", "import models; print(models.WHO, models.__file__)"], None),
    "python -m": (["-m", "models"], None),
    "python < script": ([], "import models; print(models.WHO, models.__file__)\n"),
}


@pytest.mark.parametrize("how", IMPORTS)
def test_a_throwaway_distribution_wins_over_the_checkout_folder(scratch_venv, how):
    python, pth = scratch_venv
    args, stdin = IMPORTS[how]
    shown = subprocess.run([str(python), *args], cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "throwaway" in shown.stdout and str(ROOT / "models") not in shown.stdout


def test_without_the_guard_the_checkout_folder_shadows_it(scratch_venv, tmp_path):
    """The collision the guard prevents is real: with the .pth set aside, the checkout's models/ wins."""
    python, pth = scratch_venv
    kept = tmp_path / pth.name
    shutil.move(pth, kept)
    try:
        shown = run([str(python), "-c", "import models; print(models.__file__)"], ROOT)
    finally:
        shutil.move(kept, pth)
    assert shown.returncode == 0, shown.stderr
    assert Path(shown.stdout.strip()) == ROOT / "models" / "__init__.py"
    away = run([str(python), "-c", "import models; print(models.__file__)"], tmp_path)  # elsewhere: no collision
    assert "site-packages" in away.stdout


def test_a_tritonize_module_that_no_distribution_has_is_refused_by_name(scratch_venv):
    python, _ = scratch_venv
    shown = run([str(python), "-c", "import bench"], ROOT)
    assert shown.returncode != 0
    assert "ModuleNotFoundError" in shown.stderr and "tritonize.bench" in shown.stderr
    own = run([str(python), "-c", "import tritonize.checkout_guard as g; print(g.__file__)"], ROOT)
    assert own.returncode == 0 and Path(own.stdout.strip()) == ROOT / "checkout_guard.py"


def _python_spawns(tree: ast.AST):
    """(line, second argument) of each list literal that starts a Python: [sys.executable, ...] or [..python, ...]."""
    for node in ast.walk(tree):
        if isinstance(node, ast.List) and len(node.elts) >= 2:
            first = ast.unparse(node.elts[0])
            if first == "sys.executable" or re.fullmatch(r"str\(\w+\.python\)", first):
                yield node.lineno, ast.unparse(node.elts[1])


def test_no_python_the_project_starts_has_the_current_folder_on_sys_path():
    """Every Python the code or the tests start runs with -P (or -I, which implies it): started in the
    checkout's root, its folders would shadow distributions."""
    offenders = []
    for path in sorted(ROOT.rglob("*.py")):
        if any(part.startswith(".") or part in ("build", "__pycache__") for part in path.relative_to(ROOT).parts):
            continue
        for line, second in _python_spawns(ast.parse(path.read_text())):
            if second.startswith("'-") and second not in ("'-P'", "'-I'"):  # a script's own folder is fine
                offenders.append(f"{path.relative_to(ROOT)}:{line} ({second})")
    assert not offenders, f"a Python started without -P: {offenders}"
    makefile = (ROOT / "Makefile").read_text()
    assert not re.search(r"\bpython\S* -m (?!venv)", makefile.replace("-P -m", ""), re.I), "the Makefile runs python -m without -P"


@pytest.mark.server
def test_the_built_wheel_runs_the_main_job_outside_the_checkout(tmp_path):
    """`make wheel-check`: the wheel, installed with the lock as constraints into a fresh venv, runs the
    main job for one model from an empty folder."""
    done = subprocess.run(["make", "-C", str(ROOT), "wheel-check", f"WHEEL_CHECK_DIR={tmp_path}"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    work = tmp_path / "work"
    assert (work / "build" / "model_repository" / "mlp" / "config.pbtxt").is_file()
    reports = list(work.rglob("summary.md"))
    assert reports and "mlp" in reports[0].read_text()
    installed = run([str(tmp_path / "venv" / "bin" / "python"), "-P", "-c",
                     "import tritonize; print(tritonize.__file__)"], work)
    assert str(tmp_path / "venv") in installed.stdout and str(ROOT) not in installed.stdout


@pytest.fixture
def torch_index(tmp_path):
    """A stand-in for PyTorch's CPU index on loopback (PEP 503), holding the CPU torch wheel uv has cached
    or pip's find-links folder holds: what a user's machine without that folder reaches instead."""
    found = [Path(d) / f"torch-{locked_pins()['torch']}-cp311-cp311-manylinux_2_28_x86_64.whl"
             for d in os.environ.get("PIP_FIND_LINKS", "").split() + ["/opt/wheels"]]
    wheel = next((w for w in found if w.is_file()), None)
    assert wheel, f"no CPU torch wheel to serve; looked at {found}"
    page = tmp_path / "index" / "simple" / "torch"
    page.mkdir(parents=True)
    (page / wheel.name).symlink_to(wheel)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (page / "index.html").write_text(f'<a href="{wheel.name}#sha256={digest}">{wheel.name}</a>\n')
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "index"))
    handler.log_message = lambda *a: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        yield f"http://127.0.0.1:{httpd.server_address[1]}/simple/"
        httpd.shutdown()


@pytest.mark.locked_env
@pytest.mark.heavy  # a whole venv
def test_without_a_wheel_folder_torch_comes_from_the_torch_index(tmp_path, torch_index):
    """`make setup` on a machine whose pip names no folder of wheels: uv takes torch's CPU build from
    TORCH_INDEX (PyTorch's CPU index; here a stand-in on loopback), checked against the lock's hash."""
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_FIND_LINKS"))}
    done = subprocess.run(["make", "-C", str(ROOT), "setup", f"VENV={venv}", "FIND_LINKS=",
                           f"TORCH_INDEX={torch_index}"], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"--extra-index-url {torch_index}" in done.stdout and "--find-links" not in done.stdout
    shown = run([str(venv / "bin" / "python"), "-P", "-c", "import torch; print(torch.__version__)"], tmp_path)
    assert shown.stdout.strip() == locked_pins()["torch"]
