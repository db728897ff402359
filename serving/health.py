"""Model health: a model whose Python-backend stub died is reloaded, without restarting the server.

When a stub process dies (killed, out of memory, a crash in native code), tritonserver 2.51 keeps the
model READY and fails every request to that instance with "Stub process '<instance>' is not
healthy." (python_backend 24.10 does not restart stubs). Readiness alone never shows it, so
`ModelHealth` also watches the stubs: tritonserver does not reap a stub that died on its own, so a
dead stub stays an exited child (state Z) of the server, while one stopped by an unload is reaped at
once and disappears. A cheap check, from /proc, once per interval: a stub still unreaped a moment
after it exited, of a model that still reports READY, died.

For such a model: unload it, wait (bounded) for the unload to end, load it again from the
repository (with the admin key, through one gRPC `TritonAdmin`), and remove the dead stub's shared
memory region. Unloading a model whose dead stub already failed a request never ends in 24.10 (the
old instance stays UNLOADING); the load replaces it all the same, so the wait is bounded and the load
goes ahead. That old instance then keeps the server's final shutdown waiting for its exit timeout.

A model whose stub dies again soon after a reload is reloaded after a growing delay (1 s, doubling up
to 60 s), so that a model that crashes on every request does not keep the server reloading.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .admin import AdminCallError, ModelState, TritonAdmin
from .reaper import children, stat_of, stub_args, unlink_regions

logger = logging.getLogger(__name__)
DEFAULT_INTERVAL_S = 1.0
UNLOAD_WAIT_S = 2.0  # a clean unload of a dead stub's model takes about 1 s (the backend's own health wait)
FIRST_DELAY_S, MAX_DELAY_S = 1.0, 60.0
CALM_S = 60.0  # a model that stays healthy this long after a reload starts again from no delay
REAP_GRACE_S = 0.2


@dataclass(frozen=True)
class Stub:
    pid: int
    model: str
    instance: str  # <model>_<group>_<index> for the default group names
    region: str  # its shared memory region in /dev/shm


class ModelHealth:
    """Watch a running TritonServer's stubs and reload a model whose stub died.

    >>> health = ModelHealth(server, report=print).start()   # a daemon thread, one check per interval
    >>> ...; health.stop()

    `check()` is one pass, for callers with their own loop. `report` gets one line per event."""

    def __init__(self, server, interval_s: float = DEFAULT_INTERVAL_S, report: Callable[[str], None] = logger.warning):
        if not interval_s > 0:
            raise ValueError(f"interval_s: expected seconds > 0, got {interval_s!r}")
        self.server = server
        self.interval_s = interval_s
        self.report = report
        self.reloads: dict[str, int] = {}  # model -> reloads done
        self._stubs: dict[int, Stub] = {}
        self._states: dict[str, str] = {}
        self._delay: dict[str, float] = {}
        self._last_reload: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # gRPC: its client serves the loop's thread and a caller's `check()` alike, with a timeout per call.
        self._admin = TritonAdmin(server.grpc_url, server.admin_key, load_timeout_s=server.ready_timeout_s)
        self._learn()

    def start(self) -> "ModelHealth":
        self._thread = threading.Thread(target=self._run, name="tritonize-model-health", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """End the loop (a reload under way finishes first, within `timeout_s`), and close the admin client."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():  # a reload still under way keeps using the client: leave it open
                return
        self._admin.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception as e:  # noqa: BLE001 - the loop must outlive one bad pass; the next one tries again
                self.report(f"model health check failed: {type(e).__name__}: {e}")

    def check(self) -> list[str]:
        """One pass: the models reloaded in it."""
        process = self.server.process
        if process is None or process.poll() is not None:
            return []
        states = self._watch_states()
        exited = self._exited(process.pid)
        if exited:
            # A stub that an unload stops also exits, and is reaped by the server at once: one that is
            # still unreaped a moment later died on its own.
            time.sleep(REAP_GRACE_S)
            exited = [stub for stub in self._exited(process.pid) if stub in exited]
        dead: dict[str, list[Stub]] = {}
        for stub in exited:
            if states is not None and (stub.model not in states or states[stub.model].state != "READY"):
                del self._stubs[stub.pid]  # the model is being unloaded or is gone: nothing to recover
            else:
                dead.setdefault(stub.model, []).append(stub)
        reloaded = [model for model, stubs in dead.items() if self._due(model) and self._reload(model, stubs)]
        self._learn()
        return reloaded

    def _exited(self, server_pid: int) -> list[Stub]:
        """The known stubs that exited and wait, unreaped, under the server; forgets the reaped ones."""
        exited = []
        for pid, stub in list(self._stubs.items()):
            found = stat_of(pid)
            if found is None or found[1] != server_pid:  # reaped: stopped by an unload, not dead on its own
                del self._stubs[pid]
            elif found[0] in "ZX":
                exited.append(stub)
        return exited

    def _learn(self) -> None:
        """Note the live stubs of the server (with the model and region each serves) while their
        command lines can still be read: the kernel drops an exited process's."""
        process = self.server.process
        if process is None:
            return
        for pid, state in children(process.pid):
            if pid in self._stubs or state in "ZX":
                continue
            args = stub_args(pid)
            if args is not None:  # args[1] is <repository>/<model>/<version>/model.py
                self._stubs[pid] = Stub(pid, Path(args[1]).parent.parent.name, args[8], args[2])
        self.server.note_regions()

    def _watch_states(self) -> dict[str, ModelState] | None:
        """The models' states (None if the server did not answer); reports a served model whose state
        changed (readiness is the other half of its health)."""
        try:
            states = self._admin.states()
        except AdminCallError as e:
            self.report(f"model health: cannot read the model states: {e}")
            return None
        for model in self.server.models:
            found = states.get(model)
            state, reason = (found.state, found.reason) if found is not None else ("", "")
            before = self._states.get(model)
            if before is not None and state != before:
                self.report(f"model {model}: {before or 'not loaded'} -> {state or 'not loaded'}"
                            + (f" ({reason})" if reason else ""))
            self._states[model] = state
        return states

    def _due(self, model: str) -> bool:
        last = self._last_reload.get(model)
        if last is None or time.monotonic() - last > CALM_S:
            self._delay[model] = 0.0
        return last is None or time.monotonic() - last >= self._delay[model]

    def _reload(self, model: str, stubs: list[Stub]) -> bool:
        which = ", ".join(f"{s.instance} (pid {s.pid})" for s in stubs)
        self.report(f"model {model}: stub {which} died; the model still reports READY and fails every request: "
                    "reloading it")
        started = time.monotonic()
        self._last_reload[model] = started
        self._delay[model] = min(max(2 * self._delay.get(model, 0.0), FIRST_DELAY_S), MAX_DELAY_S)
        try:
            self._admin.unload(model)
            stuck = not self._wait_unloaded(model, time.monotonic() + UNLOAD_WAIT_S)
            self._admin.load(model)
        except AdminCallError as e:
            self.report(f"model {model}: reload failed, next try in {self._delay[model]:g} s: {e}")
            return False
        for stub in stubs:
            self._stubs.pop(stub.pid, None)  # handled: an old instance that never unloads keeps its exited stub
        unlink_regions({s.region for s in stubs})
        self.reloads[model] = self.reloads.get(model, 0) + 1
        self.report(f"model {model}: reloaded in {time.monotonic() - started:.1f} s"
                    + ("; its old instance never finished unloading (python backend 24.10), so the server's "
                       "final stop waits for its exit timeout" if stuck else ""))
        return True

    def _wait_unloaded(self, model: str, deadline: float) -> bool:
        while time.monotonic() < deadline:
            state = self._admin.states().get(model)
            if state is None or state.state not in ("READY", "UNLOADING"):
                return True
            time.sleep(0.1)
        return False
