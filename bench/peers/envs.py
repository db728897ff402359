"""Where and how the peers run: one virtual environment per peer package, and the peer's server process.

Each peer (Mosec, LitServe) runs from a venv of its own, built on demand from PyPI with pinned
versions: the peer's package, and onnxruntime and numpy at the versions tritonize runs on, so the same
ONNX file runs on the same ONNX Runtime build on every side. Nothing of tritonize's (torch,
tritonclient) is in a peer's venv, and nothing of a peer's lands in tritonize's. A constraints file
that no torch release satisfies makes any attempt to pull torch fail loudly: neither peer needs it,
and pulled unpinned it is a CUDA build of several GB.

A venv is reused while its stamp file records the same pins, Python and constraints; one without a
stamp was cut short and is built again. A peer server runs in a process group of its own, so that
stopping it stops its workers too, and it dies with us (PR_SET_PDEATHSIG) if we are killed.
"""
from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

PEER_PACKAGES = {"mosec": "mosec==0.9.8", "litserve": "litserve==0.2.19"}
SHARED_PINS = ("onnxruntime", "numpy")  # at the versions of the running (tritonize's) environment
NO_TORCH = "torch==0+never"  # a local version no release has: any requirement on torch cannot be met
CONSTRAINTS_FILE = "no-torch-constraints.txt"
STAMP_FILE = "tritonize-peer.json"
APPS = Path(__file__).parent / "peer_apps"
PIP_TIMEOUT_S = 1800
SHOWN_PIP_LINES = ("Collecting", "Installing", "Successfully", "ERROR")


class PeerError(RuntimeError):
    """A peer environment that could not be built, or a peer server that did not come up or answered wrong."""


def default_envs_root() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tritonize" / "peers"


def pins(package: str) -> list[str]:
    if package not in PEER_PACKAGES:
        raise ValueError(f"expected a peer package among {sorted(PEER_PACKAGES)}, got {package!r}")
    return [PEER_PACKAGES[package], *(f"{name}=={metadata.version(name)}" for name in SHARED_PINS)]


def write_constraints(root: Path) -> Path:
    """The constraints file every peer install goes through (written atomically, same bytes each time)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / CONSTRAINTS_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("# Written by tritonize's peer comparison: no peer may pull torch.\n" + NO_TORCH + "\n")
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class PeerEnv:
    package: str
    folder: Path

    @property
    def python(self) -> Path:
        return self.folder / "bin" / "python"

    def version(self) -> str:
        return PEER_PACKAGES[self.package].partition("==")[2]


def _wanted_stamp(package: str) -> dict:
    return {"pins": pins(package), "python": platform.python_version(), "constraints": NO_TORCH}


def _read_stamp(folder: Path) -> dict | None:
    try:
        return json.loads((folder / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One builder at a time per cache folder (two runs must not build into the same venv)."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_streamed(command: list[str], progress: Callable[[str], None], what: str) -> None:
    """Run `command`, each line of its output to `progress`; a failure names `what` and ends with the output's tail."""
    tail: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        for line in proc.stdout:
            if line.strip():
                tail = (tail + [line.rstrip()])[-25:]
                if line.lstrip().startswith(SHOWN_PIP_LINES):  # the steps, not each download's details
                    progress(f"  {line.strip()}")
        rc = proc.wait(timeout=PIP_TIMEOUT_S)
    if rc != 0:
        text = "\n".join(tail)
        hint = (f"\n(a package asked for torch, which {CONSTRAINTS_FILE} forbids: {NO_TORCH})"
                if NO_TORCH in text else "")
        raise PeerError(f"{what} failed (exit code {rc}):\n{text}{hint}")


def ensure_env(package: str, root: Path, progress: Callable[[str], None] = print) -> PeerEnv:
    """The venv of `package` under `root`, built when missing or built with other pins."""
    wanted = _wanted_stamp(package)
    root.mkdir(parents=True, exist_ok=True)
    env = PeerEnv(package, root / package)
    with _locked(root / ".lock"):
        if _read_stamp(env.folder) == wanted and env.python.exists():
            progress(f"{package}: reusing {env.folder} ({', '.join(wanted['pins'])})")
            return env
        progress(f"{package}: building {env.folder} ({', '.join(wanted['pins'])}); a minute or two")
        constraints = write_constraints(root)
        if env.folder.exists():
            shutil.rmtree(env.folder)
        _run_streamed([sys.executable, "-P", "-m", "venv", str(env.folder)], progress, f"creating the {package} venv")
        _run_streamed([str(env.python), "-P", "-m", "pip", "install", "--disable-pip-version-check", "-c", str(constraints),
                       *wanted["pins"]], progress, f"installing {package} into {env.folder}")
        check = ("import importlib.util, sys; import {0}, onnxruntime, numpy; "
                 "sys.exit('torch is installed' if importlib.util.find_spec('torch') else 0)").format(package)
        _run_streamed([str(env.python), "-P", "-c", check], progress, f"checking the {package} venv")
        (env.folder / STAMP_FILE).write_text(json.dumps(wanted, indent=2) + "\n")  # last: marks it complete
    progress(f"{package}: ready")
    return env


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when our process dies, so a killed run leaves no peer behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


class PeerProcess:
    """A peer's server: `python app args` in its own process group, logging to `log`; ready once
    `probe()` (a real inference) stops raising. Stopping signals the whole group, then kills what is left."""

    def __init__(self, env: PeerEnv, app: str, args: list[str], log: Path, probe: Callable[[], None],
                 ready_timeout_s: float = 120.0, stop_timeout_s: float = 15.0):
        self.command = [str(env.python), str(APPS / app), *args]
        self.log, self.probe = log, probe
        self.ready_timeout_s, self.stop_timeout_s = ready_timeout_s, stop_timeout_s
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> PeerProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=_die_with_parent, cwd=self.log.parent)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self.process.poll() is not None:
                raise PeerError(f"{' '.join(self.command)} exited with code {self.process.returncode} before "
                                f"answering; its log ({self.log}) ends:\n{self.log_tail()}")
            try:
                self.probe()
                return
            except Exception as e:  # noqa: BLE001 - not up yet; the deadline decides
                last = e
            if time.monotonic() > deadline:
                raise PeerError(f"{' '.join(self.command)} did not answer within {self.ready_timeout_s:g} s "
                                f"(last: {last}); its log ({self.log}) ends:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        """SIGINT to the group (both peers shut down cleanly on it), then SIGKILL to whatever is left of it."""
        if self.process is None:
            return
        group = self.process.pid  # the group's id: it outlives its leader while any member is alive
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGINT)
        try:
            self.process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + self.stop_timeout_s
        while _group_alive(group) and time.monotonic() < deadline:  # workers finishing after their leader
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        self.process.wait()
        self.process = None


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
