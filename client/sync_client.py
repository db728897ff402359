"""`TritonClient`: blocking inference over gRPC with tritonclient underneath."""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Sequence, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from .core import CONTROL_TIMEOUT_S, UNREGISTER_POLL_S, UNREGISTER_WAIT_S, ClientCore, is_in_use
from .endpoints import Endpoint
from .errors import is_restricted
from .model_info import ModelInfo
from .request import Inputs, Request, build_inputs, build_outputs, concat_outputs, prepare, read_outputs
from .retry import server_timeout_us
from .shared_memory import Layout, Region
from .stats import EndpointStats

T = TypeVar("T")
log = logging.getLogger(__name__)


class TritonClient(ClientCore):
    """A blocking client for one or more Triton servers (gRPC).

    >>> with TritonClient("127.0.0.1:8001") as client:
    ...     logits = client.infer("mlp", np.zeros((1, 784), np.float32))["logits"]

    urls: where the servers are, one target or a list of them, each told apart by its form:
        `host:port` (a bare host gets 8001; IPv6 as [ADDRESS]:PORT); `dns:///NAME:PORT`, every IPv4 and
        IPv6 address behind NAME (a Kubernetes headless Service: one per pod), resolved again every
        `refresh_s`; or an endpoints file, `file:PATH`, a str ending in `.json` or a Path (the list
        `tritonize serve --endpoints-file` writes), read again when it changes. Calls are spread round-robin over
        the endpoints that are up. Endpoints that appear join the rotation; those that vanish take no
        new call and are closed once their calls in flight end. A name that does not resolve or a
        missing file is a `DiscoveryError` (a ValueError) here; later, a failed resolution keeps the
        last good set and is logged.
    refresh_s: how often names are resolved and files looked at again (default: 30 s for DNS, 2 s for
        files). The check happens on calls, in the background: no call waits for a resolver.
    timeout_s: default limit for a whole `infer` call (None: no limit); per call with `timeout_s=`.
    retry: when and how often to retry (`RetryPolicy`, `NO_RETRY`): failures of a server (down,
        draining, a dead model stub) go to another endpoint at once, or to the same one after a
        backoff when it is the only one; a wrong request (INVALID_ARGUMENT) fails at once.
    use_shared_memory: True, or a byte threshold on a request's inputs: pass tensors through system
        shared memory (the server must run on the same machine).
    split_batches: split a batch larger than the model's max batch size into several requests.
    cooldown_s: how long an endpoint that failed is first set aside (doubling while it keeps failing).
    admin_key: the servers' admin key, sent only on restricted calls (shared memory registration and
        unregistration), never on inference; a server that refuses it raises `AdminKeyError`.

    Deadlines: each attempt of an `infer` call sends the time the call has left twice: as the gRPC
    deadline (tritonclient's `client_timeout`) and as the request's own `timeout` parameter
    (microseconds). What the server makes of them (Triton 2.51, measured): a request still queued
    when its deadline passes is dropped where the model's dynamic batcher has a queue policy with
    `allow_timeout_override: true`; the `timeout` parameter counts there too when the policy's
    `default_timeout_microseconds` is longer (the server answers "Request timeout expired", which the
    client reports as its own timeout). Without such a policy an abandoned request still runs, and a
    request the model already executes always runs to its end. Metadata calls carry the deadline only.

    Thread-safe: one client (one gRPC channel per endpoint) can serve many threads. `endpoint_stats()`
    tells, per endpoint, the requests, failures by kind, retries sent elsewhere and latency.
    """

    def _open(self) -> None:
        self._ring = self._make_ring(grpcclient.InferenceServerClient)
        self._info_lock = threading.Lock()
        self._refresh_lock = threading.Lock()  # one refresh and ring update at a time, in order

    # -- public API -------------------------------------------------------------------------------

    def infer(self, model: str, inputs: Inputs, *, outputs: Sequence[str] | None = None,
              timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """Run `model` on `inputs` (dict name -> array, or one array for a one-input model); returns
        output name -> array. Raises RequestError (nothing sent) when the inputs do not fit."""
        info = self._models.get(model) or self.model_info(model)
        request = prepare(info, inputs, outputs, split_batches=self.split_batches)
        timeout_s, deadline = self._deadline(timeout_s)
        if request.batch <= info.max_batch_size:
            return self._with_retries(model, timeout_s, deadline, self._send, request, counted=True)
        return concat_outputs([self._with_retries(model, timeout_s, deadline, self._send, chunk, counted=True)
                               for chunk in request.split(info.max_batch_size)])

    def model_info(self, model: str, *, refresh: bool = False) -> ModelInfo:
        """The model's inputs, outputs and max batch size, from the server; read once, then cached."""
        self._check_open()
        info = None if refresh else self._models.get(model)
        if info is not None:
            return info
        with self._info_lock:  # threads that need the same model at once wait for one fetch
            info = None if refresh else self._models.get(model)
            if info is None:
                timeout_s, deadline = self._deadline(None)
                info = self._with_retries(model, timeout_s, deadline, self._fetch_info, model)
                self._models[model] = info
        return info

    def wait_ready(self, timeout_s: float = 30.0, model: str | None = None, *, every: bool = False) -> list[str]:
        """Block until an endpoint (every endpoint with `every=True`) is ready, and `model` too when
        given; returns the ready URLs. Raises NotReadyError after `timeout_s`."""
        self._check_open()
        deadline = time.monotonic() + timeout_s
        last = {}
        while True:
            self._maybe_refresh()
            ready = []
            for endpoint in self._ring.endpoints:
                if not self._ring.acquire(endpoint):  # removed meanwhile
                    continue
                left = deadline - time.monotonic()
                try:
                    t = min(max(left, 0.05), 1.0)
                    if (endpoint.client.is_server_ready(client_timeout=t)
                            and (model is None or endpoint.client.is_model_ready(model, client_timeout=t))):
                        ready.append(endpoint.url)
                        self._ring.mark_up(endpoint)
                    else:
                        last[endpoint.url] = "not ready" if model is None else f"model {model} not ready"
                except InferenceServerException as e:
                    last[endpoint.url] = str(e)
                finally:
                    self._finish(endpoint, 0.0, False, None)
            done, pause = self._readiness(ready, last, every, deadline, timeout_s)
            if done is not None:
                return done
            time.sleep(pause)

    def endpoint_stats(self) -> list[EndpointStats]:
        """A record per endpoint since the client added it: the current ones in order, then recently
        removed ones (`removed=True`). Counts inference attempts, not the metadata reads."""
        return self._ring_stats(self._ring)

    def refresh(self) -> list[str]:
        """Resolve every DNS name and read every endpoints file now; returns the endpoints' URLs."""
        self._check_open()
        self._refresh(force=True)
        return self.urls

    def close(self) -> None:
        """Unregister and destroy shared memory regions, then close the channels. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for endpoint in self._ring.close_all():
            self._close_endpoint(endpoint, wait_s=UNREGISTER_WAIT_S)

    def __enter__(self) -> "TritonClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one call, retried ------------------------------------------------------------------------

    def _with_retries(self, model: str, timeout_s: float | None, deadline: float | None,
                      call: Callable[..., T], *args, counted: bool = False) -> T:
        """`call(endpoint, client_timeout, *args)`, retried on other endpoints or after a backoff.
        `counted`: book each attempt in the endpoint's stats (inference, not metadata)."""
        self._check_open()
        self._maybe_refresh()
        ring = self._ring
        attempts = self._attempts(f"model {model}", timeout_s, deadline)
        failed_on = None
        while True:
            client_timeout = attempts.client_timeout()
            endpoint = ring.pick(attempts.tried_elsewhere_only)
            self._note_retry(failed_on, endpoint, counted)
            if counted:
                endpoint.counters.sent()
            sent_at = time.monotonic()
            try:
                result = call(endpoint, client_timeout, *args)
            except InferenceServerException as error:
                self._finish(endpoint, sent_at, counted, error)
                wait = self._after_failure(ring, attempts, endpoint, error, sent_at)
                failed_on = endpoint
                if wait:
                    time.sleep(wait)
                continue
            except BaseException as error:
                self._finish(endpoint, sent_at, counted, error)
                raise
            self._finish(endpoint, sent_at, counted, None)
            ring.succeeded(endpoint, sent_at)
            return result

    def _finish(self, endpoint: Endpoint, sent_at: float, counted: bool, error: BaseException | None) -> None:
        if self._book(self._ring, endpoint, sent_at, counted, error):
            try:
                self._close_endpoint(endpoint)
            except Exception:  # the call itself went well: closing a removed endpoint must not fail it
                log.exception("closing removed endpoint %s failed", endpoint.url)

    # -- discovery --------------------------------------------------------------------------------

    def _maybe_refresh(self) -> None:
        """Once per refresh period, look again in a thread of its own: a slow resolver delays no call."""
        if self._discovery.due():
            threading.Thread(target=self._refresh_quietly, name="tritonize-discovery", daemon=True).start()

    def _refresh_quietly(self) -> None:
        try:
            self._refresh()
        except Exception:  # a background thread has no caller to tell: log it, calls go on as they were
            log.exception("refreshing the endpoints of %r failed", self)

    def _refresh(self, force: bool = False) -> None:
        with self._refresh_lock:
            self._discovery.refresh(force)  # logs its own failures and keeps the last good set
            if self._closed or not self._stale(self._ring):
                return
            to_close = self._ring.update(self._discovery.urls)
        for endpoint in to_close:
            self._close_endpoint(endpoint)

    def _close_endpoint(self, endpoint: Endpoint, wait_s: float = 0.0) -> None:
        """Unregister and destroy its shared memory regions, then close its channel."""
        try:
            for region in endpoint.regions.take_all():
                endpoint.regions.discard(region)
            self._unregister_pending(endpoint, wait_s=wait_s)
        finally:
            endpoint.client.close()

    @staticmethod
    def _fetch_info(endpoint: Endpoint, client_timeout: float | None, model: str) -> ModelInfo:
        return ModelInfo.from_server(endpoint.client.get_model_metadata(model, client_timeout=client_timeout),
                                     endpoint.client.get_model_config(model, client_timeout=client_timeout).config)

    def _send(self, endpoint: Endpoint, client_timeout: float | None, request: Request) -> dict[str, np.ndarray]:
        if self._wants_shm(request):
            return self._send_shared(endpoint, request, client_timeout)
        result = endpoint.client.infer(request.model.name, build_inputs(grpcclient, request),
                                       outputs=build_outputs(grpcclient, request), client_timeout=client_timeout,
                                       timeout=server_timeout_us(client_timeout))
        return read_outputs(result, request)

    def _send_shared(self, endpoint: Endpoint, request: Request,
                     client_timeout: float | None) -> dict[str, np.ndarray]:
        pool = endpoint.regions
        if pool.has_pending:
            self._unregister_pending(endpoint)
        layout = Layout.plan(request)
        region = pool.take(layout.byte_size)
        done = False
        try:
            if not region.registered:
                region.registered = True  # set first: a registration the client timed out on may still exist
                self._register(endpoint, region, client_timeout)
            layout.write_inputs(region)
            result = endpoint.client.infer(request.model.name, layout.infer_inputs(grpcclient, region, request),
                                           outputs=layout.requested_outputs(grpcclient, region),
                                           client_timeout=client_timeout, timeout=server_timeout_us(client_timeout))
            outputs = layout.read_outputs(result, region, request)
            done = True
            return outputs
        finally:
            if done:
                evicted = pool.give_back(region)
                if evicted is not None:
                    pool.discard(evicted)
                    self._unregister_pending(endpoint)
            else:
                pool.discard(region)

    def _register(self, endpoint: Endpoint, region: Region, client_timeout: float | None) -> None:
        """Register a region with the server: a restricted call, so it carries the admin key."""
        try:
            endpoint.client.register_system_shared_memory(region.name, region.key, region.byte_size,
                                                          headers=self._admin_headers, client_timeout=client_timeout)
        except InferenceServerException as error:
            if is_restricted(error):
                raise self._refused(endpoint, "shared memory registration", error, key_sent=True) from error
            raise

    def _unregister_pending(self, endpoint: Endpoint, wait_s: float = 0.0) -> None:
        """Unregister the regions waiting for it; those still in use wait up to `wait_s` more."""
        deadline = time.monotonic() + wait_s
        while True:
            still_used = []
            for name in endpoint.regions.take_pending():
                try:
                    endpoint.client.unregister_system_shared_memory(name, headers=self._admin_headers,
                                                                      client_timeout=CONTROL_TIMEOUT_S)
                except InferenceServerException as e:
                    if is_in_use(e):
                        still_used.append(name)
                    # Anything else (server gone, name unknown): nothing is left to unregister.
            if not still_used or time.monotonic() >= deadline:
                endpoint.regions.requeue_pending(still_used)
                return
            endpoint.regions.requeue_pending(still_used)
            time.sleep(UNREGISTER_POLL_S)
