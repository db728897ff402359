"""Served latency and throughput against a running tritonserver, with the server's own breakdown.

Requests are built once from the model description; each load worker has its own client: a
tritonclient (one channel) for "grpc" and "http", what Python users of the server run, or for
"http-lean" a bare kept-alive socket (bench/lean_http.py) that costs the machine far less per
request, so the run shows what the server can do rather than what the client can. Around every load
run, Triton's statistics API gives what the server spent per inference in queue, compute input,
compute infer and compute output, the numbers perf_analyzer reports beside the client's latency.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from tritonize.bench.host_cpu import busy_fractions, core_times
from tritonize.bench.lean_http import LeanHttpSender
from tritonize.bench.loadgen import LoadResult, closed_loop, open_loop
from tritonize.models.spec import ModelSpec

TRITONCLIENTS = {"grpc": grpcclient, "http": httpclient}
LEAN_HTTP = "http-lean"
PROTOCOLS = (*TRITONCLIENTS, LEAN_HTTP)
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
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    if text:
        inputs, tensor_specs = text_inputs(spec, batch), [spec.text.input]
    else:
        inputs, tensor_specs = spec.example_inputs(batch, seq if seq is not None else spec.default_seq(), rng), spec.inputs

    if protocol == LEAN_HTTP:
        lean_inputs = [(t.name, inputs[t.name], t.wire_dtype) for t in tensor_specs]
        return lambda: LeanHttpSender(url, model, lean_inputs, spec.output_names)
    module = TRITONCLIENTS[protocol]

    def make() -> Callable[[], None]:
        client = module.InferenceServerClient(url)
        tensors = infer_inputs(module, tensor_specs, inputs)
        outputs = [module.InferRequestedOutput(n) for n in spec.output_names]
        return lambda: client.infer(model, tensors, outputs=outputs)

    return make


def model_statistics(grpc_url: str, model: str) -> dict:
    """Cumulative counts and nanoseconds for `model` (all versions summed) from the statistics API."""
    stats = grpcclient.InferenceServerClient(grpc_url).get_inference_statistics(model, as_json=True)
    total = zero_statistics()
    for entry in stats.get("model_stats", []):
        total["inference_count"] += int(entry.get("inference_count", 0))
        total["execution_count"] += int(entry.get("execution_count", 0))
        infer = entry.get("inference_stats", {})
        total["success_count"] += int(infer.get("success", {}).get("count", 0))
        for s in STAGES:
            total[f"{s}_ns"] += int(infer.get(s, {}).get("ns", 0))
    return total


def zero_statistics() -> dict:
    """What `model_statistics` reads for a model that has answered nothing."""
    return {"inference_count": 0, "execution_count": 0, "success_count": 0, **{f"{s}_ns": 0 for s in STAGES}}


def add_statistics(total: dict, before: dict, after: dict) -> dict:
    """`total` plus what the server did between two snapshots, for measurements made in pieces."""
    return {k: total[k] + after[k] - before[k] for k in total}


def settled_statistics(grpc_url: str, model: str, answered: int, timeout_s: float = 3.0) -> dict:
    """Statistics once the server's success count reaches `answered` (bounded wait): Triton records
    a request just after sending its response, so the last few can lag behind the client."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = model_statistics(grpc_url, model)
        if stats["success_count"] >= answered or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


def server_breakdown(before: dict, after: dict) -> dict:
    """Per-request server-side microseconds between two statistics snapshots, and the mean batch the
    dynamic batcher formed (inferences per model execution)."""
    requests = after["success_count"] - before["success_count"]
    executions = after["execution_count"] - before["execution_count"]
    inferences = after["inference_count"] - before["inference_count"]
    out = {"server_requests": requests, "server_executions": executions,
           "mean_batch": inferences / executions if executions else float("nan")}
    for s in STAGES:
        delta = after[f"{s}_ns"] - before[f"{s}_ns"]
        out[f"server_{s}_us"] = delta / requests / 1e3 if requests else float("nan")
    return out


def run_load(grpc_url: str, url: str, protocol: str, model: str, spec: ModelSpec, *, mode: str = "closed",
             level: float = 1, duration_s: float = 3.0, max_requests: int = 100_000, batch: int = 1,
             warmup_requests: int = 5, text: bool = False) -> dict:
    """One bounded load run on `model` with the server's breakdown and how busy each core of the host
    was (over the run, its warm-up included); a flat dict for the report."""
    make = sender_factory(protocol, url, model, spec, batch, text=text)
    before = model_statistics(grpc_url, model)
    cores_before = core_times()
    if mode == "closed":
        result: LoadResult = closed_loop(make, int(level), duration_s, max_requests, warmup_requests)
    elif mode == "open":
        result = open_loop(make, level, duration_s, max_requests)
    else:
        raise ValueError(f"mode must be 'closed' or 'open', got {mode!r}")
    cores_busy = busy_fractions(cores_before, core_times())
    warmup = warmup_requests * int(level) if mode == "closed" else 0
    after = settled_statistics(grpc_url, model, before["success_count"] + result.ok + warmup)
    return {"model": model, "protocol": protocol, "batch": batch, **result.summary(),
            "infer_per_s": result.throughput_rps * batch, **server_breakdown(before, after), "cores_busy": cores_busy}
