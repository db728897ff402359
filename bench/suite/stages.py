"""Where one request's time goes: a per-stage breakdown of a served model at concurrency 1.

A server is started with Triton's trace API on (every request traced, level TIMESTAMPS), and the model's
ONNX Runtime runner with its stage timings on (the config parameter `stage_timings`, see
model_repository/backends/onnxruntime/model.py), which time its `execute` steps inside the stub. One client
sends the requests one at a time and notes when each was sent and answered. Triton's timestamps, the stub's
and the client's are all CLOCK_MONOTONIC (std::chrono::steady_clock, time.monotonic_ns), so per request
they fall on one time line, from the client's send to its receive:

  client send -> HTTP_RECV_START -> HTTP_RECV_END (or GRPC_WAITREAD_END) -> REQUEST_START -> QUEUE_START
  -> COMPUTE_START -> COMPUTE_INPUT_END -> stub: execute start -> inputs read -> checked -> ORT run -> end
  -> COMPUTE_OUTPUT_START -> INFER_RESPONSE_COMPLETE -> HTTP_SEND_START -> HTTP_SEND_END (or GRPC_SEND_START)
  -> client receive

Each stage is the gap between two neighbours, so per request the stages add up to the client's round trip.
COMPUTE_END and REQUEST_END come after the response left (the backend releases the request then); they are
reported apart, as how long after the send they came. Tracing costs a little itself, so the client's p50
is also given for as many requests sent after the trace count ran out (untraced) on the same server.

    tritonize stages mlp [--protocol http-lean|grpc] [--requests N] [--out DIR]     (cli/stages.py)
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ...artifacts import write_json
from ...model_repository.config import parse_pbtxt, to_pbtxt
from ...model_repository.writer import build_repository
from ...models import get_spec
from ...serving.server import TritonServer
from ..load.served import PROTOCOLS, endpoint, sender_factory
from ..record import Record

CLIENT_SEND, CLIENT_RECV = "CLIENT_SEND", "CLIENT_RECV"
STUB = ("STUB_START", "STUB_INPUTS", "STUB_CHECKS", "STUB_RUN", "STUB_END")  # StepTimings.STEPS, in order
FRONT = {"http": (("HTTP_RECV_START", "HTTP_RECV_END"), ("HTTP_SEND_START", "HTTP_SEND_END")),
         "grpc": (("GRPC_WAITREAD_END",), ("GRPC_SEND_START",))}  # GRPC_WAITREAD_START: idle wait for the client
CORE = ("REQUEST_START", "QUEUE_START", "COMPUTE_START", "COMPUTE_INPUT_END")
BACK = ("COMPUTE_OUTPUT_START", "INFER_RESPONSE_COMPLETE")
AFTER_SEND = ("COMPUTE_END", "REQUEST_END", "GRPC_SEND_END")  # off the client's path, relative to the send
WHAT = {
    (CLIENT_SEND, "HTTP_RECV_START"): "request on the way in: client send, loopback, server's event loop",
    (CLIENT_SEND, "GRPC_WAITREAD_END"): "request on the way in: client send, loopback, gRPC read",
    ("HTTP_RECV_START", "HTTP_RECV_END"): "HTTP receive",
    ("HTTP_RECV_END", "REQUEST_START"): "parse the request, build Triton's request",
    ("GRPC_WAITREAD_END", "REQUEST_START"): "parse the request, build Triton's request",
    ("REQUEST_START", "QUEUE_START"): "to the model's scheduler",
    ("QUEUE_START", "COMPUTE_START"): "queue: the scheduler hands the request to the instance",
    ("COMPUTE_START", "COMPUTE_INPUT_END"): "compute input: backend prepares the request for the stub",
    ("COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START"): "compute infer: round trip to the stub and model.py",
    ("COMPUTE_INPUT_END", "STUB_START"): "hand-off to the stub (IPC, Python request objects)",
    ("STUB_START", "STUB_INPUTS"): "stub: read inputs (get_input_tensor_by_name, as_numpy)",
    ("STUB_INPUTS", "STUB_CHECKS"): "stub: input checks",
    ("STUB_CHECKS", "STUB_RUN"): "stub: ONNX Runtime run",
    ("STUB_RUN", "STUB_END"): "stub: build responses (Tensor, InferenceResponse)",
    ("STUB_END", "COMPUTE_OUTPUT_START"): "stub hands responses back (shared memory, IPC)",
    ("COMPUTE_OUTPUT_START", "INFER_RESPONSE_COMPLETE"): "compute output: backend builds the response",
    ("INFER_RESPONSE_COMPLETE", "HTTP_SEND_START"): "response to the front end",
    ("INFER_RESPONSE_COMPLETE", "GRPC_SEND_START"): "response to the front end",
    ("HTTP_SEND_START", "HTTP_SEND_END"): "HTTP send",
    ("HTTP_SEND_END", CLIENT_RECV): "response on the way out: loopback, client read",
    ("GRPC_SEND_START", CLIENT_RECV): "response on the way out: gRPC send, loopback, client read",
}


def chain(protocol: str, stub: bool) -> tuple[str, ...]:
    """The events of one request on the client's path, in order, for `protocol` (http, http-lean or grpc)."""
    front_in, front_out = FRONT["grpc" if protocol == "grpc" else "http"]
    return (CLIENT_SEND, *front_in, *CORE, *(STUB if stub else ()), *BACK, *front_out, CLIENT_RECV)


@dataclass
class Stage(Record):
    """One stage's microseconds over the requests (median, 90th percentile, mean)."""
    start: str
    end: str
    what: str
    p50_us: float
    p90_us: float
    mean_us: float


@dataclass
class StageBreakdown(Record):
    """A served model's requests at concurrency 1, stage by stage (see the module's docstring)."""
    model: str
    protocol: str
    date: str
    command: str
    server_args: list[str]
    requests: int  # traced requests the stages are over (warm-up excluded)
    stub_timings: bool  # whether the stub's steps are in the stages
    stages: list[Stage]
    client_p50_us: float  # the traced requests' round trip
    client_p90_us: float
    untraced_client_p50_us: float  # as many requests after tracing stopped
    server_p50_us: float  # first to last server event on the client's path
    outside_p50_us: float  # round trip minus that: client, kernel, loopback
    sum_of_p50s_us: float  # the stages' medians added up (medians do not add exactly)
    after_send: list[Stage]  # COMPUTE_END, REQUEST_END (and GRPC_SEND_END) after the response left


def read_trace(paths: list[Path]) -> dict[int, dict[str, int]]:
    """Trace id -> event name -> ns, from Triton's trace files (triton mode: JSON lists of entries that
    each hold part of one trace). Only traces of a model's request (with a model_name) are kept."""
    events: dict[int, dict[str, int]] = {}
    models: set[int] = set()
    for path in paths:
        for entry in json.loads(Path(path).read_text()):
            trace = events.setdefault(entry["id"], {})
            if "model_name" in entry:
                models.add(entry["id"])
            for stamp in entry.get("timestamps", ()):
                trace.setdefault(stamp["name"], int(stamp["ns"]))
    return {i: e for i, e in events.items() if i in models}


def read_stub_timings(path: Path) -> list[dict[str, int]]:
    """The stub's single-request `execute` calls (StepTimings), as event name -> ns."""
    data = json.loads(Path(path).read_text())
    return [dict(zip(STUB, call[1:])) for call in data["calls"] if call[0] == 1 and None not in call]


def _within(times: list[int], lo: int, hi: int) -> int | None:
    i = int(np.searchsorted(times, lo))
    return i if i < len(times) and times[i] <= hi else None


def join_requests(traces: dict[int, dict[str, int]], client: list[tuple[int, int]],
                  stub: list[dict[str, int]] | None, protocol: str) -> list[dict[str, int]]:
    """One event dict per client request whose trace has every event of the chain: the trace whose first
    front-end event falls inside the client's send..receive, and the stub call that started inside the
    trace's COMPUTE_INPUT_END..COMPUTE_OUTPUT_START (with one request at a time, at most one of each)."""
    first = chain(protocol, False)[1]
    by_start = sorted((t[first], t) for t in traces.values() if first in t)
    starts = [s for s, _ in by_start]
    calls = sorted(stub or (), key=lambda c: c["STUB_START"])
    call_starts = [c["STUB_START"] for c in calls]
    joined = []
    for sent, received in client:
        i = _within(starts, sent, received)
        if i is None:
            continue
        events = {**by_start[i][1], CLIENT_SEND: sent, CLIENT_RECV: received}
        if stub is not None:
            j = _within(call_starts, events.get("COMPUTE_INPUT_END", 0), events.get("COMPUTE_OUTPUT_START", -1))
            if j is None:
                continue
            events.update(calls[j])
        if all(e in events for e in chain(protocol, stub is not None)):
            joined.append(events)
    return joined


def _stage(start: str, end: str, values_ns) -> Stage:
    us = np.asarray(values_ns, dtype=np.float64) / 1e3
    return Stage(start=start, end=end, what=WHAT.get((start, end), f"{start} -> {end}"),
                 p50_us=float(np.median(us)), p90_us=float(np.percentile(us, 90)), mean_us=float(us.mean()))


def stages(requests: list[dict[str, int]], protocol: str, stub: bool) -> list[Stage]:
    """Each neighbouring pair of the chain's events, over the requests. Per request they add up to its round trip."""
    events = chain(protocol, stub)
    return [_stage(a, b, [r[b] - r[a] for r in requests]) for a, b in zip(events, events[1:])]


def breakdown(requests: list[dict[str, int]], protocol: str, stub: bool, untraced_ns: list[int],
              **about) -> StageBreakdown:
    if not requests:
        raise ValueError("no request has a complete trace: nothing to break down")
    events = chain(protocol, stub)
    total = np.array([r[CLIENT_RECV] - r[CLIENT_SEND] for r in requests], dtype=np.float64) / 1e3
    server = np.array([r[events[-2]] - r[events[1]] for r in requests], dtype=np.float64) / 1e3
    parts = stages(requests, protocol, stub)
    send = events[-2]
    after = [_stage(send, e, [r[e] - r[send] for r in requests]) for e in AFTER_SEND
             if all(e in r for r in requests)]
    return StageBreakdown(
        protocol=protocol, requests=len(requests), stub_timings=stub, stages=parts,
        client_p50_us=float(np.median(total)), client_p90_us=float(np.percentile(total, 90)),
        untraced_client_p50_us=float(np.median(untraced_ns)) / 1e3 if untraced_ns else float("nan"),
        server_p50_us=float(np.median(server)), outside_p50_us=float(np.median(total - server)),
        sum_of_p50s_us=float(sum(s.p50_us for s in parts)), after_send=after, **about)


def trace_args(path: Path, count: int) -> list[str]:
    """tritonserver 2.51's flags for tracing every request, up to `count`, into `path` (written at exit)."""
    return [f"--trace-config=triton,file={path}", "--trace-config=level=TIMESTAMPS", "--trace-config=rate=1",
            f"--trace-config=count={count}", "--trace-config=mode=triton"]


def build_traced_repository(model: str, artifacts: Path, repo: Path, timings: Path | None,
                            dynamic_batching: bool = True, edit: Callable | None = None) -> None:
    """A one-model repository; with `timings`, its runner writes its stage timings there. `edit(config)`
    may change the model's config (a ModelConfig) before it is written."""
    build_repository([dataclasses.replace(get_spec(model), text=None)], artifacts, repo, "cpu")
    config_path = repo / model / "config.pbtxt"
    config = parse_pbtxt(config_path.read_text())
    if timings is not None:
        config.parameters["stage_timings"].string_value = str(timings)
    if not dynamic_batching:
        config.ClearField("dynamic_batching")
    if edit is not None:
        edit(config)
    config_path.write_text(to_pbtxt(config))


def measure(model: str, protocol: str, requests: int, artifacts: Path, work: Path, warmup: int = 50,
            stub_timings: bool = True, dynamic_batching: bool = True, server_args: list[str] | None = None,
            command: str = "", edit: Callable | None = None) -> StageBreakdown:
    """Serve `model` alone, send warmup + requests traced and then `requests` untraced, one at a time."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    trace, timings = work / "trace.json", (work / "stub-timings.json") if stub_timings else None
    build_traced_repository(model, artifacts, work / "repo", timings, dynamic_batching, edit)
    traced, untraced, client = warmup + requests, [], []
    extra = [*trace_args(trace, traced), *(server_args or [])]
    with TritonServer(work / "repo", [model], extra_args=extra) as server:
        send = sender_factory(protocol, endpoint(server, protocol), model, get_spec(model))()
        try:
            for i in range(traced + requests):
                sent = time.monotonic_ns()
                send()
                received = time.monotonic_ns()
                if warmup <= i < traced:
                    client.append((sent, received))
                elif i >= traced:
                    untraced.append(received - sent)
        except Exception as e:
            code = server.process.poll() if server.process else None
            raise RuntimeError(f"request {i} failed ({e!r}); server exit code {code}; its log ends:\n"
                               f"{server.log()[-2000:]}") from e
    # Written as the server stops: the trace at exit, the stub's timings when the model is unloaded.
    traces = read_trace(sorted(work.glob(trace.name + "*")))
    stub = read_stub_timings(timings) if timings is not None else None
    joined = join_requests(traces, client, stub, protocol)
    return breakdown(joined, protocol, stub is not None, untraced, model=model, command=command,
                     date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), server_args=extra)


def markdown(result: StageBreakdown) -> str:
    lines = [f"### {result.model} over {result.protocol}, concurrency 1, {result.requests} traced requests",
             "", f"`{result.command}` ({result.date})", "",
             "| stage | from | to | p50 us | p90 us |", "|---|---|---|---:|---:|"]
    lines += [f"| {s.what} | {s.start} | {s.end} | {s.p50_us:.1f} | {s.p90_us:.1f} |" for s in result.stages]
    lines += [f"| **sum of the medians** | | | {result.sum_of_p50s_us:.1f} | |",
              f"| **client round trip, traced** | | | {result.client_p50_us:.1f} | {result.client_p90_us:.1f} |",
              f"| client round trip, untraced | | | {result.untraced_client_p50_us:.1f} | |",
              f"| server (first to last event on the path) | | | {result.server_p50_us:.1f} | |",
              f"| outside the server (client, kernel, loopback) | | | {result.outside_p50_us:.1f} | |", ""]
    if result.after_send:
        lines += ["After the response left (off the client's path; the instance is busy until COMPUTE_END):", ""]
        lines += [f"- {s.end}: {s.p50_us:.1f} us after {s.start} (p50)" for s in result.after_send]
    return "\n".join(lines) + "\n"


def write_outputs(result: StageBreakdown, out: Path) -> list[Path]:
    """`stages-<model>-<protocol>.json` and `.md` in `out`, each written whole (temporary name, then rename)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"stages-{result.model}-{result.protocol}"
    write_json(stem.with_suffix(".json"), result.to_json())
    md, tmp = stem.with_suffix(".md"), out / f".{stem.name}.md.tmp"
    tmp.write_text(markdown(result))
    os.replace(tmp, md)
    return [stem.with_suffix(".json"), md]
