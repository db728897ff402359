"""wrk as the closed-loop load generator, where it is installed.

Our own senders are Python: even the lean one spends tens of microseconds of CPU per request, and on
a small machine that CPU comes out of what the server gets. At high concurrency the load generator
then decides the throughput, and it decides it unevenly: a server that is CPU-bound (Triton under a
full batcher) loses more than one that waits on a timer (a peer's batching window). wrk is C with an
event loop, and costs a few microseconds per request, so where it is installed the comparisons that
need a cheap client (the batching sweep at high concurrency, the peers) use it.

The request is pre-encoded (body and headers, written to a file the Lua script reads once) and sent
on kept-alive connections, one request in flight each. The script's `done` prints the counts and the
latency percentiles as one JSON line, so no human-readable output is parsed.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .loadgen import LoadSummary

BINARY = "wrk"
INSTALL_HINT = "install wrk (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk)"
_MARK = "TRITONIZE-WRK "
# Header names and values go into the Lua script as quoted strings: only plain tokens are let through.
_SAFE = re.compile(r"[A-Za-z0-9._/+-]+")

_SCRIPT = """\
local f = assert(io.open({body_file}, "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
{headers}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{mark}{{"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d, "p50_us": %d, "p90_us": %d, "p95_us": %d, "p99_us": %d, "mean_us": %f}}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99), latency.mean))
end
"""


class WrkUnavailable(RuntimeError):
    """No wrk binary: the message says how to get one."""


class WrkFailed(RuntimeError):
    """wrk ran but gave no result (it printed why)."""


@dataclass(frozen=True)
class WrkRequest:
    """One pre-encoded HTTP POST: where it goes, its headers (Content-Length is wrk's) and body."""
    url: str  # http://host:port/path
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme != "http" or not parts.hostname or not parts.port or not parts.path.startswith("/"):
            raise ValueError(f"wrk needs an http://host:port/path URL, got {self.url!r}")
        for name, value in self.headers:
            if not (_SAFE.fullmatch(name) and _SAFE.fullmatch(value)):
                raise ValueError(f"wrk request headers must be plain tokens ([A-Za-z0-9._/+-]), got {name!r}: {value!r}")


def from_raw_http(base_url: str, raw: bytes) -> WrkRequest:
    """A WrkRequest from a whole HTTP/1.1 request (what bench/load/lean_http.py encodes): its path and
    headers (but Host and Content-Length, which wrk writes) and its body."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError("expected a whole HTTP request (head, blank line, body), got no blank line")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    if method != "POST":
        raise ValueError(f"wrk sends POST requests, got {method}")
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() not in ("host", "content-length"):
            headers.append((name.strip(), value.strip()))
    base = base_url if "://" in base_url else "http://" + base_url  # as the lean sender takes it
    return WrkRequest(url=base.rstrip("/") + path, headers=tuple(headers), body=body)


def find_binary(binary: str | None = None) -> str | None:
    return shutil.which(binary or BINARY)


def require_binary(binary: str | None = None) -> str:
    found = find_binary(binary)
    if found is None:
        raise WrkUnavailable(f"no {binary or BINARY} on PATH; {INSTALL_HINT}")
    return found


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string of plain ASCII is a valid Lua string literal


def closed_loop(request: WrkRequest, concurrency: int, duration_s: float, *, threads: int = 1,
                timeout_s: float = 10.0, binary: str | None = None) -> LoadSummary:
    """`concurrency` connections, each one request in flight, for `duration_s` (whole seconds, at
    least 1: wrk's unit). One wrk thread: it drives tens of thousands of requests per second, and a
    second one would take a core from the server on a small machine."""
    if concurrency < 1 or duration_s <= 0:
        raise ValueError(f"wrk needs concurrency >= 1 and a duration > 0, got {concurrency} and {duration_s}")
    wrk = require_binary(binary)
    with tempfile.TemporaryDirectory(prefix="tritonize-wrk-") as tmp:
        body_file, script = Path(tmp) / "body", Path(tmp) / "request.lua"
        body_file.write_bytes(request.body)
        headers = "\n".join(f"wrk.headers[{_lua_string(n)}] = {_lua_string(v)}" for n, v in request.headers)
        script.write_text(_SCRIPT.format(body_file=_lua_string(str(body_file)), headers=headers, mark=_MARK))
        seconds = max(1, math.ceil(duration_s))
        cmd = [wrk, "-t", str(min(threads, concurrency)), "-c", str(concurrency), "-d", f"{seconds}s",
               "--timeout", f"{max(1, math.ceil(timeout_s))}s", "-s", str(script), request.url]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(_MARK)), None)
    if done.returncode != 0 or line is None:
        raise WrkFailed(f"wrk exited {done.returncode} without a result: {(done.stderr or done.stdout).strip()[:500]}")
    r = json.loads(line[len(_MARK):])
    errors = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    ok = max(r["requests"] - r["status"], 0)
    duration = r["duration_us"] / 1e6
    first = [f"wrk counted {errors} errors: {r['status']} non-2xx/3xx answers, {r['connect']} connect, {r['read']} read, "
             f"{r['write']} write, {r['timeout']} timeouts"] if errors else []
    return LoadSummary(mode="closed", level=float(concurrency), sent=r["requests"], ok=ok, errors=errors,
                       duration_s=duration, first_errors=first, max_lag_ms=0.0,
                       throughput_rps=ok / duration if duration > 0 else 0.0, p50_ms=r["p50_us"] / 1e3,
                       p90_ms=r["p90_us"] / 1e3, p95_ms=r["p95_us"] / 1e3, p99_ms=r["p99_us"] / 1e3,
                       mean_ms=r["mean_us"] / 1e3)
