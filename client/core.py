"""What the sync and the asyncio client share: options, the model cache, failure handling, and every
operation's flow.

The two clients differ only in how they take a flow's steps (blocking calls and `time.sleep`, or
`await`: flow.py); every decision (which endpoint, retry or not, shared memory or not, how to split a
batch, when a readiness wait is over) is made here, once.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable, Sequence, TypeVar, Union

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from . import DEFAULT_URL
from .discovery import Discovery
from .endpoints import Endpoint, EndpointRing
from .errors import AdminKeyError, NotReadyError, admin_key_refused, check_admin_key, is_restricted
from .flow import Call, Flow, Sleep
from .model_info import ModelInfo
from .request import Request, build_inputs, build_outputs, prepare, read_outputs
from .retry import Attempts, RetryPolicy, server_timeout_us
from .shared_memory import Layout, Region
from .stats import EndpointStats

T = TypeVar("T")

Targets = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]

# Triton refuses to unregister a region a request still uses; how long close() keeps asking.
UNREGISTER_WAIT_S = 2.0
UNREGISTER_POLL_S = 0.02
CONTROL_TIMEOUT_S = 5.0  # limit for the client's own housekeeping RPCs (unregister)


def channel_args() -> list[tuple[str, object]]:
    """tritonclient's own defaults, plus a quick reconnect: gRPC waits up to 120 s between
    reconnection attempts by default, so a restarted server would stay unused long after it is up.
    A local subchannel pool gives each client a connection of its own."""
    return [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.use_local_subchannel_pool", 1),
    ]


def shm_threshold(use_shared_memory: bool | int) -> float | None:
    """True: every request; an int: requests whose inputs hold at least that many bytes; False: none."""
    if use_shared_memory is True:
        return 0
    if use_shared_memory is False or use_shared_memory is None:
        return None
    if isinstance(use_shared_memory, int) and use_shared_memory >= 0:
        return use_shared_memory
    raise ValueError(f"use_shared_memory must be True, False or a byte threshold >= 0, got {use_shared_memory!r}")


def is_in_use(error: InferenceServerException) -> bool:
    """Triton's answer to unregistering a region that a request still reads or writes."""
    return "in use" in (error.message() or "")


def is_stale_region(error: InferenceServerException) -> bool:
    """The server does not know a region this client registered: it restarted in between."""
    message = (error.message() or "").lower()
    return "shared memory" in message and ("unable to find" in message or "not found" in message)


class ClientCore:
    """Options and state common to `TritonClient` and `AsyncTritonClient`."""

    def __init__(self, urls: Targets = DEFAULT_URL, *, timeout_s: float | None = None,
                 retry: RetryPolicy | None = None, use_shared_memory: bool | int = False,
                 split_batches: bool = True, cooldown_s: float = 2.0, admin_key: str | None = None,
                 refresh_s: float | None = None):
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 (or None for no limit), got {timeout_s}")
        if not cooldown_s >= 0:
            raise ValueError(f"cooldown_s must be >= 0, got {cooldown_s}")
        self.timeout_s = timeout_s
        self.retry = retry if retry is not None else RetryPolicy()
        self.shm_threshold = shm_threshold(use_shared_memory)
        self.split_batches = split_batches
        self.cooldown_s = cooldown_s
        # Only the headers are kept, under a private name, and no repr or message shows them.
        self._admin_headers = check_admin_key(admin_key)
        # Last of the checks: a DNS name is resolved and an endpoints file read here, once the options are
        # known to be good; a target that names no server is an error now, not at the first call.
        self._discovery = Discovery(urls, refresh_s)
        self._models: dict[str, ModelInfo] = {}
        self._closed = False
        self._open()

    def __repr__(self) -> str:
        key = ", admin_key=<set>" if self._admin_headers else ""
        return f"{type(self).__name__}({self._discovery.targets!r}{key})"

    @property
    def urls(self) -> list[str]:
        """The endpoints' URLs as last resolved (host:port, [IPv6]:port), in the order the targets name them."""
        return list(self._discovery.urls)

    @property
    def targets(self) -> list[str]:
        """What the client was given, in canonical form: host:port, dns:///NAME:PORT, file:PATH."""
        return self._discovery.targets

    def _open(self) -> None:
        """Set up the client's connections and state (each client class its own). A client also has
        `_ring` (its EndpointRing), `_maybe_refresh()` (start a discovery refresh when one is due,
        without waiting for it), `_close_removed` and `_run(flow)`, which takes a flow's steps."""
        raise NotImplementedError

    def _make_ring(self, client_class) -> EndpointRing:
        return EndpointRing(self._discovery.urls, lambda url: client_class(url, channel_args=channel_args()),
                            self.cooldown_s, source_of=self._discovery.source_of)

    def _stale(self, ring: EndpointRing) -> bool:
        """Discovery knows a set of endpoints the ring does not have yet."""
        return [e.url for e in ring.endpoints] != self._discovery.urls

    @staticmethod
    def _ring_stats(ring: EndpointRing | None) -> list[EndpointStats]:
        return [] if ring is None else ring.stats()

    def _deadline(self, timeout_s: float | None) -> tuple[float | None, float | None]:
        """The call's timeout and the monotonic time it ends at; (None, None) for no limit."""
        if timeout_s is None:
            timeout_s = self.timeout_s
            if timeout_s is None:
                return None, None
        if math.isinf(timeout_s):
            return None, None
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        return timeout_s, time.monotonic() + timeout_s

    def _wants_shm(self, request: Request) -> bool:
        return self.shm_threshold is not None and request.nbytes >= self.shm_threshold

    # -- the flows: each operation once, for both clients (flow.py) ------------------------------

    def _infer_flows(self, model: str, info: ModelInfo, inputs, outputs: Sequence[str] | None,
                     timeout_s: float | None) -> list[Flow[dict[str, np.ndarray]]]:
        """An `infer` call: a retried flow per chunk of at most the model's max batch size (one chunk
        when the batch fits), all under the call's one deadline. Raises RequestError (nothing sent)
        when the inputs do not fit."""
        request = prepare(info, inputs, outputs, split_batches=self.split_batches)
        timeout_s, deadline = self._deadline(timeout_s)
        return [self._retried(f"model {model}", timeout_s, deadline, self._send, chunk, counted=True)
                for chunk in request.split(info.max_batch_size)]

    def _info_flow(self, model: str) -> Flow[ModelInfo]:
        """The model's metadata and config, retried as an inference call is (under the client's timeout)."""
        timeout_s, deadline = self._deadline(None)
        return self._retried(f"model {model}", timeout_s, deadline, self._fetch_info, model)

    def _retried(self, what: str, timeout_s: float | None, deadline: float | None,
                 attempt: Callable[..., Flow[T]], *args, counted: bool = False) -> Flow[T]:
        """One call, retried: the flow `attempt(endpoint, client_timeout, *args)` on the endpoint the ring
        picks, again on another endpoint (at once) or on the same one (after a backoff) while the
        failures are the servers' (retry.py), until it succeeds or the attempts, the retry budget or the
        call's deadline run out. `counted`: book each attempt in the endpoint's stats (inference, not
        metadata)."""
        self._check_open()
        ring = self._ring
        self._maybe_refresh()
        attempts = Attempts(self.retry, timeout_s, what, deadline)
        failed_on = None
        while True:
            client_timeout = attempts.client_timeout()  # raises InferTimeoutError once the time is up
            endpoint = ring.pick(attempts.tried_elsewhere_only)
            if counted:
                if failed_on is not None and failed_on is not endpoint:
                    failed_on.counters.sent_elsewhere()
                endpoint.counters.sent()
            sent_at = time.monotonic()
            try:
                result = yield from attempt(endpoint, client_timeout, *args)
            except InferenceServerException as error:
                self._finish(endpoint, sent_at, counted, error)
                wait = self._after_failure(ring, attempts, endpoint, error, sent_at)  # or raise: given up
            except BaseException as error:  # a cancelled call too: it must let go of the endpoint
                self._finish(endpoint, sent_at, counted, error)
                raise
            else:
                self._finish(endpoint, sent_at, counted, None)
                ring.succeeded(endpoint, sent_at)
                return result
            failed_on = endpoint
            if wait:
                yield Sleep(wait)

    def _after_failure(self, ring: EndpointRing, attempts: Attempts, endpoint: Endpoint,
                       error: InferenceServerException, sent_at: float) -> float:
        """Set the endpoint aside on a retryable error, and say how long to wait before retrying
        (or raise). `sent_at`: when the failed call was sent (time.monotonic())."""
        policy = attempts.policy
        if isinstance(error, AdminKeyError):  # raised by the client itself, on a call that sent the key
            raise error
        if is_restricted(error):  # a restricted call: the key is missing or wrong, everywhere alike
            raise self._refused(endpoint, f"a call for {attempts.what}", error, key_sent=False)
        if is_stale_region(error):
            # The server restarted while the client was idle: its pooled regions are gone there.
            endpoint.regions.discard_idle()
            return attempts.after_failure(error, endpoint.url, failover=False, retry_anyway=True)
        if policy.is_elsewhere_only(error) and len(ring.endpoints) > 1 and policy.max_attempts > 1:
            # This server lacks the model; another may hold it. No ejection: it serves other models.
            attempts.tried_elsewhere_only.add(endpoint.url)
            if not ring.has_untried(attempts.tried_elsewhere_only):
                raise attempts.nowhere(error, endpoint.url, len(ring.endpoints)) from error
            return attempts.after_failure(error, endpoint.url, failover=True, retry_anyway=True)
        if policy.is_retryable(error):
            ring.failed(endpoint, sent_at)
            # A restarted server forgets registrations; a live one gets the stale names unregistered.
            endpoint.regions.discard_idle()
        return attempts.after_failure(error, endpoint.url, ring.has_other_up(endpoint))

    def _finish(self, endpoint: Endpoint, sent_at: float, counted: bool, error: BaseException | None) -> None:
        """Book an attempt's outcome (`counted`) and release the endpoint; the last call of an endpoint
        discovery removed closes it. A cancelled call is no failure of the server. No step here: this
        also runs while a call is being cancelled."""
        if counted:
            if error is None:
                endpoint.counters.succeeded(time.monotonic() - sent_at)
            elif isinstance(error, Exception):
                endpoint.counters.failed(error)
        if self._ring.release(endpoint):
            self._close_removed(endpoint)

    def _close_removed(self, endpoint: Endpoint) -> None:
        """Close an endpoint discovery removed, whose last call just ended, without failing that call
        (each client its own: at once, or in a task)."""
        raise NotImplementedError

    @staticmethod
    def _fetch_info(endpoint: Endpoint, client_timeout: float | None, model: str) -> Flow[ModelInfo]:
        metadata = yield Call(endpoint, "get_model_metadata", model, client_timeout=client_timeout)
        config = yield Call(endpoint, "get_model_config", model, client_timeout=client_timeout)
        return ModelInfo.from_server(metadata, config.config)

    def _send(self, endpoint: Endpoint, client_timeout: float | None, request: Request) -> Flow[dict[str, np.ndarray]]:
        """One attempt of an inference request: the tensors in the request, or through shared memory.
        Each attempt sends the time the call has left as the gRPC deadline and as the request's own
        `timeout` (microseconds)."""
        if self._wants_shm(request):
            return (yield from self._send_shared(endpoint, client_timeout, request))
        # tritonclient.grpc.aio takes the request objects of tritonclient.grpc.
        result = yield Call(endpoint, "infer", request.model.name, build_inputs(grpcclient, request),
                            outputs=build_outputs(grpcclient, request), client_timeout=client_timeout,
                            timeout=server_timeout_us(client_timeout))
        return read_outputs(result, request)

    def _send_shared(self, endpoint: Endpoint, client_timeout: float | None,
                     request: Request) -> Flow[dict[str, np.ndarray]]:
        """An attempt through one of the endpoint's pooled regions (registered on first use). Regions left
        to unregister (those of failed calls, one evicted from the pool) are unregistered before and
        after the call."""
        pool = endpoint.regions
        if pool.has_pending:
            yield from self._unregister_pending(endpoint)
        layout = Layout.plan(request)
        region = pool.take(layout.byte_size)
        done = False
        try:
            if not region.registered:
                region.registered = True  # set first: a registration the client timed out on may still exist
                yield from self._register(endpoint, region, client_timeout)
            layout.write_inputs(region)
            result = yield Call(endpoint, "infer", request.model.name, layout.infer_inputs(grpcclient, region, request),
                                outputs=layout.requested_outputs(grpcclient, region),
                                client_timeout=client_timeout, timeout=server_timeout_us(client_timeout))
            outputs = layout.read_outputs(result, region, request)
            done = True
        finally:
            # Books only, no step: this also runs when the call failed or is being cancelled. A failed
            # call's region is never reused (the server may still be reading it).
            if not done:
                pool.discard(region)
            else:
                evicted = pool.give_back(region)
                if evicted is not None:
                    pool.discard(evicted)
        if pool.has_pending:
            yield from self._unregister_pending(endpoint)
        return outputs

    def _register(self, endpoint: Endpoint, region: Region, client_timeout: float | None) -> Flow[None]:
        """Register a region with the server: a restricted call, so it carries the admin key."""
        try:
            yield Call(endpoint, "register_system_shared_memory", region.name, region.key, region.byte_size,
                       headers=self._admin_headers, client_timeout=client_timeout)
        except InferenceServerException as error:
            if is_restricted(error):
                raise self._refused(endpoint, "shared memory registration", error, key_sent=True) from error
            raise

    def _unregister_pending(self, endpoint: Endpoint, wait_s: float = 0.0) -> Flow[None]:
        """Unregister the regions waiting for it; those still in use are asked again for up to `wait_s`.
        Names not asked yet when the flow is interrupted (a cancelled call) stay pending."""
        deadline = time.monotonic() + wait_s
        while True:
            names, still_used, asked = endpoint.regions.take_pending(), [], 0
            try:
                for name in names:
                    try:
                        yield Call(endpoint, "unregister_system_shared_memory", name, headers=self._admin_headers,
                                   client_timeout=CONTROL_TIMEOUT_S)
                    except InferenceServerException as e:
                        if is_in_use(e):
                            still_used.append(name)
                        # Anything else (server gone, name unknown): nothing is left to unregister.
                    asked += 1
            finally:
                endpoint.regions.requeue_pending(still_used + names[asked:])
            if not still_used or time.monotonic() >= deadline:
                return
            yield Sleep(UNREGISTER_POLL_S)

    def _release_regions(self, endpoint: Endpoint, wait_s: float = 0.0) -> Flow[None]:
        """Destroy every shared memory region of an endpoint and unregister them (before its channel
        closes); regions still in use are asked again for up to `wait_s`."""
        for region in endpoint.regions.take_all():
            endpoint.regions.discard(region)
        yield from self._unregister_pending(endpoint, wait_s)

    def _ready_flow(self, timeout_s: float, model: str | None, every: bool) -> Flow[list[str]]:
        """`wait_ready`: rounds of readiness checks, each endpoint in turn, until one endpoint (every
        endpoint with `every`) is ready, and `model` too when given; the ready URLs. An endpoint that
        answers is back in the ring at once. Raises NotReadyError after `timeout_s`."""
        self._check_open()
        deadline = time.monotonic() + timeout_s
        last = {}  # URL -> why it was not ready when last asked
        while True:
            self._maybe_refresh()
            ring = self._ring
            ready = []
            for endpoint in ring.endpoints:
                if not ring.acquire(endpoint):  # removed meanwhile
                    continue
                t = min(max(deadline - time.monotonic(), 0.05), 1.0)
                try:
                    if ((yield Call(endpoint, "is_server_ready", client_timeout=t))
                            and (model is None or (yield Call(endpoint, "is_model_ready", model, client_timeout=t)))):
                        ready.append(endpoint.url)
                        ring.mark_up(endpoint)
                    else:
                        last[endpoint.url] = "not ready" if model is None else f"model {model} not ready"
                except InferenceServerException as e:
                    last[endpoint.url] = str(e)
                finally:
                    self._finish(endpoint, 0.0, False, None)
            if ready and (not every or len(ready) == len(ring.endpoints)):
                return ready
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotReadyError(f"not ready within {timeout_s:g} s: "
                                    + "; ".join(f"{u}: {why}" for u, why in last.items() if u not in ready))
            yield Sleep(min(0.1, left))

    # -- the rest ---------------------------------------------------------------------------------

    def _refused(self, endpoint: Endpoint, call: str, error: InferenceServerException,
                 key_sent: bool) -> AdminKeyError:
        refused = admin_key_refused(endpoint.url, call, self._admin_headers is not None, key_sent)
        refused.__cause__ = error
        return refused

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this client is closed; create a new one")
