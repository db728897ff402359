"""How a tritonserver started from Python ends when that process ends, whichever way it ends.

- Normal exit: `TritonServer.close` drains and stops the server; servers still running when the
  interpreter exits are closed by an atexit hook (`close_at_exit`).
- Killed (SIGKILL, a crash): the server is started with a parent-death signal (Linux prctl
  PR_SET_PDEATHSIG = SIGTERM, armed in the child before exec), so it begins its own shutdown at once,
  and the reaper (serving/reaper.py), a small process of its own, waits for it to end and removes the
  shared memory regions and the work folder it left.

The kernel sends the parent-death signal when the *thread* that forked the child ends, not the
process. A server started from a short-lived thread (tests start several side by side) would get
SIGTERM as soon as that thread returned, so every server is forked from one daemon thread that lives
as long as the process (`spawn`).
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import weakref
from concurrent.futures import Future
from pathlib import Path
from typing import Callable

from . import reaper

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
REAPER_EXIT_WAIT_S = 5.0


def _prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def parent_death_preexec(then: Callable[[], None] | None = None) -> Callable[[], None]:
    """A preexec_fn that arms SIGTERM on the parent's death (Linux; elsewhere only the reaper acts),
    then runs `then`. libc is looked up here, in the parent, not in the forked child."""
    prctl, parent = _prctl(), os.getpid()

    def setup() -> None:
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the signal was armed: nobody would send it
                os.kill(os.getpid(), signal.SIGTERM)
        if then is not None:
            then()

    return setup


class _Spawner:
    """Runs Popen on one daemon thread that lives as long as the process (see the module's doc)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, start: Callable[[], subprocess.Popen]) -> subprocess.Popen:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # also after a fork, which keeps no threads
                self._thread = threading.Thread(target=self._serve, name="tritonize-spawner", daemon=True)
                self._thread.start()
        done: Future = Future()
        self._jobs.put((start, done))
        return done.result()

    def _serve(self) -> None:
        while True:
            start, done = self._jobs.get()
            try:
                done.set_result(start())
            except BaseException as e:  # handed to the caller's thread
                done.set_exception(e)


_spawner = _Spawner()


def spawn(cmd: list[str], **popen_kwargs) -> subprocess.Popen:
    """subprocess.Popen(cmd, ...) forked from the long-lived spawner thread."""
    return _spawner.run(lambda: subprocess.Popen(cmd, **popen_kwargs))


def start_reaper(pid: int, workdir: Path, grace_s: float) -> subprocess.Popen | None:
    """The reaper of server `pid` (see serving/reaper.py); None if the server is already gone."""
    found = reaper.stat_of(pid)
    if found is None:
        return None
    return subprocess.Popen([sys.executable, "-I", reaper.__file__, str(pid), str(found[2]), str(workdir),
                             f"{grace_s:g}"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def release_reaper(proc: subprocess.Popen | None) -> None:
    """Tell the reaper the server was stopped and cleaned up here; it exits at once."""
    if proc is None:
        return
    with contextlib.suppress(OSError):
        proc.stdin.write(reaper.CLOSE)
        proc.stdin.close()
    try:
        proc.wait(timeout=REAPER_EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


_running: set = set()  # strong references: a running server is not dropped unclosed by the garbage collector
_running_lock = threading.Lock()


def close_at_exit(server) -> None:
    """Close `server` (anything with close()) when the interpreter exits, unless `forget` says it stopped."""
    with _running_lock:
        _running.add(server)


def forget(server) -> None:
    with _running_lock:
        _running.discard(server)


def remove_at_gc(owner, folder: Path) -> weakref.finalize:
    """Remove `folder` when `owner` is garbage collected or the interpreter exits, whichever comes
    first (call the result to remove it now)."""
    return weakref.finalize(owner, shutil.rmtree, str(folder), ignore_errors=True)


@atexit.register
def _close_all() -> None:
    with _running_lock:
        servers = list(_running)
    for server in servers:
        with contextlib.suppress(Exception):  # one failing close must not keep the others running
            server.close()
