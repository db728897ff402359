"""How busy each core of the host was over a load run, from /proc/stat.

On a small machine the server, its model instances and the load generator share the cores, so a
throughput number means little without knowing which core ran out first: a run whose instance core
is 97% busy is bound by the model's own work, one with idle cores left is bound by latency. Model
Analyzer reports CPU use beside throughput for the same reason. The counts are host-wide, like the
idle-state counts in serving/idle.py.
"""
from __future__ import annotations

from pathlib import Path

PROC_STAT = Path("/proc/stat")
# Fields after the cpu name: user nice system idle iowait irq softirq steal (guest time is inside user).
_BUSY_FIELDS = (0, 1, 2, 5, 6)  # steal, time the hypervisor gave to another guest, is not this host's work


def core_times(stat: Path = PROC_STAT) -> dict[str, tuple[int, int]]:
    """Per core ("cpu0", ...): (busy, total) clock ticks since boot."""
    out = {}
    for line in stat.read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(f) for f in fields[:8]]
            out[name] = (sum(ticks[i] for i in _BUSY_FIELDS), sum(ticks))
    if not out:
        raise ValueError(f"expected per-core 'cpuN' lines in {stat}, found none")
    return out


def busy_fractions(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, float]:
    """The fraction of each core's time between two `core_times` snapshots that was not idle (NaN for a
    core whose clock did not tick, e.g. an interval far shorter than a tick)."""
    out = {}
    for core, (busy, total) in after.items():
        busy0, total0 = before.get(core, (busy, total))
        out[core] = (busy - busy0) / (total - total0) if total > total0 else float("nan")
    return out
