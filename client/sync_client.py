"""`TritonClient`: blocking inference over gRPC with tritonclient underneath."""
from __future__ import annotations

import logging
import threading
import time
from typing import Sequence, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient

from .core import UNREGISTER_WAIT_S, ClientCore
from .endpoints import Endpoint
from .flow import Flow, FlowRun
from .model_info import ModelInfo
from .request import Inputs, concat_outputs
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
        chunks = self._infer_flows(model, info, inputs, outputs, timeout_s)
        if len(chunks) == 1:
            return self._run(chunks[0])
        return concat_outputs([self._run(chunk) for chunk in chunks])

    def model_info(self, model: str, *, refresh: bool = False) -> ModelInfo:
        """The model's inputs, outputs and max batch size, from the server; read once, then cached."""
        self._check_open()
        info = None if refresh else self._models.get(model)
        if info is not None:
            return info
        with self._info_lock:  # threads that need the same model at once wait for one fetch
            info = None if refresh else self._models.get(model)
            if info is None:
                info = self._models[model] = self._run(self._info_flow(model))
        return info

    def wait_ready(self, timeout_s: float = 30.0, model: str | None = None, *, every: bool = False) -> list[str]:
        """Block until an endpoint (every endpoint with `every=True`) is ready, and `model` too when
        given; returns the ready URLs. Raises NotReadyError after `timeout_s`."""
        return self._run(self._ready_flow(timeout_s, model, every))

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

    # -- taking a flow's steps (flow.py): blocking calls and sleeps -------------------------------

    @staticmethod
    def _run(flow: Flow[T]) -> T:
        run = FlowRun(flow)
        while not run.finished:
            with run:
                run.outcome = run.step.start(time.sleep)
        return run.result

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

    def _close_removed(self, endpoint: Endpoint) -> None:
        try:
            self._close_endpoint(endpoint)
        except Exception:  # the call itself went well: closing a removed endpoint must not fail it
            log.exception("closing removed endpoint %s failed", endpoint.url)

    def _close_endpoint(self, endpoint: Endpoint, wait_s: float = 0.0) -> None:
        """Unregister and destroy its shared memory regions, then close its channel."""
        try:
            self._run(self._release_regions(endpoint, wait_s))
        finally:
            endpoint.client.close()
