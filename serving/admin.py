"""The admin key: what a plain client of a tritonize server may not do, and how tritonize's own tools may.

`TritonServer` restricts Triton's admin APIs (RESTRICTED_APIS: model load/unload and the repository
index, shared memory registration, statistics, trace and log settings) on both protocols to requests
that carry the server's admin key, so a client without it can only infer and read health, metadata
and model configs. Triton checks the key as a request header, named differently per protocol:
HTTP wants `tritonize-admin-key` itself, gRPC the same name behind Triton's own prefix
(`triton-grpc-protocol-tritonize-admin-key`, as gRPC metadata). `admin_headers` gives the right one.

A refused call says so: gRPC UNAVAILABLE "This protocol is restricted, expecting header
'triton-grpc-protocol-tritonize-admin-key'", HTTP 403 "This API is restricted, expecting header
'tritonize-admin-key'" (measured on tritonserver 2.51).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

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
    """A restricted call to the server failed: the call and the server's answer (or why there was none)."""


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
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    return path


# Triton's model repository API over HTTP (plain urllib: serving/ does not depend on tritonclient). The
# drain and the health loop use it; each call is one short connection.

def admin_call(http_url: str, key: str, path: str, body: dict | None = None, timeout_s: float = 5.0):
    """POST `path` with the admin key; the decoded JSON answer (None when empty)."""
    request = urllib.request.Request(f"http://{http_url}{path}", data=json.dumps(body or {}).encode(), method="POST",
                                     headers={ADMIN_HEADER: key, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            text = response.read()
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):  # not Triton's {"error": ...}: keep the text
            detail = json.loads(detail).get("error", detail)
        raise AdminCallError(f"POST {path} on {http_url}: HTTP {e.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as e:
        raise AdminCallError(f"POST {path} on {http_url}: {getattr(e, 'reason', e)}") from None
    return json.loads(text) if text else None


def model_states(http_url: str, key: str, timeout_s: float = 5.0) -> dict[str, tuple[str, str]]:
    """Model name -> (state, reason) from the repository index; a model never loaded has state ''."""
    index = admin_call(http_url, key, "/v2/repository/index", timeout_s=timeout_s) or []
    return {m["name"]: (m.get("state", ""), m.get("reason", "")) for m in index}


def unload_model(http_url: str, key: str, model: str, timeout_s: float = 5.0) -> None:
    """Start unloading `model`: it is not ready from now on, new requests are refused, requests in
    flight complete; the call returns before the unload ends (watch `model_states`)."""
    admin_call(http_url, key, f"/v2/repository/models/{urllib.parse.quote(model, safe='')}/unload", timeout_s=timeout_s)


def load_model(http_url: str, key: str, model: str, timeout_s: float = 120.0) -> None:
    """Load `model` from the repository; returns once it is loaded (or raises with the server's reason)."""
    admin_call(http_url, key, f"/v2/repository/models/{urllib.parse.quote(model, safe='')}/load", timeout_s=timeout_s)
