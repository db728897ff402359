"""The errors the client raises on top of tritonclient's own.

A request the client refuses is a `RequestError` (a ValueError: the caller can fix it, and nothing was
sent). Server and transport failures stay tritonclient `InferenceServerException`s, so code that
already catches those keeps working; three of them get a class of their own because callers treat them
differently: a call that ran out of time, a call that no endpoint could serve, and a call the server
refused for want of its admin key.
"""
from __future__ import annotations

from tritonclient.utils import InferenceServerException

DEADLINE_EXCEEDED = "StatusCode.DEADLINE_EXCEEDED"
UNAVAILABLE = "StatusCode.UNAVAILABLE"
PERMISSION_DENIED = "StatusCode.PERMISSION_DENIED"

# The header tritonize's servers check on restricted APIs. Triton's gRPC frontend reads a restricted
# protocol's key under its own prefix (measured on 2.51: `--grpc-restricted-protocol=...:K=V` answers
# "expecting header 'triton-grpc-protocol-K'"), so both names are sent: the prefixed one for Triton,
# the plain one for anything in front of it that checks the key under its own name.
ADMIN_KEY_HEADER = "tritonize-admin-key"
GRPC_ADMIN_KEY_HEADER = "triton-grpc-protocol-" + ADMIN_KEY_HEADER


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


class AdminKeyError(InferenceServerException, PermissionError):
    """The server restricts the call to holders of its admin key, and the client sent none or a wrong
    one. Never retried: every server of a deployment shares the key, and asking again changes nothing.
    The message never holds the key itself."""

    def __init__(self, msg: str):
        InferenceServerException.__init__(self, msg, status=PERMISSION_DENIED)


class NotReadyError(TimeoutError):
    """`wait_ready` ran out of time before the server (or model) was ready."""


def is_restricted(error: InferenceServerException) -> bool:
    """Triton's answer to a restricted call without the right key (gRPC: "This protocol is restricted,
    expecting header ..."; HTTP: "This API is restricted, ..."). Its status is UNAVAILABLE, which alone
    would read as "try again"."""
    return "is restricted, expecting header" in (error.message() or "")


def admin_key_refused(url: str, call: str, has_key: bool, key_sent: bool) -> AdminKeyError:
    """The one-line error for a restricted call: what the server expects, and what this client gave."""
    if not has_key:
        given = "this client has no admin_key (pass admin_key=... to the client)"
    elif key_sent:
        given = "it refused the admin_key this client sent (is it this server's key?)"
    else:
        given = "this client sends its admin_key only on restricted calls (shared memory), not on this one"
    return AdminKeyError(f"{url} refused {call}: it expects its admin key in header "
                         f"'{GRPC_ADMIN_KEY_HEADER}', and {given}")


def check_admin_key(admin_key: object) -> dict[str, str] | None:
    """The headers carrying `admin_key` (None: no key). The refusal names the type and length of what
    was given, never the value: a key must not end up in logs."""
    if admin_key is None:
        return None
    if not isinstance(admin_key, str):
        raise TypeError(f"admin_key must be a str (or None), got {type(admin_key).__name__}")
    # gRPC metadata values are printable ASCII; spaces at either end are not kept by every transport.
    if not admin_key or admin_key != admin_key.strip() or not all(" " <= c <= "~" for c in admin_key):
        raise ValueError(f"admin_key must be a non-empty string of printable ASCII without leading or trailing "
                         f"spaces, got a str of {len(admin_key)} character(s) that is not")
    return {ADMIN_KEY_HEADER: admin_key, GRPC_ADMIN_KEY_HEADER: admin_key}
