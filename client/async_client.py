"""`AsyncTritonClient`: the same surface as `TritonClient`, for asyncio, on tritonclient.grpc.aio."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Sequence, TypeVar

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from .core import CONTROL_TIMEOUT_S, UNREGISTER_POLL_S, UNREGISTER_WAIT_S, ClientCore, is_in_use
from .endpoints import Endpoint, EndpointRing
from .errors import is_restricted
from .model_info import ModelInfo
from .request import Inputs, Request, build_inputs, build_outputs, concat_outputs, prepare, read_outputs
from .retry import server_timeout_us
from .shared_memory import Layout, Region
from .stats import EndpointStats

T = TypeVar("T")
log = logging.getLogger(__name__)


class AsyncTritonClient(ClientCore):
    """An asyncio client for one or more Triton servers (gRPC); options as for `TritonClient`.

    >>> async with AsyncTritonClient("127.0.0.1:8001") as client:
    ...     outputs = await client.infer("mlp", x)

    Chunks of a split batch are sent concurrently. The gRPC channels are opened on first use, inside
    the running event loop (an aio channel belongs to the loop it was made in); use one client per
    event loop. Discovery resolves names in the loop's default executor, so the loop never waits on a
    resolver.
    """

    def _open(self) -> None:
        self._ring_or_none: EndpointRing | None = None
        self._fetching: dict[str, asyncio.Future] = {}
        # Background tasks, kept from the GC: refreshes (cancelled by close) and closings (awaited by close).
        self._refreshes: set[asyncio.Future] = set()
        self._closings: set[asyncio.Future] = set()
        self._refresh_lock = asyncio.Lock()  # binds to the loop on first use (Python >= 3.10)

    @property
    def _ring(self) -> EndpointRing:
        if self._ring_or_none is None:
            self._check_open()
            self._ring_or_none = self._make_ring(aioclient.InferenceServerClient)
        return self._ring_or_none

    # -- public API -------------------------------------------------------------------------------

    async def infer(self, model: str, inputs: Inputs, *, outputs: Sequence[str] | None = None,
                    timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """As `TritonClient.infer`; the chunks of a split batch are in flight together."""
        info = self._models.get(model) or await self.model_info(model)
        request = prepare(info, inputs, outputs, split_batches=self.split_batches)
        timeout_s, deadline = self._deadline(timeout_s)
        if request.batch <= info.max_batch_size:
            return await self._with_retries(model, timeout_s, deadline, self._send, request, counted=True)
        tasks = [asyncio.ensure_future(self._with_retries(model, timeout_s, deadline, self._send, chunk,
                                                          counted=True))
                 for chunk in request.split(info.max_batch_size)]
        try:
            return concat_outputs(list(await asyncio.gather(*tasks)))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def model_info(self, model: str, *, refresh: bool = False) -> ModelInfo:
        """As `TritonClient.model_info`."""
        self._check_open()
        info = None if refresh else self._models.get(model)
        if info is not None:
            return info
        # Requests that need the same model at once share one fetch. Each waiter is shielded, so a
        # cancelled caller does not cancel the fetch the others wait for.
        fetch = self._fetching.get(model)
        if fetch is None or refresh:
            timeout_s, deadline = self._deadline(None)
            fetch = asyncio.ensure_future(self._with_retries(model, timeout_s, deadline, self._fetch_info, model))
            self._fetching[model] = fetch
            fetch.add_done_callback(lambda done, name=model: self._fetched(name, done))
        return await asyncio.shield(fetch)

    def _fetched(self, model: str, fetch: asyncio.Future) -> None:
        if self._fetching.get(model) is fetch:
            del self._fetching[model]
        if not fetch.cancelled() and fetch.exception() is None:  # exception() also marks it as seen
            self._models[model] = fetch.result()

    async def wait_ready(self, timeout_s: float = 30.0, model: str | None = None, *,
                         every: bool = False) -> list[str]:
        """As `TritonClient.wait_ready`."""
        self._check_open()
        deadline = time.monotonic() + timeout_s
        last = {}
        while True:
            self._maybe_refresh()
            ready = []
            for endpoint in self._ring.endpoints:
                if not self._ring.acquire(endpoint):  # removed meanwhile
                    continue
                t = min(max(deadline - time.monotonic(), 0.05), 1.0)
                try:
                    if (await endpoint.client.is_server_ready(client_timeout=t)
                            and (model is None or await endpoint.client.is_model_ready(model, client_timeout=t))):
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
            await asyncio.sleep(pause)

    def endpoint_stats(self) -> list[EndpointStats]:
        """As `TritonClient.endpoint_stats`; empty until the first call opens the channels."""
        return self._ring_stats(self._ring_or_none)

    async def refresh(self) -> list[str]:
        """As `TritonClient.refresh`."""
        self._check_open()
        await self._refresh(force=True)
        return self.urls

    async def close(self) -> None:
        """As `TritonClient.close`."""
        if self._closed:
            return
        self._closed = True
        for task in self._refreshes:  # moot now; a closing in flight goes on to its channel's close
            task.cancel()
        await asyncio.gather(*self._refreshes, *self._closings, return_exceptions=True)
        if self._ring_or_none is None:
            return
        for endpoint in self._ring_or_none.close_all():
            await self._close_endpoint(endpoint, wait_s=UNREGISTER_WAIT_S)

    async def __aenter__(self) -> "AsyncTritonClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # -- one call, retried ------------------------------------------------------------------------

    async def _with_retries(self, model: str, timeout_s: float | None, deadline: float | None,
                            call: Callable[..., Awaitable[T]], *args, counted: bool = False) -> T:
        """`await call(endpoint, client_timeout, *args)`, retried on other endpoints or after a backoff;
        `counted` as in `TritonClient`."""
        self._check_open()
        ring = self._ring
        self._maybe_refresh()
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
                result = await call(endpoint, client_timeout, *args)
            except InferenceServerException as error:
                self._finish(endpoint, sent_at, counted, error)
                wait = self._after_failure(ring, attempts, endpoint, error, sent_at)
                failed_on = endpoint
                if wait:
                    await asyncio.sleep(wait)
                continue
            except BaseException as error:  # a cancelled call too: it must let go of the endpoint
                self._finish(endpoint, sent_at, counted, error)
                raise
            self._finish(endpoint, sent_at, counted, None)
            ring.succeeded(endpoint, sent_at)
            return result

    def _finish(self, endpoint: Endpoint, sent_at: float, counted: bool, error: BaseException | None) -> None:
        """Book the attempt; the last call of a removed endpoint closes it, in a task of its own (no await
        here: this also runs while a call is being cancelled)."""
        if self._book(self._ring, endpoint, sent_at, counted, error):
            self._spawn(self._close_quietly(endpoint), self._closings)

    # -- discovery --------------------------------------------------------------------------------

    @staticmethod
    def _spawn(coroutine, tasks: set[asyncio.Future]) -> None:
        task = asyncio.ensure_future(coroutine)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _maybe_refresh(self) -> None:
        if self._discovery.due():
            self._spawn(self._refresh_quietly(), self._refreshes)

    async def _refresh_quietly(self) -> None:
        try:
            await self._refresh()
        except Exception:  # a background task has no caller to tell: log it, calls go on as they were
            log.exception("refreshing the endpoints of %r failed", self)

    async def _refresh(self, force: bool = False) -> None:
        async with self._refresh_lock:
            # In the default executor: getaddrinfo blocks, and the loop must not.
            await asyncio.get_running_loop().run_in_executor(None, self._discovery.refresh, force)
            ring = self._ring_or_none  # none yet: the ring, when made, starts from the latest set
            if self._closed or ring is None or not self._stale(ring):
                return
            to_close = ring.update(self._discovery.urls)
        for endpoint in to_close:
            await self._close_quietly(endpoint)

    async def _close_quietly(self, endpoint: Endpoint) -> None:
        try:
            await self._close_endpoint(endpoint)
        except Exception:
            log.exception("closing removed endpoint %s failed", endpoint.url)

    async def _close_endpoint(self, endpoint: Endpoint, wait_s: float = 0.0) -> None:
        """Unregister and destroy its shared memory regions, then close its channel."""
        try:
            for region in endpoint.regions.take_all():
                endpoint.regions.discard(region)
            await self._unregister_pending(endpoint, wait_s=wait_s)
        finally:
            await endpoint.client.close()

    @staticmethod
    async def _fetch_info(endpoint: Endpoint, client_timeout: float | None, model: str) -> ModelInfo:
        metadata = await endpoint.client.get_model_metadata(model, client_timeout=client_timeout)
        config = await endpoint.client.get_model_config(model, client_timeout=client_timeout)
        return ModelInfo.from_server(metadata, config.config)

    async def _send(self, endpoint: Endpoint, client_timeout: float | None,
                    request: Request) -> dict[str, np.ndarray]:
        if self._wants_shm(request):
            return await self._send_shared(endpoint, request, client_timeout)
        # tritonclient.grpc.aio takes the request objects of tritonclient.grpc.
        result = await endpoint.client.infer(request.model.name, build_inputs(grpcclient, request),
                                             outputs=build_outputs(grpcclient, request),
                                             client_timeout=client_timeout,
                                             timeout=server_timeout_us(client_timeout))
        return read_outputs(result, request)

    async def _send_shared(self, endpoint: Endpoint, request: Request,
                           client_timeout: float | None) -> dict[str, np.ndarray]:
        pool = endpoint.regions
        if pool.has_pending:
            await self._unregister_pending(endpoint)
        layout = Layout.plan(request)
        region = pool.take(layout.byte_size)
        done = False
        try:
            if not region.registered:
                region.registered = True  # set first: a registration the client timed out on may still exist
                await self._register(endpoint, region, client_timeout)
            layout.write_inputs(region)
            result = await endpoint.client.infer(request.model.name,
                                                 layout.infer_inputs(grpcclient, region, request),
                                                 outputs=layout.requested_outputs(grpcclient, region),
                                                 client_timeout=client_timeout,
                                                 timeout=server_timeout_us(client_timeout))
            outputs = layout.read_outputs(result, region, request)
            done = True
        finally:
            # No await on the failure path: it also runs when the task is cancelled.
            evicted = pool.give_back(region) if done else None
            if not done:
                pool.discard(region)
            elif evicted is not None:
                pool.discard(evicted)
        if pool.has_pending:
            await self._unregister_pending(endpoint)
        return outputs

    async def _register(self, endpoint: Endpoint, region: Region, client_timeout: float | None) -> None:
        """Register a region with the server: a restricted call, so it carries the admin key."""
        try:
            await endpoint.client.register_system_shared_memory(region.name, region.key, region.byte_size,
                                                                headers=self._admin_headers,
                                                                client_timeout=client_timeout)
        except InferenceServerException as error:
            if is_restricted(error):
                raise self._refused(endpoint, "shared memory registration", error, key_sent=True) from error
            raise

    async def _unregister_pending(self, endpoint: Endpoint, wait_s: float = 0.0) -> None:
        """As in `TritonClient`: unregister what waits for it; regions still in use wait up to `wait_s`."""
        deadline = time.monotonic() + wait_s
        while True:
            still_used = []
            for name in endpoint.regions.take_pending():
                try:
                    await endpoint.client.unregister_system_shared_memory(name, headers=self._admin_headers,
                                                                            client_timeout=CONTROL_TIMEOUT_S)
                except InferenceServerException as e:
                    if is_in_use(e):
                        still_used.append(name)
            endpoint.regions.requeue_pending(still_used)
            if not still_used or time.monotonic() >= deadline:
                return
            await asyncio.sleep(UNREGISTER_POLL_S)
