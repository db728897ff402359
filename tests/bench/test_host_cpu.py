import math
import time

import pytest

from tritonize.bench.load.host_cpu import busy_fractions, core_times
from tritonize.bench.report.tables import cores
from tritonize.serving.placement import available_cpus, pinned

# user nice system idle iowait irq softirq steal guest guest_nice, as Linux writes them
STAT = """cpu  300 0 100 1000 0 0 0 0 0 0
cpu0 {user} 0 {system} {idle} 5 1 2 {steal} 7 0
cpu1 100 0 50 500 0 0 0 0 0 0
intr 12345 0 0
ctxt 999
"""


def _stat(tmp_path, name, **ticks):
    path = tmp_path / name
    path.write_text(STAT.format(**ticks))
    return path


def test_busy_is_user_system_and_interrupts_and_steal_is_not(tmp_path):
    before = core_times(_stat(tmp_path, "a", user=100, system=50, idle=800, steal=0))
    assert set(before) == {"cpu0", "cpu1"}  # the all-cores line is not a core
    assert before["cpu0"] == (100 + 50 + 1 + 2, 100 + 50 + 800 + 5 + 1 + 2)  # guest time is inside user already
    after = core_times(_stat(tmp_path, "b", user=160, system=70, idle=810, steal=10))
    busy = busy_fractions(before, after)
    assert busy["cpu0"] == pytest.approx(80 / 100)  # 60 user + 20 system of 100 ticks, 10 of them stolen
    assert math.isnan(busy["cpu1"])  # no tick passed on that core


def test_a_stat_file_without_per_core_lines_is_refused(tmp_path):
    path = tmp_path / "stat"
    path.write_text("cpu  1 2 3 4 5 6 7 8 9 10\nctxt 5\n")
    with pytest.raises(ValueError, match="expected per-core 'cpuN' lines in .*stat, found none"):
        core_times(path)


def test_a_core_kept_spinning_reads_busy_on_this_host():
    cpus = available_cpus()
    core = max(cpus)
    with pinned(frozenset({core})):
        before = core_times()
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            pass
        after = core_times()
    busy = busy_fractions(before, after)
    assert set(busy) >= {f"cpu{c}" for c in cpus}
    assert busy[f"cpu{core}"] > 0.6, busy  # not 1.0: the hypervisor may take some of the time here


def test_the_report_lists_cores_in_core_order():
    assert cores({"cpu10": 0.5, "cpu2": 0.971, "cpu0": 0.0, "cpu1": float("nan")}) == "0 / - / 97 / 50%"
