"""Python gRPC client for Triton: numpy in, numpy out, on top of tritonclient.

`TritonClient` (blocking) and `AsyncTritonClient` (asyncio) share one surface: `infer`,
`model_info`, `wait_ready`, `close`, context managers. Inputs are checked against the model's
metadata read from the server (once per model) before anything is sent; a batch larger than the
model's max batch size is split; UNAVAILABLE calls are retried with backoff, round-robin over
several servers; large tensors can go through system shared memory.
"""
from tritonize.client.async_client import AsyncTritonClient
from tritonize.client.errors import InferTimeoutError, NotReadyError, RequestError, UnavailableError
from tritonize.client.model_info import ModelInfo, TensorInfo
from tritonize.client.retry import NO_RETRY, RetryPolicy
from tritonize.client.sync_client import TritonClient

__all__ = [
    "AsyncTritonClient",
    "InferTimeoutError",
    "ModelInfo",
    "NO_RETRY",
    "NotReadyError",
    "RequestError",
    "RetryPolicy",
    "TensorInfo",
    "TritonClient",
    "UnavailableError",
]
