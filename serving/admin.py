"""The admin key: what a plain client of a tritonize server may not do, and how tritonize's own tools may.

`TritonServer` restricts Triton's admin APIs (RESTRICTED_APIS: model load/unload and the repository
index, shared memory registration, statistics, trace and log settings) on both protocols to requests
that carry the server's admin key, so a client without it can only infer and read health, metadata
and model configs. Triton checks the key as a request header, named differently per protocol:
HTTP wants `tritonize-admin-key` itself, gRPC the same name behind Triton's own prefix
(`triton-grpc-protocol-tritonize-admin-key`, as gRPC metadata). `admin_headers` gives the right one;
`TritonAdmin` makes the restricted calls themselves (load with a config override, unload, the
repository index, statistics) on either protocol, with the key, and typed answers.

A refused call says so: gRPC UNAVAILABLE "This protocol is restricted, expecting header
'triton-grpc-protocol-tritonize-admin-key'", HTTP 403 "This API is restricted, expecting header
'tritonize-admin-key'" (measured on tritonserver 2.51).
"""
from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Mapping

from ..artifacts import named_disk_error

ADMIN_HEADER = "tritonize-admin-key"  # the HTTP header; lower case, as gRPC metadata keys must be
GRPC_ADMIN_HEADER = "triton-grpc-protocol-" + ADMIN_HEADER  # Triton prefixes restricted gRPC keys with this
ADMIN_KEY_ENV = "TRITONIZE_ADMIN_KEY"
RESTRICTED_APIS = ("model-repository", "shared-memory", "statistics", "trace", "logging")
# Characters that pass unchanged through Triton's `<apis>:<key>=<value>` flag, an HTTP header and gRPC
# metadata (RFC 3986's unreserved set); secrets.token_urlsafe draws from it.
_KEY = re.compile(r"[A-Za-z0-9._~-]+")
MIN_KEY_LENGTH = 16


class AdminKeyError(ValueError):
    """An admin key that cannot be used, or a key file that cannot be read or written; says why (never the key)."""


class AdminCallError(RuntimeError):
    """A restricted call to the server failed: the call and the server's answer (or why there was none).
    `detail` is the answer alone, for callers that name the call and the server themselves."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = message if detail is None else detail


def new_admin_key() -> str:
    return secrets.token_urlsafe(32)


def check_admin_key(key: object, source: str = "admin_key") -> str:
    """`key` if it is usable; the error names `source`, the length and the allowed characters, not the key."""
    if not isinstance(key, str):
        raise AdminKeyError(f"{source}: expected a str, got {type(key).__name__}")
    if len(key) < MIN_KEY_LENGTH or not _KEY.fullmatch(key):
        what = f"{len(key)} characters" if _KEY.fullmatch(key) or not key else \
            f"{len(key)} characters, some outside that set"
        raise AdminKeyError(f"{source}: expected an admin key of at least {MIN_KEY_LENGTH} characters from "
                            f"A-Z a-z 0-9 . _ ~ -, got {what}")
    return key


def restriction_args(key: str) -> list[str]:
    """tritonserver's flags that restrict RESTRICTED_APIS to requests carrying `key`, on both protocols."""
    group = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={key}"
    return [f"--grpc-restricted-protocol={group}", f"--http-restricted-api={group}"]


def admin_headers(key: str | None, protocol: str = "grpc") -> dict[str, str] | None:
    """The headers (tritonclient's `headers=`) that carry `key` on `protocol` ("grpc" or "http"); None without a key."""
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
    if key is None:
        return None
    return {GRPC_ADMIN_HEADER if protocol == "grpc" else ADMIN_HEADER: key}


def read_admin_key_file(path: Path) -> str:
    """The key in `path` (one line; surrounding whitespace ignored). A file others may read is refused:
    the key would not be a secret."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as e:
        raise AdminKeyError(f"admin key file {path}: cannot read it ({e.strerror})") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AdminKeyError(f"admin key file {path}: expected a file only its owner may read (chmod 600 {path}), "
                            f"got mode {stat.S_IMODE(mode):o}")
    return check_admin_key(text.strip(), f"admin key file {path}")


def write_admin_key_file(path: Path, key: str) -> Path:
    """Write `key` to a new file `path`, mode 0600 from its creation (never an existing file)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as e:
        raise AdminKeyError(f"admin key file {path}: cannot create it ({e.strerror})") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
    except OSError as e:  # a full disk: no empty key file left behind, which the next start would refuse
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise named_disk_error(e, path) from None
    return path


# The admin client: Triton's restricted calls (model control, the repository index, statistics) in one
# place. The drain (serving/server.py) and the health loop, rollout (deploy/rollout.py), and the bench's
# sweep and statistics use it, so the key, the headers and the timeouts are handled once.
# gRPC runs on tritonclient. HTTP runs on the standard library (urllib, one short connection per call),
# for a measured reason: the drain also runs at interpreter exit (the atexit hook closes the servers still
# running), and tritonclient's HTTP client (gevent) cannot make its first call there. Its resolver's
# thread pool imports concurrent.futures, which raises "can't register atexit after shutdown"
# (tests/serving/test_lifecycle.py's server closed at exit stayed running). gRPC works there.

PROTOCOLS = ("grpc", "http")
DEFAULT_TIMEOUT_S = 5.0  # index, unload, statistics, config: quick calls; a server slower than this is in trouble
LOAD_TIMEOUT_S = 120.0  # a load returns only once the model is loaded (or failed): a large model takes a while
_RESTRICTED = "restricted, expecting header"  # Triton's refusal of a call without the key, on both protocols


@dataclass(frozen=True)
class ModelState:
    """One row of Triton's repository index: a model (one version of it) and its state."""
    name: str
    version: str  # '' for a model never loaded
    state: str  # READY, LOADING, UNLOADING, UNAVAILABLE, or '' for a model never loaded
    reason: str  # why it is not READY, when the server says


@dataclass(frozen=True)
class Duration:
    """Triton's StatisticDuration: how often a stage ran and its nanoseconds over all those times."""
    count: int = 0
    ns: int = 0


@dataclass(frozen=True)
class ModelStatistics:
    """Triton's cumulative statistics for one version of a model, since it was loaded."""
    name: str
    version: str
    inference_count: int  # inferences: rows, counting each row of a batch
    execution_count: int  # model executions: the batches the server ran
    success: Duration  # requests answered, and their whole time in the server
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


def config_json(config) -> str | None:
    """A load's config override as the JSON text Triton takes: from a ModelConfig message (the form
    `get_model_config(as_json=True)` gives: proto field names, 64-bit integers as strings), a dict of
    that form, or JSON text of it; None stays None (no override)."""
    if config is None:
        return None
    if isinstance(config, str):
        try:
            is_object = isinstance(json.loads(config), dict)
        except ValueError as e:
            raise ValueError(f"config: expected a model config as JSON text, got text that is not JSON ({e})") from None
        if not is_object:
            raise ValueError("config: expected a model config as JSON text of an object, got another JSON value")
        return config
    if isinstance(config, Mapping):
        return json.dumps(dict(config))
    descriptor = getattr(config, "DESCRIPTOR", None)
    if getattr(descriptor, "full_name", None) == "inference.ModelConfig":
        from google.protobuf import json_format

        return json_format.MessageToJson(config, preserving_proto_field_name=True)
    raise ValueError(f"config: expected a ModelConfig message, a dict or JSON text, got {type(config).__name__}")


class TritonAdmin:
    """Triton's admin calls on one server, carrying its admin key: load (with a config override),
    unload, the repository index and model states, statistics, and the model config.

    >>> with TritonAdmin(server.grpc_url, server.admin_key) as admin:
    ...     admin.load("mlp", config)          # a ModelConfig message, its JSON dict or JSON text
    ...     admin.states()["mlp"].state        # 'READY'

    url: host:port of the server's gRPC or HTTP endpoint, as `protocol` says. admin_key: the server's key
    (None for a server that restricts nothing). timeout_s limits each call but a load, load_timeout_s a
    load; both can be given per call. Every failure is an AdminCallError naming the call, the server and
    its answer. One TritonAdmin serves many threads.
    """

    def __init__(self, url: str, admin_key: str | None, protocol: str = "grpc", *,
                 timeout_s: float = DEFAULT_TIMEOUT_S, load_timeout_s: float = LOAD_TIMEOUT_S):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol: expected one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if not isinstance(url, str) or not url.strip() or "://" in url:
            raise ValueError(f"url: expected the server's {protocol} host:port (no scheme), got {url!r}")
        _check_seconds("timeout_s", timeout_s)
        _check_seconds("load_timeout_s", load_timeout_s)
        self.url, self.protocol = url, protocol
        self.timeout_s, self.load_timeout_s = timeout_s, load_timeout_s
        # Only the headers are kept (under a private name): no repr or message shows the key.
        self._headers = admin_headers(None if admin_key is None else check_admin_key(admin_key), protocol)
        self._grpc = None
        self._closed = False
        if protocol == "grpc":
            import tritonclient.grpc as grpcclient

            self._grpc = grpcclient.InferenceServerClient(url)

    def __repr__(self) -> str:  # never the admin key
        key = ", admin_key=<set>" if self._headers else ""
        return f"TritonAdmin({self.url!r}, protocol={self.protocol!r}{key})"

    # -- model control ----------------------------------------------------------------------------

    def load(self, model: str, config=None, *, timeout_s: float | None = None) -> None:
        """Load `model` from the repository (again), with `config` overriding its config.pbtxt when given
        (see `config_json`); returns once it is loaded, raises with the server's reason if it fails."""
        text = config_json(config)
        self._call(f"load of model {model!r}", _pick(timeout_s, self.load_timeout_s),
                   lambda c, t: c.load_model(model, headers=self._headers, config=text, client_timeout=t),
                   lambda t: self._http("POST", f"/v2/repository/models/{_quote(model)}/load", t,
                                        {} if text is None else {"parameters": {"config": text}}))

    def unload(self, model: str, *, timeout_s: float | None = None) -> None:
        """Start unloading `model`: it is not ready from now on, new requests are refused, requests in
        flight complete; returns before the unload ends (watch `states`)."""
        self._call(f"unload of model {model!r}", _pick(timeout_s, self.timeout_s),
                   lambda c, t: c.unload_model(model, headers=self._headers, client_timeout=t),
                   lambda t: self._http("POST", f"/v2/repository/models/{_quote(model)}/unload", t, {}))

    # -- what the server holds --------------------------------------------------------------------

    def index(self, *, timeout_s: float | None = None) -> tuple[ModelState, ...]:
        """The repository index: a row per model version the server knows, one for a model never loaded."""
        rows = self._call("repository index", _pick(timeout_s, self.timeout_s),
                          lambda c, t: c.get_model_repository_index(headers=self._headers, as_json=True,
                                                                    client_timeout=t).get("models", []),
                          lambda t: self._http("POST", "/v2/repository/index", t, {}) or [])
        # gRPC's JSON leaves out empty fields: a model never loaded has a name only.
        return tuple(ModelState(str(m["name"]), str(m.get("version", "")), m.get("state", ""), m.get("reason", ""))
                     for m in rows)

    def states(self, *, timeout_s: float | None = None) -> dict[str, ModelState]:
        """Model name -> its state: Triton lists a model's versions in ascending order, and the last,
        its highest version, is the one kept."""
        return {m.name: m for m in self.index(timeout_s=timeout_s)}

    def ready_versions(self, model: str, *, timeout_s: float | None = None) -> tuple[int, ...]:
        """The versions of `model` that are READY, in ascending order."""
        return tuple(sorted(int(m.version) for m in self.index(timeout_s=timeout_s)
                            if m.name == model and m.state == "READY" and m.version.isdigit()))

    def statistics(self, model: str = "", version: str = "", *,
                   timeout_s: float | None = None) -> tuple[ModelStatistics, ...]:
        """Cumulative statistics per loaded version of `model` ('' for every model), or of `version`."""
        what = f"statistics of model {model!r}" if model else "statistics"
        found = self._call(what, _pick(timeout_s, self.timeout_s),
                           lambda c, t: c.get_inference_statistics(model, version, headers=self._headers,
                                                                   as_json=True, client_timeout=t),
                           lambda t: self._http("GET", f"{_model_path(model, version)}/stats", t))
        return tuple(_statistics(entry) for entry in found.get("model_stats", []))

    def config(self, model: str, version: str = "", *, timeout_s: float | None = None):
        """The config the server uses for `model` (not a restricted call), as a ModelConfig message: what
        `load` takes back as an override."""
        from google.protobuf import json_format
        from tritonclient.grpc import model_config_pb2

        found = self._call(f"config of model {model!r}", _pick(timeout_s, self.timeout_s),
                           lambda c, t: c.get_model_config(model, version, client_timeout=t).config,
                           lambda t: self._http("GET", f"{_model_path(model, version)}/config", t))
        if isinstance(found, dict):  # HTTP answers the config's JSON
            found = json_format.ParseDict(found, model_config_pb2.ModelConfig(), ignore_unknown_fields=True)
        return found

    # -- the calls --------------------------------------------------------------------------------

    def _call(self, what: str, timeout_s: float, grpc_call, http_call):
        """`grpc_call(client, timeout_s)` or `http_call(timeout_s)`, their failures as one AdminCallError."""
        if self._closed:
            raise AdminCallError(f"{what} on {self.url}: this TritonAdmin is closed; make a new one")
        where = f"{what} on {self.url} ({'gRPC' if self._grpc is not None else 'HTTP'})"
        if self._grpc is not None:
            from tritonclient.utils import InferenceServerException as failure
        else:
            failure = _HttpFailure
        try:
            return grpc_call(self._grpc, timeout_s) if self._grpc is not None else http_call(timeout_s)
        except failure as e:
            detail = str(e)
            if _RESTRICTED in detail:
                detail += ("; this TritonAdmin has no admin key" if self._headers is None else
                           "; the server refused this admin key (is it this server's?)")
            raise AdminCallError(f"{where}: {detail}", detail) from None

    def _http(self, method: str, path: str, timeout_s: float, body: dict | None = None):
        """Triton's HTTP/REST API: `method` on `path` with the admin key; the decoded JSON answer (None
        when empty). A refusal reads as tritonclient's errors do: "[403] <Triton's error>"."""
        request = urllib.request.Request(f"http://{self.url}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={**(self._headers or {}), "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                text = response.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")
            with contextlib.suppress(ValueError, AttributeError):  # not Triton's {"error": ...}: keep the text
                detail = json.loads(detail).get("error", detail)
            raise _HttpFailure(f"[{e.code}] {detail}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # refused, reset, timed out
            raise _HttpFailure(f"{type(e).__name__}: {getattr(e, 'reason', e)}") from None
        return json.loads(text) if text else None

    def close(self) -> None:
        """Close the gRPC channel (HTTP keeps no connection). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._grpc is not None:
            self._grpc.close()

    def __enter__(self) -> "TritonAdmin":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _HttpFailure(Exception):
    """An HTTP call that failed: the server's answer, or why there was none."""


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _model_path(model: str, version: str) -> str:
    """/v2/models/<model>[/versions/<version>], or /v2/models for every model."""
    if not model:
        return "/v2/models"
    return f"/v2/models/{_quote(model)}" + (f"/versions/{_quote(version)}" if version else "")


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name}: expected seconds > 0, got {value!r}")


def _pick(given: float | None, default: float) -> float:
    if given is None:
        return default
    _check_seconds("timeout_s", given)
    return given


def _statistics(entry: dict) -> ModelStatistics:
    """One entry of Triton's statistics JSON (gRPC's gives 64-bit integers as strings and leaves out zeros)."""
    stages = entry.get("inference_stats", {})

    def duration(stage: str) -> Duration:
        found = stages.get(stage, {})
        return Duration(int(found.get("count", 0)), int(found.get("ns", 0)))

    return ModelStatistics(str(entry.get("name", "")), str(entry.get("version", "")),
                           int(entry.get("inference_count", 0)), int(entry.get("execution_count", 0)),
                           *(duration(s) for s in ("success", "fail", "queue", "compute_input", "compute_infer",
                                                    "compute_output")))
