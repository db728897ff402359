"""Python gRPC client for Triton: numpy in, numpy out, on top of tritonclient.

`TritonClient` (blocking) and `AsyncTritonClient` (asyncio) share one surface: `infer`,
`model_info`, `wait_ready`, `close`, context managers. Inputs are checked against the model's
metadata read from the server (once per model) before anything is sent; a batch larger than the
model's max batch size is split; failures of a server are retried on another one (or after a backoff),
round-robin over several servers, and a failing server is set aside for a while; large tensors can go
through system shared memory. The servers can be named by address, by a DNS name re-resolved as pods
come and go (`dns:///NAME:PORT`), or by the endpoints file `tritonize serve` writes; `endpoint_stats()`
tells what each endpoint has seen.
"""
from __future__ import annotations

import importlib

DEFAULT_URL = "127.0.0.1:8001"  # tritonserver's own default gRPC port, on this machine

# The names load on first use (PEP 562), so that `tritonize infer --help` does not import
# tritonclient and numpy just to list its options.
_WHERE = {
    "AdminKeyError": "errors",
    "AsyncTritonClient": "async_client",
    "DiscoveryError": "discovery",
    "EndpointStats": "stats",
    "FailureCounts": "stats",
    "Latency": "stats",
    "InferTimeoutError": "errors",
    "NotReadyError": "errors",
    "RequestError": "errors",
    "UnavailableError": "errors",
    "ModelInfo": "model_info",
    "TensorInfo": "model_info",
    "NO_RETRY": "retry",
    "RetryPolicy": "retry",
    "TritonClient": "sync_client",
}
__all__ = ["DEFAULT_URL", *_WHERE]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
