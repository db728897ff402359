"""A rolling update (`tritonize rollout`): publish a model's new version, then switch the replicas one by one.

1. `publish` uploads the local repository to the store; changed content becomes the next version there (V+1).
2. On each replica in turn: Triton's model-repository load API (admin key). With explicit model control and
   the default version policy `latest 1`, tritonserver 2.51 loads V+1 next to V, then unloads V; requests in
   flight on V complete, new ones go to V+1, and no request fails (measured: tests/deploy/test_rollout.py).
   Then V+1 must be ready there within `ready_timeout_s`, and answer `rows` rows, sent to that replica for
   version V+1 explicitly, as ONNX Runtime does in-process on the published file (the spec's FP32 tolerance,
   or np.allclose(atol=1e-4) for a model tritonize does not know).
3. On the first failure, every replica already switched and the failing one load the model again pinned to
   the version it served before, through the load API's config override: the config the replica reported
   before the switch with `version_policy: {specific: {versions: [V]}}`. 2.51 takes the JSON form
   `get_model_config(as_json=True)` gives, which `TritonAdmin.load` sends. A failed load leaves the old
   version serving in 2.51; the pin is loaded all the same, so that a later poll or reload cannot pick
   the broken V+1 up.

The pin stays in force for later loads of unchanged files (2.51 keeps an override while the repository has
not changed); the next rollout adds files, so its load reads the repository's config again.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from ..artifacts import ONNX_FILE
from ..serving.admin import AdminCallError, TritonAdmin, check_admin_key

if TYPE_CHECKING:
    from tritonclient.grpc.model_config_pb2 import ModelConfig

DEFAULT_ROWS = 8
READY_TIMEOUT_S = 120.0
FALLBACK_ATOL = 1e-4  # a model tritonize has no spec for: plain np.allclose at this absolute tolerance
_ONNX_TYPES = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
               "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool"}

Reference = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


class RolloutError(ValueError):
    """A rollout that could not start (bad arguments, no such model) or that failed and was rolled back:
    one line naming the replica and the step. A ValueError, so the CLI exits 2."""


@dataclass(frozen=True)
class ReplicaResult:
    replica: str  # its gRPC host:port
    before: tuple[int, ...]  # versions ready before the rollout touched it
    after: tuple[int, ...]  # versions ready when the rollout was done with it (after a rollback, if any)
    check: str  # "ok (...)", what failed, "rolled back", or "not reached"
    seconds: float
    ok: bool


@dataclass(frozen=True)
class RolloutResult:
    model: str
    version: int  # the version rolled out (V+1 in the store)
    replicas: tuple[ReplicaResult, ...]
    failure: str | None  # the first failure, naming the replica and the step; None when every replica switched

    @property
    def ok(self) -> bool:
        return self.failure is None


def parse_endpoints(given: str | Sequence[str]) -> list[str]:
    """gRPC host:port of each replica: an endpoints file (`PATH.json` or `file:PATH`, what `serve --replicas`
    writes) or host:port URLs, comma-separated in one string or as a list."""
    from ..client.discovery import parse_endpoints as parse_file
    from ..client.endpoints import normalize_url

    expected = "expected an endpoints file (PATH.json or file:PATH) or host:port[,host:port...]"
    if isinstance(given, str):
        text = given.strip()
        if text.startswith("file:") or text.endswith(".json"):
            path = Path(text.removeprefix("file:"))
            try:
                return parse_file(path.read_text(encoding="utf-8"), path)
            except OSError as e:
                raise RolloutError(f"endpoints file {path}: {expected}, got one that cannot be read "
                                   f"({e.strerror})") from None
        given = [u for u in text.split(",") if u.strip()]
    urls = []
    for url in given:
        url = normalize_url(url, f"--endpoints: {expected}")
        if url not in urls:
            urls.append(url)
    if not urls:
        raise RolloutError(f"--endpoints: {expected}, got none")
    return urls


def local_version(model: str, repository: Path) -> Path:
    """The folder of `model`'s highest local version: what the store serves as its latest once published."""
    folder = Path(repository) / model
    numbers = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()] if folder.is_dir() else []
    if not numbers:
        raise RolloutError(f"model {model!r}: expected a folder {folder} with numbered versions, got "
                           f"{'none' if not folder.is_dir() else 'no version folder'}")
    return folder / str(max(numbers))


def publish_model(model: str, repository: Path, store_url: str, version_dir: Path,
                  endpoint_url: str | None = None) -> int:
    """Publish `repository` (every model in it; only `model` is rolled out); the store's version number of
    `version_dir`, the local version rolled out."""
    from ..model_repository.publish import publish

    result = publish(Path(repository), store_url, endpoint_url=endpoint_url)
    for row in result.rows:
        if row.model == model and row.local_version == version_dir.name and row.version != "config":
            return int(row.version)
    raise RolloutError(f"model {model!r}: expected version {version_dir.name} of it among those published, got "
                       f"{sorted({r.model for r in result.rows})}")


def _onnx_session(path: Path):
    """ONNX Runtime's session on `path`; a file it cannot load (ORT's errors derive from Exception alone)
    is a RolloutError naming the file and ORT's reason, before anything reaches the store."""
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - InvalidProtobuf, Fail, InvalidGraph, ...: all a file ORT cannot run
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RolloutError(f"parity check: expected an ONNX model that ONNX Runtime can load at {path}, got one "
                           f"it refuses ({reason}); nothing was published") from None


def onnx_reference(version_dir: Path) -> Reference:
    """ONNX Runtime in-process on the version's model file: what the replica must answer."""
    path = version_dir / ONNX_FILE
    if not path.is_file():
        raise RolloutError(f"parity check: expected an ONNX model at {path}, got no such file")
    session = _onnx_session(path)
    names = [o.name for o in session.get_outputs()]
    return lambda inputs: dict(zip(names, session.run(names, dict(inputs))))


def check_rows(model: str, version_dir: Path, rows: int, seed: int = 25) -> dict[str, np.ndarray]:
    """`rows` random valid inputs: from the spec when tritonize knows the model, else from the ONNX file's
    inputs (floats normal, integers 0; the first dynamic dimension is the batch, others 1)."""
    from ..models import UnknownModelError, get_spec

    rng = np.random.default_rng(seed)
    try:
        return get_spec(model).example_inputs(rows, None, rng)
    except UnknownModelError:
        pass
    session = _onnx_session(version_dir / ONNX_FILE)
    out = {}
    for tensor in session.get_inputs():
        if tensor.type not in _ONNX_TYPES:
            raise RolloutError(f"parity check: input {tensor.name!r}: expected one of {sorted(_ONNX_TYPES)}, "
                               f"got {tensor.type}")
        dtype = np.dtype(_ONNX_TYPES[tensor.type])
        shape = [d if isinstance(d, int) else (rows if i == 0 else 1) for i, d in enumerate(tensor.shape)]
        out[tensor.name] = rng.standard_normal(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
    return out


def tolerance(model: str) -> tuple[float, float]:
    """(atol, rtol): the spec's FP32 tolerance, or FALLBACK_ATOL for a model tritonize does not know."""
    from ..models import UnknownModelError, get_spec

    try:
        t = get_spec(model).tolerance("fp32")
    except UnknownModelError:
        return FALLBACK_ATOL, 0.0
    return t.atol, t.rtol


class _Replica:
    """One replica of `model`: its admin calls through `TritonAdmin` (gRPC, the admin key), readiness, and
    the check's rows sent to one version through tritonize.client's request building."""

    def __init__(self, url: str, admin_key: str, model: str):
        import tritonclient.grpc as grpcclient

        self.url, self.model = url, model
        self.admin = TritonAdmin(url, admin_key)
        # Readiness and inference are not admin calls: a client of their own, which never carries the key.
        self._client = grpcclient.InferenceServerClient(url)

    def ready_versions(self) -> tuple[int, ...]:
        return self.admin.ready_versions(self.model)

    def config(self) -> ModelConfig:
        return self.admin.config(self.model)

    def load(self, timeout_s: float, config: ModelConfig | None = None) -> None:
        self.admin.load(self.model, config, timeout_s=timeout_s)

    def unload(self) -> None:
        self.admin.unload(self.model)

    def wait_ready(self, version: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._client.is_model_ready(self.model, str(version)):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def infer(self, version: int, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        """`outputs` of `version` for `inputs`, checked against that version's metadata and config as
        `TritonClient` checks a request (and split to its max batch size) before anything is sent.
        TritonClient itself cannot name a version, so its request building is used on this client."""
        import tritonclient.grpc as grpcclient

        from ..client.model_info import ModelInfo
        from ..client.request import build_inputs, build_outputs, concat_outputs, prepare, read_outputs

        v = str(version)
        info = ModelInfo.from_server(self._client.get_model_metadata(self.model, v),
                                     self._client.get_model_config(self.model, v).config)
        request = prepare(info, dict(inputs), outputs)
        return concat_outputs([read_outputs(self._client.infer(self.model, build_inputs(grpcclient, chunk),
                                                               model_version=v,
                                                               outputs=build_outputs(grpcclient, chunk)), chunk)
                               for chunk in request.split(info.max_batch_size)])

    def close(self) -> None:
        self.admin.close()
        self._client.close()


def parity(replica: _Replica, version: int, inputs: Mapping[str, np.ndarray], reference: Reference,
           atol: float, rtol: float) -> str | None:
    """None when the replica's answers for `version` match `reference`, else what differs (one line)."""
    want = reference(inputs)
    got = replica.infer(version, inputs, list(want))
    for name, expected in want.items():
        answer = got[name]
        if answer is None or answer.shape != expected.shape:
            shape = None if answer is None else answer.shape
            return f"output {name!r}: expected shape {expected.shape}, got {shape}"
        if not np.allclose(answer, expected, atol=atol, rtol=rtol):
            worst = float(np.max(np.abs(answer.astype(np.float64) - expected)))
            return f"output {name!r}: expected ONNX Runtime's answer within atol={atol:g} rtol={rtol:g}, " \
                   f"got max |diff| {worst:.3g}"
    return None


def roll(model: str, version: int, endpoints: Sequence[str], admin_key: str, reference: Reference,
         inputs: Mapping[str, np.ndarray], *, atol: float, rtol: float, ready_timeout_s: float = READY_TIMEOUT_S,
         report: Callable[[str], None] | None = None) -> RolloutResult:
    """Switch each replica to `version` in turn (load, ready, parity), rolling back on the first failure."""
    report = report or (lambda line: None)
    replicas = [_Replica(url, admin_key, model) for url in endpoints]
    # The replicas switched: (replica, versions before, config before, seconds).
    done: list[tuple[_Replica, tuple[int, ...], ModelConfig, float]] = []
    results: dict[str, ReplicaResult] = {}
    failure = None
    try:
        for replica in replicas:
            started = time.monotonic()
            before, config = replica.ready_versions(), None
            try:
                config = replica.config()  # before the switch: the rollback reloads what it serves now
                report(f"{replica.url}: loading {model} version {version}")
                replica.load(ready_timeout_s)
                if not replica.wait_ready(version, ready_timeout_s):
                    raise RolloutError(f"version {version} not ready within {ready_timeout_s:g} s "
                                       f"(ready: {list(replica.ready_versions()) or 'none'})")
                report(f"{replica.url}: checking {len(next(iter(inputs.values())))} rows on version {version}")
                mismatch = parity(replica, version, inputs, reference, atol, rtol)
                if mismatch is not None:
                    raise RolloutError(f"parity check failed: {mismatch}")
            except Exception as e:  # noqa: BLE001 - every failure of a replica's step means roll back
                # An admin call's error names the call and the replica, which the line below names already.
                text = e.detail if isinstance(e, AdminCallError) else str(e)
                why = text.splitlines()[0] if text else type(e).__name__
                step = "" if isinstance(e, RolloutError) else "load failed: " if config is not None else \
                    "config not readable: "
                failure = f"replica {replica.url}: {model} version {version}: {step}{why}"
                report(f"[red]{failure}; rolling back")
                after = _roll_back(replica, before, config, ready_timeout_s)
                results[replica.url] = ReplicaResult(replica.url, before, after, f"{step}{why}",
                                                     time.monotonic() - started, False)
                break
            done.append((replica, before, config, time.monotonic() - started))
            results[replica.url] = ReplicaResult(replica.url, before, replica.ready_versions(),
                                                 f"ok ({len(next(iter(inputs.values())))} rows)",
                                                 time.monotonic() - started, True)
        if failure is not None:
            for replica, before, config, seconds in done:
                report(f"{replica.url}: rolling back to version {list(before)}")
                after = _roll_back(replica, before, config, ready_timeout_s)
                results[replica.url] = ReplicaResult(replica.url, before, after, "rolled back", seconds, False)
        for replica in replicas:
            if replica.url not in results:
                results[replica.url] = ReplicaResult(replica.url, replica.ready_versions(),
                                                     replica.ready_versions(), "not reached", 0.0, False)
    finally:
        for replica in replicas:
            replica.close()
    return RolloutResult(model, version, tuple(results[url] for url in endpoints), failure)


def _roll_back(replica: _Replica, before: tuple[int, ...], config: ModelConfig | None,
               timeout_s: float) -> tuple[int, ...]:
    """Load the model pinned to the versions it served before (unload it if it served none); what is
    ready afterwards. A rollback that fails is part of the answer (shown in `after`), not a new error."""
    try:
        if not before:
            replica.unload()
        elif config is not None:
            pinned = type(config)()
            pinned.CopyFrom(config)
            pinned.version_policy.specific.versions[:] = before  # `specific` replaces the policy's oneof
            replica.load(timeout_s, pinned)
        return replica.ready_versions()
    except Exception:  # noqa: BLE001 - the replica may be gone; `after` then says nothing is known
        return ()


def rollout(model: str, repository: str | os.PathLike, store_url: str, endpoints: str | Sequence[str],
            admin_key: str, rows: int = DEFAULT_ROWS, *, endpoint_url: str | None = None,
            ready_timeout_s: float = READY_TIMEOUT_S, reference: Reference | None = None,
            report: Callable[[str], None] | None = None) -> RolloutResult:
    """Publish `model` from `repository` to `store_url`, then switch every replica of `endpoints` to the new
    version one by one (see the module's docstring). A failed rollout is rolled back and returned with its
    `failure`; `reference` (inputs -> outputs) replaces ONNX Runtime on the local file, for tests."""
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise RolloutError(f"rows: expected a number of rows >= 1, got {rows!r}")
    if not ready_timeout_s > 0:
        raise RolloutError(f"ready_timeout_s: expected seconds > 0, got {ready_timeout_s!r}")
    admin_key = check_admin_key(admin_key)
    urls = parse_endpoints(endpoints)
    report = report or (lambda line: None)
    # The local side first: a model file ONNX Runtime cannot run is refused before it reaches the store.
    version_dir = local_version(model, Path(repository))
    reference = reference or onnx_reference(version_dir)
    atol, rtol = tolerance(model)
    inputs = check_rows(model, version_dir, rows)
    report(f"publishing {model} from {repository} to {store_url}")
    version = publish_model(model, Path(repository), store_url, version_dir, endpoint_url)
    return roll(model, version, urls, admin_key, reference, inputs, atol=atol, rtol=rtol,
                ready_timeout_s=ready_timeout_s, report=report)
