"""The errors the client raises on top of tritonclient's own.

A request the client refuses is a `RequestError` (a ValueError: the caller can fix it, and nothing was
sent). Server and transport failures stay tritonclient `InferenceServerException`s, so code that
already catches those keeps working; two of them get a class of their own because callers treat them
differently: a call that ran out of time, and a call that no endpoint could serve.
"""
from __future__ import annotations

from tritonclient.utils import InferenceServerException

DEADLINE_EXCEEDED = "StatusCode.DEADLINE_EXCEEDED"
UNAVAILABLE = "StatusCode.UNAVAILABLE"


class RequestError(ValueError):
    """The inputs do not fit the model's metadata; says what was expected and what was given."""


class InferTimeoutError(InferenceServerException, TimeoutError):
    """No response within the call's timeout (gRPC DEADLINE_EXCEEDED). Never retried: the server may
    still be working on the request, and a retry would only add load to a server that is too slow."""

    def __init__(self, msg: str):
        InferenceServerException.__init__(self, msg, status=DEADLINE_EXCEEDED)


class UnavailableError(InferenceServerException):
    """No endpoint answered within the retry budget; the message lists what was tried."""

    def __init__(self, msg: str, status: str | None = UNAVAILABLE):
        InferenceServerException.__init__(self, msg, status=status)


class NotReadyError(TimeoutError):
    """`wait_ready` ran out of time before the server (or model) was ready."""
