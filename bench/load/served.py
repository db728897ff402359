"""Served latency and throughput against a running tritonserver, with the server's own breakdown.

Requests are built once from the model description; each load worker has its own client: a
tritonclient (one channel) for "grpc" and "http", what Python users of the server run, or for
"http-lean" a bare kept-alive socket (bench/load/lean_http.py) that costs the machine far less per
request, so the run shows what the server can do rather than what the client can. Around every load
run, Triton's statistics API gives what the server spent per inference in queue, compute input,
compute infer and compute output, the numbers perf_analyzer reports beside the client's latency.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Callable

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from ...models.spec import ModelSpec
from ...serving.admin import TritonAdmin
from ..record import Record
from . import wrk
from .host_cpu import busy_fractions, core_times
from .lean_http import LeanHttpSender
from .loadgen import LoadResult, LoadSummary, closed_loop, open_loop

TRITONCLIENTS = {"grpc": grpcclient, "http": httpclient}
LEAN_HTTP = "http-lean"
PROTOCOLS = (*TRITONCLIENTS, LEAN_HTTP)
# The lean HTTP request sent by wrk (bench/load/wrk.py) instead of Python threads: closed loop only.
WRK_HTTP = "http-wrk"
STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


# Sentences of mixed lengths and scripts for text models' served rows.
SENTENCES = ("Triton serves models over gRPC.", "Ein kurzer Satz.", "日本語の短い文です。",
             "A somewhat longer sentence that talks about latency, throughput and dynamic batching on a CPU.")


def endpoint(server, protocol: str) -> str:
    """The URL of `server` (a TritonServer) that `protocol`'s clients talk to."""
    return server.grpc_url if protocol == "grpc" else server.http_url


def text_inputs(spec: ModelSpec, batch: int) -> dict[str, np.ndarray]:
    rows = [[SENTENCES[i % len(SENTENCES)].encode("utf-8")] for i in range(batch)]
    return {spec.text.input.name: np.array(rows, dtype=object)}


def infer_inputs(module, tensor_specs, inputs: dict[str, np.ndarray]) -> list:
    """tritonclient `InferInput`s (of `module`, grpc or http) for the arrays named by `tensor_specs`."""
    tensors = []
    for t in tensor_specs:
        tensor = module.InferInput(t.name, list(inputs[t.name].shape), t.wire_dtype)
        tensor.set_data_from_numpy(inputs[t.name])
        tensors.append(tensor)
    return tensors


def sender_factory(protocol: str, url: str, model: str, spec: ModelSpec, batch: int = 1,
                   seq: int | None = None, rng: np.random.Generator | None = None,
                   text: bool = False) -> Callable[[], Callable[[], None]]:
    """A factory of senders: each has its own client and a request built once (random valid inputs,
    or sentences for a text model's string input when `text`)."""
    if protocol not in (*PROTOCOLS, WRK_HTTP):
        raise ValueError(f"protocol must be one of {[*PROTOCOLS, WRK_HTTP]}, got {protocol!r}")
    if text:
        inputs, tensor_specs = text_inputs(spec, batch), [spec.text.input]
    else:
        examples = spec.example_inputs(batch, seq if seq is not None else spec.default_seq(), rng)
        inputs, tensor_specs = {t.name: t.as_served(examples[t.name]) for t in spec.inputs}, spec.inputs

    if protocol in (LEAN_HTTP, WRK_HTTP):  # wrk's request is checked by a lean sender first
        lean_inputs = [(t.name, inputs[t.name], t.wire_dtype) for t in tensor_specs]
        return lambda: LeanHttpSender(url, model, lean_inputs, spec.output_names)
    module = TRITONCLIENTS[protocol]

    def make() -> Callable[[], None]:
        client = module.InferenceServerClient(url)
        tensors = infer_inputs(module, tensor_specs, inputs)
        outputs = [module.InferRequestedOutput(n) for n in spec.output_names]
        return lambda: client.infer(model, tensors, outputs=outputs)

    return make


@dataclass
class ServerCounts:
    """Triton's cumulative statistics for one model (all versions summed): counts and nanoseconds per stage."""
    inference_count: int = 0
    execution_count: int = 0
    success_count: int = 0
    queue_ns: int = 0
    compute_input_ns: int = 0
    compute_infer_ns: int = 0
    compute_output_ns: int = 0

    def plus(self, before: "ServerCounts", after: "ServerCounts") -> "ServerCounts":
        """These counts plus what the server did between two snapshots, for measurements made in pieces."""
        return ServerCounts(**{f.name: getattr(self, f.name) + getattr(after, f.name) - getattr(before, f.name)
                               for f in fields(self)})


@dataclass
class ServerTimes(Record):
    """Per-request microseconds the server spent in each stage (Triton's statistics, or perf_analyzer's CSV)."""
    queue_us: float
    compute_input_us: float
    compute_infer_us: float
    compute_output_us: float


@dataclass
class ServerBreakdown(ServerTimes):
    """The server's side of a measurement: its stage times, the requests it answered, the model
    executions it made for them and the mean batch the dynamic batcher formed (inferences per execution)."""
    requests: int
    executions: int
    mean_batch: float


@dataclass(kw_only=True)
class ServedRow(LoadSummary):
    """One load run against a served model: the client's view (LoadSummary), inferences per second
    (requests x batch), the server's breakdown and each host core's busy share over the run."""
    model: str
    protocol: str
    batch: int
    infer_per_s: float
    server: ServerBreakdown
    cores_busy: dict[str, float]


def model_statistics(grpc_url: str, model: str, admin_key: str | None = None) -> ServerCounts:
    """Cumulative counts and nanoseconds for `model` (all versions summed) from the statistics API,
    which a tritonize server answers only with its admin key."""
    with TritonAdmin(grpc_url, admin_key) as admin:
        versions = admin.statistics(model)
    total = ServerCounts()
    for v in versions:
        total.inference_count += v.inference_count
        total.execution_count += v.execution_count
        total.success_count += v.success.count
        for s in STAGES:
            setattr(total, f"{s}_ns", getattr(total, f"{s}_ns") + getattr(v, s).ns)
    return total


def settled_statistics(grpc_url: str, model: str, answered: int, timeout_s: float = 3.0,
                       admin_key: str | None = None) -> ServerCounts:
    """Statistics once the server's success count reaches `answered` (bounded wait): Triton records
    a request just after sending its response, so the last few can lag behind the client."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = model_statistics(grpc_url, model, admin_key)
        if stats.success_count >= answered or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


def server_breakdown(before: ServerCounts, after: ServerCounts) -> ServerBreakdown:
    """Per-request server-side microseconds between two statistics snapshots, and the mean batch the
    dynamic batcher formed (inferences per model execution)."""
    requests = after.success_count - before.success_count
    executions = after.execution_count - before.execution_count
    inferences = after.inference_count - before.inference_count
    times = {f"{s}_us": (getattr(after, f"{s}_ns") - getattr(before, f"{s}_ns")) / requests / 1e3
             if requests else float("nan") for s in STAGES}
    return ServerBreakdown(**times, requests=requests, executions=executions,
                           mean_batch=inferences / executions if executions else float("nan"))


def run_load(grpc_url: str, url: str, protocol: str, model: str, spec: ModelSpec, *, mode: str = "closed",
             level: float = 1, duration_s: float = 3.0, max_requests: int = 100_000, batch: int = 1,
             warmup_requests: int = 5, text: bool = False, admin_key: str | None = None) -> ServedRow:
    """One bounded load run on `model` with the server's breakdown (read from `grpc_url` with the
    server's `admin_key`) and how busy each core of the host was (over the run, its warm-up included)."""
    make = sender_factory(protocol, url, model, spec, batch, text=text)
    if protocol == WRK_HTTP and mode != "closed":
        raise ValueError(f"wrk runs closed loops only, got mode {mode!r}")
    before = model_statistics(grpc_url, model, admin_key)
    cores_before = core_times()
    if protocol == WRK_HTTP:
        check = make()  # the request wrk sends, answered once in full and checked
        check.infer()
        check.close()
        summary = wrk.closed_loop(wrk.from_raw_http(url, check.request), int(level), duration_s)
        answered = summary.sent + 1
    elif mode == "closed":
        result: LoadResult = closed_loop(make, int(level), duration_s, max_requests, warmup_requests)
        summary, answered = result.summary(), result.ok + warmup_requests * int(level)
    elif mode == "open":
        result = open_loop(make, level, duration_s, max_requests)
        summary, answered = result.summary(), result.ok
    else:
        raise ValueError(f"mode must be 'closed' or 'open', got {mode!r}")
    cores_busy = busy_fractions(cores_before, core_times())
    after = settled_statistics(grpc_url, model, before.success_count + answered, admin_key=admin_key)
    return ServedRow(**vars(summary), model=model, protocol=protocol, batch=batch,
                     infer_per_s=summary.throughput_rps * batch, server=server_breakdown(before, after),
                     cores_busy=cores_busy)
