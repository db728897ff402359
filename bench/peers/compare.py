"""`tritonize peers`: tritonize beside Mosec and LitServe, on demand (not in CI), in one run.

Every server serves the same ONNX file (the fp32 graph tritonize's repository holds) through ONNX
Runtime on the CPU provider with one intra-op and one inter-op thread and no spin-waiting, one model
instance or worker each. One load generator measures them all (bench/load/loadgen.py's closed loop, over
kept-alive sockets with each request encoded once, bench/load/lean_http.py): tritonize over KServe v2 with
Triton's binary tensor extension, the peers as one raw float32 row per POST. Before any timing, each
server's answers to the same rows must equal in-process ONNX Runtime on that file.

The servers take turns, one at a time on the machine: round r starts each server, checks it, runs it
at every level and stops it, and the next round starts with the next server, so no server always
follows the same neighbour. The report gives each server's median over the rounds and tritonize's
ratios to each peer; tritonize's rows carry the mean batch Triton's dynamic batcher formed.
"""
from __future__ import annotations

import datetime as dt
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ...artifacts import DEFAULT_RESULTS, DEFAULT_ROOT, ONNX_FILE, sha256
from ...model_artifacts import ModelArtifacts
from .. import rounds as alternating
from ..load import wrk
from ..load.lean_http import LeanHttpSender, RawHttpSender
from ..load.loadgen import closed_loop
from ..load.served import LEAN_HTTP, model_statistics, sender_factory, server_breakdown, settled_statistics
from ..report.provenance import machine_info
from .envs import SHARED_PINS, PeerEnv, PeerError, PeerProcess, default_envs_root, ensure_env
from .report import ATOL, RTOL, TRITONIZE, AnswerCheck, PeerResults, PeerRow, ratios, summarize, write_results

MAX_REQUESTS = 10_000_000  # the duration bounds a run; this only guards against a runaway


@dataclass(frozen=True)
class ServerKind:
    """One server of the comparison: tritonize, or a peer app (bench/peer_apps/) with its options."""
    name: str
    description: str
    package: str | None = None  # the peer's PyPI package; None for tritonize
    app: str = ""
    app_args: tuple[str, ...] = ()
    listen_args: tuple[str, ...] = ()  # "{port}" is replaced by the port picked
    path: str = ""


SERVERS = {s.name: s for s in (
    ServerKind(TRITONIZE, "`tritonize serve` defaults: Triton's dynamic batcher (max batch 64, no queue delay)"),
    ServerKind("mosec-batched", "Mosec, dynamic batching up to 64 rows, 1 ms wait", "mosec", "mosec_app.py",
               ("--max-batch-size", "64", "--max-wait-ms", "1"), ("--address", "127.0.0.1", "--port", "{port}"),
               "/inference"),
    ServerKind("mosec-unbatched", "Mosec, batching off (batch size 1)", "mosec", "mosec_app.py",
               ("--max-batch-size", "1"), ("--address", "127.0.0.1", "--port", "{port}"), "/inference"),
    ServerKind("litserve", "LitServe defaults (no batching)", "litserve", "litserve_app.py", (),
               ("--port", "{port}"), "/predict"),
    ServerKind("litserve-batched", "LitServe, batching up to 64 rows, 1 ms timeout", "litserve", "litserve_app.py",
               ("--max-batch-size", "64", "--batch-timeout-ms", "1"), ("--port", "{port}"), "/predict"),
)}


@dataclass
class PeersOptions:
    models: tuple[str, ...] = ("mlp", "cnn")
    levels: tuple[int, ...] = (1, 8, 32)
    rounds: int = 3
    duration_s: float = 5.0
    servers: tuple[str, ...] = tuple(SERVERS)
    envs: Path = field(default_factory=default_envs_root)
    out: Path = DEFAULT_RESULTS / "peers"
    artifacts: Path = DEFAULT_ROOT
    warmup_requests: int = 5  # per worker, before each timed window
    check_rows: int = 8
    load_generator: str = "auto"  # LOAD_GENERATORS; auto: wrk where installed, else the Python senders
    # The peers' ONNX Runtime threads, at every batch size. 1 as issue #26 fixed them; tritonize's own
    # runner adds more threads for large batches where optimize measured that they pay (export/threads.py),
    # and this lets a reader check what more threads would give the peers.
    peer_threads: int = 1

    def resolved_load_generator(self) -> str:
        if self.load_generator == "auto":
            return WRK if wrk.find_binary() else PYTHON_SENDERS
        return self.load_generator


# wrk (bench/load/wrk.py) costs the machine a few microseconds a request where the Python senders cost tens:
# at 32 clients on a small machine, the Python senders take CPU that the server under test needs, and a
# CPU-bound server (Triton under a full batcher) loses more of it than one that waits on a timer.
WRK, PYTHON_SENDERS = "wrk", "python"
LOAD_GENERATORS = ("auto", WRK, PYTHON_SENDERS)


def check_options(opts: PeersOptions) -> None:
    """Every mistake named with what was expected, before anything is built or started."""
    if not opts.models or len(set(opts.models)) != len(opts.models):
        raise ValueError(f"expected one or more distinct models, got {list(opts.models)}")
    if not opts.levels or any(not isinstance(c, int) or c < 1 for c in opts.levels):
        raise ValueError(f"expected concurrency levels >= 1, got {list(opts.levels)}")
    if opts.rounds < 1:
        raise ValueError(f"expected rounds >= 1, got {opts.rounds}")
    if not opts.duration_s > 0:
        raise ValueError(f"expected a duration > 0 seconds, got {opts.duration_s}")
    if not isinstance(opts.peer_threads, int) or opts.peer_threads < 1:
        raise ValueError(f"expected peer threads >= 1, got {opts.peer_threads!r}")
    if opts.load_generator not in LOAD_GENERATORS:
        raise ValueError(f"expected a load generator among {list(LOAD_GENERATORS)}, got {opts.load_generator!r}")
    if opts.load_generator == WRK:
        wrk.require_binary()
    unknown = [s for s in opts.servers if s not in SERVERS]
    if unknown or TRITONIZE not in opts.servers or len(opts.servers) < 2:
        raise ValueError(f"expected tritonize and one or more peers among {list(SERVERS)}, got {list(opts.servers)}")


@dataclass
class ServedModel:
    """A model as every server gets it: its spec, the ONNX file and the in-process reference session."""
    spec: object
    onnx: Path
    reference: Callable[[np.ndarray], np.ndarray]  # one row in, its output row out
    threads: str  # how tritonize's runner runs it: its spec's threads, and large batches as the index says

    @property
    def input(self):
        return self.spec.inputs[0]


def servable_specs(names: tuple[str, ...]) -> list:
    """The models' specs, each checked to be what the peer apps serve (before any venv is built)."""
    from ...models import get_spec

    specs = [get_spec(n) for n in names]
    for spec in specs:
        row_dims = [d for t in spec.inputs for d in t.shape[1:]]
        if spec.runtime != "onnx" or len(spec.inputs) != 1 or spec.inputs[0].wire_dtype != "FP32" \
                or len(spec.output_names) != 1 or not all(isinstance(d, int) for d in row_dims):
            raise ValueError(f"the peers serve ONNX models with one FP32 input of fixed shape after the batch and "
                             f"one output; {spec.name!r} has inputs "
                             f"{[(t.name, t.wire_dtype, list(t.shape)) for t in spec.inputs]} and outputs "
                             f"{spec.output_names}")
    return specs


def prepare_models(specs: list, loaded: dict[str, ModelArtifacts], repo: Path,
                   progress: Callable[[str], None]) -> dict[str, ServedModel]:
    """tritonize's repository of the models (their fp32 graphs, from the artifacts `loaded`) and the ONNX
    file every server serves: the repository's copy, the very bytes Triton loads."""
    from ...export.runtime import ort_session
    from ...model_repository.writer import build_repository

    fp32 = {spec.name: "fp32" for spec in specs}  # optimize may have picked another variant; the peers get fp32
    progress(f"repository of {', '.join(s.name for s in specs)} at {repo}")
    index = build_repository(specs, loaded, repo, "cpu", variants=fp32)
    models = {}
    for spec in specs:
        onnx = repo / spec.name / "1" / ONNX_FILE
        session = ort_session(onnx, threads=1, spin=False)
        out = spec.output_names[0]

        def reference(row: np.ndarray, session=session, spec=spec, out=out) -> np.ndarray:
            return session.run([out], {spec.inputs[0].name: row[None]})[0][0]

        large = index["models"][spec.name].get("large_batches")
        base = spec.serving.ort_threads
        threads = f"{base} ONNX Runtime thread{'s' if base > 1 else ''}" + (f"; {large}" if large else "")
        models[spec.name] = ServedModel(spec, onnx, reference, threads)
    return models


@dataclass
class Turn:
    """One server up, serving one model: how to load it, how to ask it one row, and (tritonize only)
    Triton's cumulative statistics."""
    make_sender: Callable[[], Callable[[], None]]
    answer: Callable[[np.ndarray], np.ndarray]
    wrk_request: wrk.WrkRequest  # the same request, for wrk
    statistics: Callable[[], object] | None = None
    settled: Callable[[int], object] | None = None


@contextmanager
def serving(kind: ServerKind, model: ServedModel, repo: Path, envs: dict[str, PeerEnv], logs: Path,
            rng: np.random.Generator, peer_threads: int = 1) -> Iterator[Turn]:
    name, spec = model.spec.name, model.spec
    if kind.package is None:
        from ...serving.server import TritonServer

        with TritonServer(repo, [name]) as server:
            def answer(row: np.ndarray) -> np.ndarray:
                sender = LeanHttpSender(server.http_url, name, [(model.input.name, row[None], "FP32")],
                                        spec.output_names)
                try:
                    return sender.infer()[spec.output_names[0]][0]
                finally:
                    sender.close()

            make = sender_factory(LEAN_HTTP, server.http_url, name, spec, rng=rng)
            probe = make()
            probe.close()
            yield Turn(make, answer, wrk.from_raw_http(server.http_url, probe.request),
                       lambda: model_statistics(server.grpc_url, name, server.admin_key),
                       lambda answered: settled_statistics(server.grpc_url, name, answered,
                                                           admin_key=server.admin_key))
        return
    from ...serving.server import free_port

    in_row = spec.example_inputs(1, rng=rng)[model.input.name][0]
    out_row = model.reference(in_row)
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def post(row: np.ndarray) -> bytes:
        sender = RawHttpSender(url, kind.path, np.ascontiguousarray(row, "<f4").tobytes(), timeout_s=30)
        try:
            return sender.post()
        finally:
            sender.close()

    def answer(row: np.ndarray) -> np.ndarray:
        body = post(row)
        if len(body) != out_row.nbytes:
            raise PeerError(f"{kind.name}: expected a {out_row.nbytes}-byte answer (float32 {list(out_row.shape)}), "
                            f"got {len(body)} bytes: {body[:100]!r}")
        return np.frombuffer(body, "<f4").reshape(out_row.shape)

    load_body = np.ascontiguousarray(in_row, "<f4").tobytes()  # encoded once, like tritonize's request
    args = [str(model.onnx), *kind.app_args, "--threads", str(peer_threads),
            *(a.format(port=port) for a in kind.listen_args)]
    with PeerProcess(envs[kind.package], kind.app, args, logs / f"{kind.name}-{name}.log", lambda: answer(in_row)):
        make = lambda: RawHttpSender(url, kind.path, load_body, response_size=out_row.nbytes)  # noqa: E731
        probe = make()
        probe.close()
        yield Turn(make, answer, wrk.from_raw_http(url, probe.request))


def check_answers(turn: Turn, model: ServedModel, server: str, round_no: int, rows: np.ndarray) -> AnswerCheck:
    diffs = []
    for row in rows:
        expected, got = model.reference(row), turn.answer(row)
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
            diff = float(np.abs(got - expected).max()) if got.shape == expected.shape else float("inf")
            raise PeerError(f"{server} answered {model.spec.name} differently from in-process ONNX Runtime on "
                            f"{model.onnx}: expected {expected.shape} within rtol {RTOL:g} / atol {ATOL:g}, got "
                            f"{got.shape} with max |diff| {diff:.3g}")
        diffs.append(float(np.abs(got - expected).max()))
    return AnswerCheck(model=model.spec.name, server=server, round=round_no, rows=len(rows),
                       max_abs_diff=max(diffs), ok=True)


def measure(turn: Turn, opts: PeersOptions, model: str, server: str, round_no: int, level: int) -> PeerRow:
    before = turn.statistics() if turn.statistics else None
    if opts.resolved_load_generator() == WRK:
        # warmed up by the Python senders (a few requests per connection), then timed by wrk alone
        warm = closed_loop(turn.make_sender, level, 0.2, opts.warmup_requests * level, 0)
        summary = wrk.closed_loop(turn.wrk_request, level, opts.duration_s)
        answered = summary.sent + warm.ok
    else:
        result = closed_loop(turn.make_sender, level, opts.duration_s, MAX_REQUESTS, opts.warmup_requests)
        summary, answered = result.summary(), result.ok + opts.warmup_requests * level
    mean_batch = None
    if before is not None:
        mean_batch = server_breakdown(before, turn.settled(before.success_count + answered)).mean_batch
    return PeerRow(**vars(summary), model=model, server=server, round=round_no, mean_batch=mean_batch)


def run_peers(opts: PeersOptions, progress: Callable[[str], None] = print,
              current: Callable[[list], dict[str, ModelArtifacts]] | None = None) -> PeerResults:
    """The whole comparison; writes peers.json and peers.md into `opts.out` and returns the results.

    `current(specs)` makes the models' artifacts current and returns them by name (the CLI passes
    tritonize.pipeline's, which exports and optimizes what is missing, as `tritonize run` does); without
    it the artifacts under `opts.artifacts` are read as they are."""
    check_options(opts)
    specs = servable_specs(opts.models)
    if current is None:
        current = lambda specs: {s.name: ModelArtifacts.load(opts.artifacts, s) for s in specs}  # noqa: E731
    loaded = current(specs)
    packages = sorted({SERVERS[s].package for s in opts.servers if SERVERS[s].package})
    envs = {p: ensure_env(p, opts.envs, progress) for p in packages}
    versions = {p: envs[p].version() for p in packages}
    versions.update({name: metadata.version(name) for name in SHARED_PINS})  # the peers' pins too
    rng = np.random.default_rng()
    with tempfile.TemporaryDirectory(prefix="tritonize-peers-") as tmp:
        work = Path(tmp)
        models = prepare_models(specs, loaded, work / "repository", progress)
        results = PeerResults(started=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                              machine=machine_info(), models=list(opts.models), levels=list(opts.levels),
                              rounds=opts.rounds, duration_s=opts.duration_s,
                              servers={s: SERVERS[s].description for s in opts.servers}, versions=versions,
                              threads={TRITONIZE: "; ".join(f"{n}: {m.threads}" for n, m in models.items()),
                                       "peers": f"{opts.peer_threads} ONNX Runtime thread(s) at every batch size"},
                              onnx_sha256={n: sha256(m.onnx) for n, m in models.items()},
                              load_generator=opts.resolved_load_generator())
        for round_no, order in alternating.rounds(opts.servers, count=opts.rounds, order=alternating.ROTATED):
            for name, model in models.items():
                rows = np.stack([model.spec.example_inputs(1, rng=rng)[model.input.name][0]
                                 for _ in range(opts.check_rows)])
                for server in order:
                    progress(f"round {round_no}/{opts.rounds}: {name} on {server}: starting")
                    with serving(SERVERS[server], model, work / "repository", envs, work, rng,
                                 opts.peer_threads) as turn:
                        results.checks.append(check_answers(turn, model, server, round_no, rows))
                        for level in opts.levels:
                            row = measure(turn, opts, name, server, round_no, level)
                            results.rows.append(row)
                            progress(f"round {round_no}/{opts.rounds}: {name} on {server}, concurrency {level}: "
                                     f"{row.throughput_rps:.0f} req/s, p50 {row.p50_ms:.3f} ms"
                                     + (f", errors {row.errors}: {row.first_errors[0]}" if row.errors else ""))
    results.summary = summarize(results.rows)
    results.ratios = ratios(results.summary)
    write_results(results, opts.out)
    return results
