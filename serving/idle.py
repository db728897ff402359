"""The host's CPU idle policy, and a request that keeps idle cores polling while a server runs.

A core with nothing to run enters an idle state, and waking it again costs time; in a virtual
machine a halted vCPU comes back through the hypervisor (tens of microseconds on the 2-core VMs this
project is developed on). A served request crosses cores more than once (client, server threads,
model instance, and back), and each crossing to a halted core pays that. A model that works a few
microseconds longer than a do-nothing one gives the waiting cores time to halt, so it pays more of
those wake-ups than its own work accounts for.

Linux's PM QoS interface lets a process bound the wake-up latency: while /dev/cpu_dma_latency is held
open with 0 written to it, the cpuidle governor only picks states that exit in 0 us, which is the
polling loop. The bound ends when the file is closed, also when the process dies, so nothing stays
changed on the host. The price is that idle cores spin instead of resting (power, and on a shared
host the hypervisor's CPU time), which is why tritonize asks for it only when told to.
"""
from __future__ import annotations

import contextlib
import os
import struct
import time
from pathlib import Path
from typing import Iterator

LATENCY_DEVICE = Path("/dev/cpu_dma_latency")
CPU_SYSFS = Path("/sys/devices/system/cpu")
SETTLE_S = 0.002  # after the bound is written, before the block runs
HALT_POLL_NS = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
NO_BOUND = 2_000_000_000  # what the device reads when no process holds a request (PM_QOS_CPU_LATENCY_DEFAULT_VALUE)


class PollIdleUnavailable(RuntimeError):
    pass


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def idle_states(cpu: int, sysfs: Path = CPU_SYSFS) -> list[dict]:
    """`cpu`'s cpuidle states in order: name, exit latency (us), entries since boot, disabled."""
    folders = sorted((sysfs / f"cpu{cpu}" / "cpuidle").glob("state[0-9]*"), key=lambda p: int(p.name[5:]))
    return [{"name": _read(d / "name"), "exit_latency_us": int(_read(d / "latency") or 0),
             "entries": int(_read(d / "usage") or 0), "disabled": _read(d / "disable") == "1"} for d in folders]


def _cpus(sysfs: Path) -> list[int]:
    return sorted(int(p.name[3:]) for p in sysfs.glob("cpu[0-9]*"))


def _driver(sysfs: Path) -> str:
    return _read(sysfs / "cpuidle" / "current_driver") or "none"


def _first_cpu_states(sysfs: Path) -> list[dict]:
    """The states of the lowest-numbered CPU (every CPU has the same driver's states)."""
    return idle_states(next(iter(_cpus(sysfs)), 0), sysfs)


def resting_entries(sysfs: Path = CPU_SYSFS) -> int:
    """How many times, since boot, the host's cores entered an idle state that does not poll (exit
    latency above 0): each one is a wake-up that costs a later request time."""
    return sum(s["entries"] for cpu in _cpus(sysfs) for s in idle_states(cpu, sysfs) if s["exit_latency_us"] > 0)


def latency_bound_us(device: Path = LATENCY_DEVICE) -> int | None:
    """The host's current PM QoS CPU latency bound (the strictest request held by any process), or
    None when there is none or it cannot be read."""
    try:
        with open(device, "rb") as f:
            (value,) = struct.unpack("=i", f.read(4))
    except (OSError, struct.error):
        return None
    return None if value >= NO_BOUND else value


def describe(sysfs: Path = CPU_SYSFS, halt_poll_ns: Path = HALT_POLL_NS, device: Path = LATENCY_DEVICE) -> dict:
    """The idle policy, for a benchmark report's machine section."""
    cpuidle = sysfs / "cpuidle"
    out = {"driver": _driver(sysfs),
           "governor": _read(cpuidle / "current_governor") or _read(cpuidle / "current_governor_ro") or "none",
           "states": [f"{s['name']} ({s['exit_latency_us']} us)" for s in _first_cpu_states(sysfs)]}
    if (bound := latency_bound_us(device)) is not None:
        out["latency_bound_us"] = bound
    if (halt_poll := _read(halt_poll_ns)) is not None:  # the KVM guest's own poll window before it halts
        out["guest_halt_poll_ns"] = int(halt_poll)
    return out


def poll_idle_unavailable(device: Path = LATENCY_DEVICE, sysfs: Path = CPU_SYSFS) -> str | None:
    """Why idle cores cannot be kept polling here, or None when they can."""
    driver = _driver(sysfs)
    if driver == "none":
        return (f"this kernel runs no cpuidle driver ({sysfs / 'cpuidle' / 'current_driver'}: none), so there "
                f"is no idle state to keep the cores out of")
    if not any(s["exit_latency_us"] > 0 and not s["disabled"] for s in _first_cpu_states(sysfs)):
        return f"every enabled idle state of the {driver} driver polls already"
    if not device.exists():
        return f"{device} is missing: this kernel has no PM QoS CPU latency device"
    if not os.access(device, os.W_OK):
        return (f"needs write access to {device} (root, or a udev rule that gives your group write access); "
                f"this process runs as uid {os.getuid()}")
    return None


@contextlib.contextmanager
def poll_idle(device: Path = LATENCY_DEVICE, sysfs: Path = CPU_SYSFS) -> Iterator[None]:
    """Keep every idle core polling for the block (a PM QoS CPU latency bound of 0 us, released on exit)."""
    if reason := poll_idle_unavailable(device, sysfs):
        raise PollIdleUnavailable(f"cannot keep idle cores polling: {reason}")
    try:
        fd = os.open(device, os.O_WRONLY)
    except OSError as e:
        raise PollIdleUnavailable(f"cannot keep idle cores polling: opening {device} failed: {e}") from e
    try:
        os.write(fd, struct.pack("=i", 0))  # the device takes a native s32 (microseconds)
        # A core that was already choosing an idle state when the bound was written may still enter
        # one; a moment's pause lets that pass, so what runs in the block runs with every core polling.
        time.sleep(SETTLE_S)
        yield
    finally:
        os.close(fd)
