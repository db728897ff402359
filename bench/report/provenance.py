"""Where a benchmark ran and on what code: the machine (CPU, cores, memory, GPU, the CPU idle policy)
and the git commit, with "-dirty" when the measured code is not what the commit holds. A report
without these cannot be compared with another one."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ...serving.idle import describe as describe_idle
from ..record import Record

HERE = Path(__file__).parent
RESULTS_DIR = "docs/results"  # where committed reports live; a new report there does not make the code dirty


@dataclass
class IdlePolicy(Record):
    """The host's cpuidle driver and governor, its states with their exit latencies, and what else
    bounds wake-ups (serving/idle.py)."""
    driver: str
    governor: str
    states: list[str] = field(default_factory=list)
    latency_bound_us: int | None = None  # a PM QoS CPU latency bound another process held when the run started
    guest_halt_poll_ns: int | None = None  # the KVM guest's own poll window before it halts


@dataclass
class Machine(Record):
    host: str
    platform: str
    cpu: str
    cores: int
    memory_gb: float
    gpu: str
    cpuidle: IdlePolicy | None = None


def machine_info() -> Machine:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = "none"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken CUDA setup is reported as no GPU, not a failed benchmark
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return Machine(host=socket.gethostname(), platform=platform.platform(), cpu=cpu, cores=os.cpu_count() or 0,
                   memory_gb=round(mem, 1), gpu=gpu, cpuidle=IdlePolicy.from_json(describe_idle()))


def git_commit(cwd: Path = HERE) -> str:
    """The checkout's short commit, with "-dirty" when tracked files outside docs/results differ from
    it (the report then measured code that no commit holds); "unknown" outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no", "--", ":(top)", f":(top,exclude){RESULTS_DIR}")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if changed else "")
