"""`AsyncTritonClient`: the same surface as `TritonClient`, for asyncio, on tritonclient.grpc.aio."""
from __future__ import annotations

import asyncio
import logging
from typing import Sequence, TypeVar

import numpy as np
import tritonclient.grpc.aio as aioclient

from .core import UNREGISTER_WAIT_S, ClientCore
from .endpoints import Endpoint, EndpointRing
from .flow import Flow, FlowRun
from .model_info import ModelInfo
from .request import Inputs, concat_outputs
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
        chunks = self._infer_flows(model, info, inputs, outputs, timeout_s)
        if len(chunks) == 1:
            return await self._run(chunks[0])
        tasks = [asyncio.ensure_future(self._run(chunk)) for chunk in chunks]
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
            fetch = asyncio.ensure_future(self._run(self._info_flow(model)))
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
        return await self._run(self._ready_flow(timeout_s, model, every))

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

    # -- taking a flow's steps (flow.py): awaited calls and sleeps ---------------------------------

    @staticmethod
    async def _run(flow: Flow[T]) -> T:
        run = FlowRun(flow)
        while not run.finished:
            with run:
                run.outcome = await run.step.start(asyncio.sleep)
        return run.result

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

    def _close_removed(self, endpoint: Endpoint) -> None:
        """In a task of its own (no await here: this also runs while a call is being cancelled)."""
        self._spawn(self._close_quietly(endpoint), self._closings)

    async def _close_endpoint(self, endpoint: Endpoint, wait_s: float = 0.0) -> None:
        """Unregister and destroy its shared memory regions, then close its channel."""
        try:
            await self._run(self._release_regions(endpoint, wait_s))
        finally:
            await endpoint.client.close()
