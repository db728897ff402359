"""The idle policy: reading cpuidle's sysfs, the reasons a poll-idle request cannot be made, and on a
host that allows it, a real request that stops the cores from halting and is released afterwards."""
import subprocess
import sys
import time

import pytest

from tritonize.serving.idle import (PollIdleUnavailable, describe, idle_states, latency_bound_us, poll_idle,
                            poll_idle_unavailable, resting_entries)


def _fake_sysfs(root, driver="haltpoll", states=(("POLL", 0, 7), ("halt", 1, 100)), cpus=(0, 1)):
    """A cpuidle sysfs tree as Linux lays it out: cpuidle/current_driver, cpuN/cpuidle/stateK/{name,latency,usage,disable}."""
    (root / "cpuidle").mkdir(parents=True)
    (root / "cpuidle" / "current_driver").write_text(driver + "\n")
    (root / "cpuidle" / "current_governor").write_text("menu\n")
    for cpu in cpus:
        for k, (name, latency, usage) in enumerate(states):
            d = root / f"cpu{cpu}" / "cpuidle" / f"state{k}"
            d.mkdir(parents=True)
            for field, value in (("name", name), ("latency", latency), ("usage", usage + cpu), ("disable", 0)):
                (d / field).write_text(f"{value}\n")
    return root


def test_states_entries_and_description_come_from_sysfs(tmp_path):
    sysfs = _fake_sysfs(tmp_path / "sys", states=(("POLL", 0, 7), ("C1", 2, 100), ("C6", 133, 40)))
    assert [(s["name"], s["exit_latency_us"], s["entries"]) for s in idle_states(1, sysfs)] == [
        ("POLL", 0, 8), ("C1", 2, 101), ("C6", 133, 41)]
    assert resting_entries(sysfs) == (100 + 40) + (101 + 41)  # the polling state does not count
    halt_poll, device = tmp_path / "guest_halt_poll_ns", tmp_path / "cpu_dma_latency"
    halt_poll.write_text("200000\n")
    device.write_bytes((50).to_bytes(4, sys.byteorder, signed=True))
    assert describe(sysfs, halt_poll, device) == {"driver": "haltpoll", "governor": "menu", "latency_bound_us": 50,
                                                  "guest_halt_poll_ns": 200000,
                                                  "states": ["POLL (0 us)", "C1 (2 us)", "C6 (133 us)"]}
    device.write_bytes((2_000_000_000).to_bytes(4, sys.byteorder, signed=True))  # what it reads with no request held
    assert describe(sysfs, tmp_path / "missing", device).keys() == {"driver", "governor", "states"}


def test_each_reason_a_request_cannot_be_made_is_named(tmp_path):
    device = tmp_path / "cpu_dma_latency"
    no_driver = _fake_sysfs(tmp_path / "a", driver="none")
    assert "runs no cpuidle driver" in poll_idle_unavailable(device, no_driver)
    only_polling = _fake_sysfs(tmp_path / "b", states=(("POLL", 0, 7),))
    assert poll_idle_unavailable(device, only_polling) == "every enabled idle state of the haltpoll driver polls already"
    sysfs = _fake_sysfs(tmp_path / "c")
    assert poll_idle_unavailable(device, sysfs) == f"{device} is missing: this kernel has no PM QoS CPU latency device"
    with pytest.raises(PollIdleUnavailable, match=f"cannot keep idle cores polling: {device} is missing"):
        with poll_idle(device, sysfs):
            pass


def test_a_request_on_a_device_file_writes_zero_microseconds(tmp_path):
    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")
    with poll_idle(device, _fake_sysfs(tmp_path / "sys")):
        assert device.read_bytes() == (0).to_bytes(4, sys.byteorder, signed=True)


requires_poll_idle = pytest.mark.skipif(poll_idle_unavailable() is not None,
                                        reason=f"poll idle is not available here: {poll_idle_unavailable()}")


def _resting_entries_while_idle(seconds=0.3) -> int:
    before = resting_entries()
    time.sleep(seconds)
    return resting_entries() - before


@requires_poll_idle
def test_while_the_request_is_held_no_core_halts_and_afterwards_the_bound_is_gone():
    before = latency_bound_us()
    if before is None:  # no other process bounds the latency: idle cores halt
        assert _resting_entries_while_idle() > 0
    with poll_idle():
        assert latency_bound_us() == 0
        assert _resting_entries_while_idle() == 0
    assert latency_bound_us() == before


@requires_poll_idle
def test_the_request_ends_with_the_process_that_held_it():
    before = latency_bound_us()
    holder = subprocess.Popen([sys.executable, "-P", "-c", "from tritonize.serving.idle import poll_idle\n"
                               "import time\nwith poll_idle():\n    print('held', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        assert latency_bound_us() == 0 and _resting_entries_while_idle() == 0
    finally:
        holder.kill()  # SIGKILL: no exit handler runs, the kernel drops the request with the file
        holder.wait()
    assert latency_bound_us() == before
