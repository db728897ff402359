"""CPU placement: the CPU-list parsing, and a real server whose threads and stubs land on the cores asked for."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from tritonize.models import get_spec
from tritonize.serving.placement import Placement, available_cpus, child_processes, parse_cpu_list, pinned
from tritonize.serving.server import TritonServer

two_cores = pytest.mark.skipif(len(available_cpus()) < 2, reason="placement needs two or more cores")


def _thread_cpus(pid: int) -> set[frozenset[int]]:
    return {frozenset(os.sched_getaffinity(int(tid))) for tid in os.listdir(f"/proc/{pid}/task")}


def _assert_the_mlp_answers(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    x = grpcclient.InferInput("x", [1, 784], "FP32")
    x.set_data_from_numpy(get_spec("mlp").example_inputs(1)["x"])
    assert client.infer("mlp", [x]).as_numpy("logits").shape == (1, 10)


@pytest.mark.parametrize("text, cpus", [("0", {0}), ("0-3", {0, 1, 2, 3}), ("0,2,4-5", {0, 2, 4, 5}), (" 1 ", {1})])
def test_cpu_lists_read_like_taskset(text, cpus):
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize("text", ["", "a", "3-1", "-1", "0,,1"])
def test_bad_cpu_lists_say_what_a_list_looks_like(text):
    with pytest.raises(ValueError, match=f"a CPU list looks like 0 or 0-3 or 0,2,4-5; got {text!r}"):
        parse_cpu_list(text)


def test_cores_this_process_cannot_use_are_refused():
    missing = max(available_cpus()) + 1
    with pytest.raises(ValueError, match=f"instance CPUs must be a non-empty subset .* got {missing}"):
        Placement.parse("0", str(missing))


@two_cores
def test_instance_cpus_must_be_one_range():
    cpus = sorted(available_cpus())
    if len(cpus) < 3:
        pytest.skip("a non-contiguous instance list needs three or more cores")
    with pytest.raises(ValueError, match="one contiguous range"):
        Placement.parse(str(cpus[0]), f"{cpus[0]},{cpus[2]}")


@two_cores
def test_split_gives_the_server_the_lower_half_and_the_instances_the_rest():
    placement = Placement.split()
    cpus = sorted(available_cpus())
    first, last = placement.instance_cpus
    assert sorted(placement.server_cpus) + list(range(first, last + 1)) == cpus
    assert placement.server_args() == [f"--host-policy=tritonize_instances,cpu-cores={first}-{last}"]


@two_cores
def test_pinned_moves_every_thread_and_puts_them_back():
    before = _thread_cpus(os.getpid())
    target = frozenset({min(available_cpus())})
    with pinned(target):
        assert _thread_cpus(os.getpid()) == {target}
    assert _thread_cpus(os.getpid()) == before


@two_cores
@pytest.mark.server
def test_server_threads_and_model_stubs_run_where_the_placement_says(cpu_repository):
    placement = Placement.split()
    instance_cpus = placement.instance_cpu_set
    with TritonServer(cpu_repository, ["mlp", "cnn"], placement=placement) as server:
        stubs = child_processes(server.process.pid)
        assert len(stubs) == 2, f"expected one Python-backend stub per model, found {stubs}"
        for stub in stubs:  # started from the instance thread, so on the instance cores
            assert _thread_cpus(stub) == {instance_cpus}
        # Every server thread starts on the server cores; Triton moves the instance threads.
        assert _thread_cpus(server.process.pid) == {placement.server_cpus, instance_cpus}
        _assert_the_mlp_answers(server)



@two_cores
@pytest.mark.server
def test_stubs_alone_puts_only_the_stubs_on_the_instance_cores(cpu_repository):
    placement = Placement.split(stubs_alone=True)
    instance_cpus = placement.instance_cpu_set
    with TritonServer(cpu_repository, ["mlp", "cnn"], placement=placement) as server:
        assert not any(a.startswith("--host-policy") for a in server.command(None))
        stubs = child_processes(server.process.pid)
        assert len(stubs) == 2, f"expected one Python-backend stub per model, found {stubs}"
        for stub in stubs:
            assert _thread_cpus(stub) == {instance_cpus}
        assert _thread_cpus(server.process.pid) == {placement.server_cpus}  # instance threads included
        _assert_the_mlp_answers(server)


def test_cli_serve_wants_both_placement_flags(cpu_repository):
    proc = subprocess.run([sys.executable, "-P", "-m", "tritonize.cli", "serve", "--repo", str(cpu_repository),
                           "--server-cpus", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--server-cpus and --instance-cpus go together" in proc.stderr and "got only --server-cpus" in proc.stderr


def test_cli_serve_wants_the_cpus_with_stubs_alone(cpu_repository):
    proc = subprocess.run([sys.executable, "-P", "-m", "tritonize.cli", "serve", "--repo", str(cpu_repository),
                           "--stubs-alone"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "--stubs-alone places the stubs on --instance-cpus" in proc.stderr, proc.stderr


@two_cores
@pytest.mark.server
@pytest.mark.parametrize("stubs_alone", [False, True])
def test_cli_serve_places_the_server_and_says_where(serve_cli, stubs_alone):
    import signal

    cpus = sorted(available_cpus())
    flags = ["--server-cpus", str(cpus[0]), "--instance-cpus", str(cpus[-1])] + (["--stubs-alone"] if stubs_alone else [])
    with serve_cli("--models", "mlp", *flags) as (proc, lines):
        text = "".join(lines)
        where = (f"server, its instance threads and clients on CPU {cpus[0]}, model stubs alone on CPU {cpus[-1]}"
                 if stubs_alone else f"server and clients on CPU {cpus[0]}, model instances on CPU {cpus[-1]}")
        assert f"placement: {where}" in text, text
        # serve's children: tritonserver, and the reaper that cleans up if serve is killed
        (server_pid,) = [pid for pid in child_processes(proc.pid) if Path(f"/proc/{pid}/comm").read_text().strip()
                         == "tritonserver"]
        (stub,) = child_processes(server_pid)
        assert _thread_cpus(stub) == {frozenset({cpus[-1]})}
        assert _thread_cpus(server_pid) == ({frozenset({cpus[0]})} if stubs_alone
                                            else {frozenset({cpus[0]}), frozenset({cpus[-1]})})
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
