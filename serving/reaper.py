"""What cleans up after a tritonserver whose parent died, and the /proc readings it shares with serving/.

`TritonServer` starts this file as a small process of its own (`python -I reaper.py PID START WORKDIR
GRACE`, in a session of its own so that a signal to the parent's group does not reach it), with a
pipe on its stdin that only the parent writes. While the parent lives, the reaper notes which
Python-backend shared memory regions (/dev/shm/triton_python_backend_shm_region_*) the server maps.
When the pipe ends:
- after the parent wrote "close": the parent stopped the server and cleans up itself; the reaper exits;
- otherwise the parent died (SIGKILL, a crash): the reaper sends the server SIGTERM (it had one already
  where the parent-death signal was armed; tritonserver ignores a second), waits up to GRACE seconds
  for it to drain and exit, SIGKILLs its process group if it did not, and then removes the regions
  the server left (tritonserver leaves them when it exits on its exit timeout, or when a stub died)
  and the server's work folder.

Standard library only, since it runs as a plain script (the package is not imported there).
"""
from __future__ import annotations

import os
import re
import select
import shutil
import signal
import sys
import time

SHM_DIR = "/dev/shm"
REGION = re.compile(r"/dev/shm/(triton_python_backend_shm_region_[A-Za-z0-9_-]+)")
STUB_NAME = "triton_python_backend_stub"
CLOSE = b"close\n"


def stat_of(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks) of process `pid`, None when there is none."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command name (2nd field) is in parentheses and may hold spaces: count fields after the last ")".
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def running(pid: int, start: int | None = None) -> bool:
    """Whether `pid` runs (an exited process waiting to be reaped does not); with `start`, whether it is
    still the process that began then (not a later one given the same pid)."""
    found = stat_of(pid)
    return found is not None and found[0] not in "ZX" and (start is None or found[2] == start)


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of each process whose parent is `pid`, exited ones (state Z) included."""
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = stat_of(int(entry))
            if found is not None and found[1] == pid:
                kids.append((int(entry), found[0]))
    return sorted(kids)


def stub_args(pid: int) -> list[str] | None:
    """The command line of a Python-backend stub (None for another process, or one that exited: the
    kernel drops an exited process's command line). The stub is started as `stub MODEL_PY SHM_REGION
    SIZE GROW PARENT_PID LIB_DIR IPC_HANDLE INSTANCE_NAME ...` (python_backend 24.10)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
    except OSError:
        return None
    return args if len(args) > 8 and os.path.basename(args[0]) == STUB_NAME else None


def end_orphaned_stubs(group: int) -> set[str]:
    """SIGKILL the Python-backend stubs still in process group `group` (a server leads its own group): a
    server that died without stopping them (SIGKILL, a crash) leaves them running, orphaned, each holding
    its shared memory region. Only stubs, recognized by their command line, are signalled, so a later
    process given the same group id is never touched. The regions they held."""
    regions = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()  # state, ppid, pgrp, ...
        except OSError:
            continue
        args = stub_args(int(entry)) if int(fields[2]) == group and fields[0] not in "ZX" else None
        if args is not None:
            try:
                os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                continue
            regions.add(args[2])  # the stub's command line names its region (see stub_args)
    return regions


def mapped_regions(pid: int) -> set[str]:
    """Names of the Python-backend regions process `pid` maps (tritonserver maps every stub's region)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return set(REGION.findall(f.read()))
    except OSError:
        return set()


def unlink_regions(names) -> list[str]:
    """Remove these regions from /dev/shm where they still exist; the names removed. Only names of the
    Python backend's form are touched."""
    removed = []
    for name in sorted(names):
        if not REGION.fullmatch(f"{SHM_DIR}/{name}"):
            continue
        try:
            os.unlink(os.path.join(SHM_DIR, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


def _wait_gone(pid: int, start: int, seconds: float, regions: set[str]) -> bool:
    deadline = time.monotonic() + seconds
    while running(pid, start):
        regions |= mapped_regions(pid)
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def main(argv: list[str]) -> int:
    pid, start, workdir, grace = int(argv[0]), int(argv[1]), argv[2], float(argv[3])
    for sig in (signal.SIGINT, signal.SIGHUP):  # a terminal's Ctrl-C or hang-up is for the parent, not for us
        signal.signal(sig, signal.SIG_IGN)
    regions: set[str] = set()
    received = b""
    while True:
        if running(pid, start):
            regions |= mapped_regions(pid)
        ready, _, _ = select.select([sys.stdin.fileno()], [], [], 0.5)
        if ready:
            chunk = os.read(sys.stdin.fileno(), 64)
            if not chunk:
                break
            received += chunk
    if received.endswith(CLOSE):
        return 0
    if running(pid, start):
        os.kill(pid, signal.SIGTERM)
        if not _wait_gone(pid, start, grace, regions):
            try:
                os.killpg(pid, signal.SIGKILL)  # the server leads its own group, with its stubs
            except ProcessLookupError:
                pass
            _wait_gone(pid, start, 5.0, regions)
    regions |= end_orphaned_stubs(pid)  # the server may have died first, leaving its stubs
    unlink_regions(regions)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
