"""System shared memory for large tensors: the bytes go through /dev/shm instead of the gRPC message.

Creating a segment and registering it with the server costs two system calls and an RPC, so
regions are pooled per endpoint and reused: a request takes an idle region big enough for its inputs
and outputs (or makes a new one), the client registers it once, and gives it back after the call.
A region whose call failed is never reused (the server may still be reading it after a client
timeout, or may have restarted and forgotten it): its segment is destroyed at once, so nothing is
left in /dev/shm, and its server-side registration is removed later (`pending_unregister`), since
Triton refuses to unregister a region a request still uses. `close()` of the client unregisters and
destroys everything left.

`RegionPool` only keeps the books and touches local segments; the clients do the RPCs, so the same
pool serves the sync and the asyncio client.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import threading
from dataclasses import dataclass, field

import numpy as np
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import serialize_byte_tensor

from .request import Request, wire_array

ALIGN = 64  # each tensor starts on a cache line
MIN_REGION_BYTES = 64 * 1024
MAX_IDLE_REGIONS = 4
KEY_PREFIX = "tritonize_client"

_region_ids = itertools.count()


@dataclass(eq=False)
class Region:
    name: str  # the name the server knows it by
    key: str  # the POSIX shared memory key: /dev/shm/<key without the slash>
    byte_size: int
    handle: shm.SharedMemoryRegion
    registered: bool = False


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def region_size(nbytes: int) -> int:
    """Regions come in powers of two, so a pooled one fits the next request of a similar size."""
    return max(MIN_REGION_BYTES, 1 << max(nbytes - 1, 0).bit_length())


class RegionPool:
    """The shared memory regions of one endpoint."""

    def __init__(self, max_idle: int = MAX_IDLE_REGIONS):
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: list[Region] = []
        self._in_use: set[Region] = set()
        self._pending_unregister: list[str] = []

    def take(self, nbytes: int) -> Region:
        """The smallest idle region of at least `nbytes`, else a new segment (not yet registered)."""
        with self._lock:
            fitting = [r for r in self._idle if r.byte_size >= nbytes]
            if fitting:
                region = min(fitting, key=lambda r: r.byte_size)
                self._idle.remove(region)
                self._in_use.add(region)
                return region
        n = next(_region_ids)
        name = f"{KEY_PREFIX}_{os.getpid()}_{n}"
        size = region_size(nbytes)
        region = Region(name, f"/{name}", size, shm.create_shared_memory_region(name, f"/{name}", size, create_only=True))
        with self._lock:
            self._in_use.add(region)
        return region

    def give_back(self, region: Region) -> Region | None:
        """Return a region after a successful call; the smallest idle region comes back when more than
        `max_idle` are idle, for the caller to unregister and destroy."""
        with self._lock:
            self._in_use.discard(region)
            self._idle.append(region)
            if len(self._idle) <= self.max_idle:
                return None
            evicted = min(self._idle, key=lambda r: r.byte_size)
            self._idle.remove(evicted)
            return evicted

    def discard(self, region: Region) -> None:
        """Destroy the segment now; a registered region is unregistered later (see module doc)."""
        with self._lock:
            self._in_use.discard(region)
            self._idle = [r for r in self._idle if r is not region]
            if region.registered:
                self._pending_unregister.append(region.name)
        destroy_segment(region)

    def discard_idle(self) -> None:
        """Forget every idle region: after the server restarted, none of them is registered there."""
        with self._lock:
            idle, self._idle = self._idle, []
        for region in idle:
            self.discard(region)

    def take_pending(self) -> list[str]:
        with self._lock:
            names, self._pending_unregister = self._pending_unregister, []
            return names

    def requeue_pending(self, names: list[str]) -> None:
        with self._lock:
            self._pending_unregister.extend(names)

    def take_all(self) -> list[Region]:
        """Every region this pool holds, idle or not, removed from it (for close)."""
        with self._lock:
            regions = self._idle + list(self._in_use)
            self._idle, self._in_use = [], set()
            return regions

    @property
    def has_pending(self) -> bool:
        return bool(self._pending_unregister)


def destroy_segment(region: Region) -> None:
    """Close and unlink the local segment; the server's own mapping, if any, stays valid."""
    with contextlib.suppress(FileNotFoundError, KeyError):
        shm.destroy_shared_memory_region(region.handle)


@dataclass
class Placement:
    name: str
    offset: int
    nbytes: int


@dataclass
class Layout:
    """Where each tensor of one request lies in its region: inputs first, then the outputs whose size
    is known in advance (numeric, fixed non-batch axes). Other outputs come back in the response."""

    inputs: list[Placement] = field(default_factory=list)
    input_data: list[np.ndarray] = field(default_factory=list)
    outputs: list[Placement] = field(default_factory=list)
    response_outputs: list[str] = field(default_factory=list)
    byte_size: int = 0

    @classmethod
    def plan(cls, request: Request) -> "Layout":
        layout = cls()
        offset = 0
        by_name = request.model.inputs_by_name
        for name, x in request.arrays.items():
            tensor = by_name[name]
            data = serialize_byte_tensor(wire_array(tensor, x)) if tensor.is_bytes else x
            nbytes = len(data.item()) if tensor.is_bytes and data.size else data.nbytes
            layout.inputs.append(Placement(name, offset, nbytes))
            layout.input_data.append(data)
            offset = _round_up(offset + nbytes, ALIGN)
        names = request.outputs if request.outputs is not None else request.model.output_names
        for name in names:
            nbytes = request.model.outputs_by_name[name].fixed_nbytes(request.batch)
            if nbytes is None:
                layout.response_outputs.append(name)
                continue
            layout.outputs.append(Placement(name, offset, nbytes))
            offset = _round_up(offset + nbytes, ALIGN)
        layout.byte_size = max(offset, ALIGN)
        return layout

    def write_inputs(self, region: Region) -> None:
        for place, data in zip(self.inputs, self.input_data):
            if place.nbytes:
                shm.set_shared_memory_region(region.handle, [data], offset=place.offset)

    def infer_inputs(self, module, region: Region, request: Request) -> list:
        tensors = []
        by_name = request.model.inputs_by_name
        for place in self.inputs:
            x = request.arrays[place.name]
            tensor = module.InferInput(place.name, list(x.shape), by_name[place.name].datatype)
            tensor.set_shared_memory(region.name, place.nbytes, offset=place.offset)
            tensors.append(tensor)
        return tensors

    def requested_outputs(self, module, region: Region) -> list:
        requested = []
        for place in self.outputs:
            output = module.InferRequestedOutput(place.name)
            output.set_shared_memory(region.name, place.nbytes, offset=place.offset)
            requested.append(output)
        return requested + [module.InferRequestedOutput(name) for name in self.response_outputs]

    def read_outputs(self, result, region: Region, request: Request) -> dict[str, np.ndarray]:
        """Output name -> array; those in the region are copied out, since the region is reused."""
        placed = {p.name: p for p in self.outputs}
        out = {}
        for name in (request.outputs if request.outputs is not None else request.model.output_names):
            if name in placed:
                meta = result.get_output(name)
                dtype = request.model.outputs_by_name[name].np_dtype
                out[name] = np.array(shm.get_contents_as_numpy(region.handle, dtype, list(meta.shape),
                                                               offset=placed[name].offset))
            else:
                out[name] = result.as_numpy(name)
        return out
