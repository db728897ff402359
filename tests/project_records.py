"""Builders of the project benchmark's records (bench/report/project.py), for the tests that judge them
(tests/studies/test_project.py) and the tests that render them (tests/bench/test_report.py). Loaded by path
through the `project_records` fixture (tests/conftest.py): under --import-mode=importlib, tests/ is not
importable by name."""
from tritonize.bench.load.served import ServerBreakdown
from tritonize.bench.report.project import FloorResult, PooledLevel, ScalingResult


def level(infer_per_s, mean_batch, errors=0):
    return PooledLevel(requests=100, errors=errors, infer_per_s=infer_per_s, mean_batch=mean_batch,
                       window_p50_ms_median=1.0, cores_busy={"cpu0": 0.5, "cpu1": 0.9})


def scaling(protocol, idle, c1, c8):
    """The CNN's scaling row: c1 and c8 inferences/s at concurrency 1 and 8."""
    return ScalingResult(model="cnn", setup="split", idle=idle, protocol=protocol, turns=3, window_s=0.4,
                         measured_s=[0.0, 1.0], levels={"c1": level(c1, 1.0), "c8": level(c8, 4.0)}, ratio=c8 / c1,
                         turn_ratio_quartiles=[2.5, 2.75, 3.0])


def floor(placement, idle, p50_ms, noop_p50_ms, block_requests=100):
    """The MLP's floor row: its p50 against its do-nothing twin's, taking turns in blocks of `block_requests`."""
    breakdown = ServerBreakdown(queue_us=10.0, compute_input_us=1.0, compute_infer_us=60.0, compute_output_us=1.0,
                                requests=100, executions=100, mean_batch=1.0)
    return FloorResult(model="mlp", setup=placement + (", poll idle" if idle == "poll" else ""), placement=placement,
                       where="w", idle=idle, p50_ms=p50_ms, noop_p50_ms=noop_p50_ms, ratio=p50_ms / noop_p50_ms,
                       requests={"mlp": 100, "mlp_noop": 100}, blocks=1, block_requests=block_requests,
                       measured_s=[0.0, 1.0], block_ratio_quartiles=[1.0, 1.1, 1.2],
                       resting_idle_entries_per_request={"mlp": 0.5, "mlp_noop": 0.4},
                       server={"mlp": breakdown, "mlp_noop": breakdown})
