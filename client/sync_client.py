"""`TritonClient`: blocking inference over gRPC with tritonclient underneath."""
from __future__ import annotations

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

T = TypeVar("T")


class TritonClient(ClientCore):
    """A blocking client for one or more Triton servers (gRPC).

    >>> with TritonClient("127.0.0.1:8001") as client:
    ...     logits = client.infer("mlp", np.zeros((1, 784), np.float32))["logits"]

    urls: one `host:port` or several; calls are spread round-robin over those that are up.
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

    Thread-safe: one client (one gRPC channel per endpoint) can serve many threads.
    """

    def _open(self) -> None:
        self._ring = self._make_ring(grpcclient.InferenceServerClient)
        self._info_lock = threading.Lock()

    # -- public API -------------------------------------------------------------------------------

    def infer(self, model: str, inputs: Inputs, *, outputs: Sequence[str] | None = None,
              timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """Run `model` on `inputs` (dict name -> array, or one array for a one-input model); returns
        output name -> array. Raises RequestError (nothing sent) when the inputs do not fit."""
        info = self._models.get(model) or self.model_info(model)
        request = prepare(info, inputs, outputs, split_batches=self.split_batches)
        timeout_s, deadline = self._deadline(timeout_s)
        if request.batch <= info.max_batch_size:
            return self._with_retries(model, timeout_s, deadline, self._send, request)
        return concat_outputs([self._with_retries(model, timeout_s, deadline, self._send, chunk)
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
            ready = []
            for endpoint in self._ring.endpoints:
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
            done, pause = self._readiness(ready, last, every, deadline, timeout_s)
            if done is not None:
                return done
            time.sleep(pause)

    def close(self) -> None:
        """Unregister and destroy shared memory regions, then close the channels. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for endpoint in self._ring.endpoints:
            try:
                for region in endpoint.regions.take_all():
                    endpoint.regions.discard(region)
                self._unregister_pending(endpoint, wait_s=UNREGISTER_WAIT_S)
            finally:
                endpoint.client.close()

    def __enter__(self) -> "TritonClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one call, retried ------------------------------------------------------------------------

    def _with_retries(self, model: str, timeout_s: float | None, deadline: float | None,
                      call: Callable[..., T], *args) -> T:
        """`call(endpoint, client_timeout, *args)`, retried on other endpoints or after a backoff."""
        self._check_open()
        ring = self._ring
        attempts = self._attempts(f"model {model}", timeout_s, deadline)
        while True:
            endpoint = ring.pick(attempts.tried_elsewhere_only)
            sent_at = time.monotonic()
            try:
                result = call(endpoint, attempts.client_timeout(), *args)
            except InferenceServerException as error:
                wait = self._after_failure(ring, attempts, endpoint, error, sent_at)
                if wait:
                    time.sleep(wait)
                continue
            ring.succeeded(endpoint, sent_at)
            return result

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
