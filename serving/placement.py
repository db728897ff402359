"""CPU placement: which cores the server's own threads, its clients and the model instances run on.

On a small machine the server's gRPC/HTTP threads, clients on the same host and the Python-backend
stubs share the cores, and each request hops between them: the stub wakes on whichever core is free,
with caches another process just filled. Giving the model instances cores of their own keeps their
caches warm. Triton's own mechanism does it: CPU-target configs put their instances in the host
policy `INSTANCE_HOST_POLICY`; the server is told that policy's cores
(`--host-policy=NAME,cpu-cores=FIRST-LAST`) and pins each instance's thread there, and the Python
backend starts its stub process from that thread, so the stub inherits the cores. The server process
itself (and with it every other server thread) starts on `server_cpus`. A server that is not told
about the policy ignores it, so the same configs run anywhere.

`stubs_alone` is the other way to split: no host policy, so the instance threads stay with the
server, and once the server is ready its child processes (the stubs) are moved to the instance
cores. A stub then has its core to itself and keeps its caches warm between requests, at the price
of a cross-core hand-off from its instance thread on every request. A stub that Triton restarts
later starts on the server's cores.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..model_repository.config import INSTANCE_HOST_POLICY


def available_cpus() -> frozenset[int]:
    return frozenset(os.sched_getaffinity(0))


def parse_cpu_list(text: str) -> frozenset[int]:
    """`taskset -c` style: "0", "0-3", "0,2,4-5"."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            lo, hi = int(first), int(last or first)
            if lo < 0 or hi < lo:
                raise ValueError
            cpus.update(range(lo, hi + 1))
    except ValueError:
        raise ValueError(f"a CPU list looks like 0 or 0-3 or 0,2,4-5; got {text!r}") from None
    return frozenset(cpus)


def _format(cpus) -> str:
    return ",".join(str(c) for c in sorted(cpus))


@dataclass(frozen=True)
class Placement:
    server_cpus: frozenset[int]
    instance_cpus: tuple[int, int]  # first and last core: a Triton host policy takes one range
    stubs_alone: bool = False  # only the stubs on the instance cores, their instance threads with the server

    def __post_init__(self) -> None:
        have = available_cpus()
        wanted = {"server": set(self.server_cpus), "instance": set(self.instance_cpu_set)}
        for what, cpus in wanted.items():
            if not cpus or not cpus <= have:
                raise ValueError(f"{what} CPUs must be a non-empty subset of the CPUs this process may use "
                                 f"({_format(have)}), got {_format(cpus) or 'none'}")

    @classmethod
    def parse(cls, server: str, instances: str, stubs_alone: bool = False) -> "Placement":
        """From two CPU lists; the instance list must be one contiguous range (Triton's limit)."""
        inst = sorted(parse_cpu_list(instances))
        if inst != list(range(inst[0], inst[-1] + 1)):
            raise ValueError(f"instance CPUs must be one contiguous range such as 2-3 (Triton's host policies "
                             f"take a range), got {instances!r}")
        return cls(parse_cpu_list(server), (inst[0], inst[-1]), stubs_alone)

    @property
    def instance_cpu_set(self) -> frozenset[int]:
        first, last = self.instance_cpus
        return frozenset(range(first, last + 1))

    @classmethod
    def split(cls, stubs_alone: bool = False) -> "Placement | None":
        """The lower half of this process's cores for the server and its clients, the upper half for
        the model instances; None with fewer than two cores or a non-contiguous upper half."""
        cpus = sorted(available_cpus())
        if len(cpus) < 2:
            return None
        upper = cpus[len(cpus) // 2:]
        if upper != list(range(upper[0], upper[-1] + 1)):
            return None
        return cls(frozenset(cpus[:len(cpus) // 2]), (upper[0], upper[-1]), stubs_alone)

    def server_args(self) -> list[str]:
        if self.stubs_alone:
            return []
        first, last = self.instance_cpus
        return [f"--host-policy={INSTANCE_HOST_POLICY},cpu-cores={first}-{last}"]

    def place_stubs(self, server_pid: int) -> list[int]:
        """With `stubs_alone`, move the ready server's child processes to the instance cores; the pids moved."""
        if not self.stubs_alone:
            return []
        stubs = child_processes(server_pid)
        for pid in stubs:
            set_process_affinity(pid, self.instance_cpu_set)
        return stubs

    def describe(self) -> str:
        inst = _format_range(self.instance_cpus)
        if self.stubs_alone:
            return (f"server, its instance threads and clients on CPU {_format(self.server_cpus)}, "
                    f"model stubs alone on CPU {inst}")
        return f"server and clients on CPU {_format(self.server_cpus)}, model instances on CPU {inst}"


def _format_range(cpus: tuple[int, int]) -> str:
    first, last = cpus
    return str(first) if first == last else f"{first}-{last}"


def child_processes(pid: int) -> list[int]:
    """The processes whose parent is `pid` (read from /proc, so no extra dependency)."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # a process that ended meanwhile
            continue
        # The command name (2nd field) is in parentheses and may hold spaces: the parent pid is the
        # second field after the last ")".
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry))
    return sorted(kids)


def set_process_affinity(pid: int, cpus) -> None:
    """Every thread of process `pid` (os.sched_setaffinity on a pid moves only its main thread)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cpus)


@contextlib.contextmanager
def pinned(cpus) -> Iterator[None]:
    """This process's threads (and the threads they start) on `cpus` for the block."""
    before = os.sched_getaffinity(0)
    set_process_affinity(os.getpid(), cpus)
    try:
        yield
    finally:
        set_process_affinity(os.getpid(), before)
