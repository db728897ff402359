"""Several real tritonservers on one machine, all reading the same repository: a stand-in for a cluster.

`Replicas` starts N `TritonServer`s side by side on free loopback ports, with one admin key for all (as
the pods of one Deployment share one Secret), each with its own model-health loop (serving/health.py) as
a single `serve` has, and stops them all in parallel, each with its drain. `endpoints()` gives each
replica's addresses and its tritonserver's pid, and `write_endpoints_file` writes them as the JSON list
that clients and scripts read (serving/endpoints_file.py, the file's one writer and one reader).

It is for tests, demos and one machine's serving (round-robin, failover, a drained or killed replica),
not an orchestrator: nothing is rescheduled elsewhere or scaled. A replica whose tritonserver dies is
restarted on its own ports by `heal()`, which its owner calls now and then (`tritonize serve` every half
second): after a back-off that doubles with each restart, up to a limit; then it is given up and leaves
`endpoints()`.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from .config import PORT_KINDS, ServerConfig, ServerConfigError, config_of
from .endpoints_file import ReplicaEndpoint, write_endpoints_file
from .health import DEFAULT_INTERVAL_S, ModelHealth
from .ports import distinct_free_ports
from .server import ServerError, TritonServer

PORTS_PER_SERVER = len(PORT_KINDS)  # http, grpc, metrics
# A dead replica's restarts: the first after a second (a crash that repeats at once, say a bad model in the
# store, then does not spin), each next one after twice as long, and after RESTART_LIMIT it is given up.
RESTART_BACKOFF_S = 1.0
RESTART_LIMIT = 5


@dataclass(frozen=True)
class ReplicaEvent:
    """What `heal()` did about one replica: "died" (with when it restarts), "restarted", "restart failed"
    or "gave up"; `detail` says how and why, in words."""
    index: int
    what: str
    detail: str


def endpoint_of(server: TritonServer) -> ReplicaEndpoint:
    """Where a started server answers, as the endpoints file has it."""
    if server.process is None:
        raise ServerError(f"{server!r}: expected a started server, got one not running")
    return ReplicaEndpoint(server.grpc_url, server.http_url, server.metrics_url, server.process.pid)


class Replicas:
    """N tritonservers on one repository, as a context manager.

    >>> with Replicas("s3://bucket/models", 3) as replicas:
    ...     replicas.write_endpoints_file("endpoints.json")
    ...     client = TritonClient([e.grpc for e in replicas.endpoints()])

    The servers' options are one ServerConfig (serving/config.py), given as `config` or as its fields as
    keywords, as TritonServer takes them; every replica runs a copy with free ports of its own (a port in
    the config is refused), and all share its admin key (a new random one when none is given), as the pods
    of one Deployment share one Secret. `health_interval_s` > 0 runs each replica's model-health loop, whose
    lines go to `report` prefixed with the replica; 0 runs none.
    """

    def __init__(self, repository: str | os.PathLike, count: int = 2, models: list[str] | None = None, *,
                 config: ServerConfig | None = None, health_interval_s: float = DEFAULT_INTERVAL_S,
                 report: Callable[[str], None] | None = None, restart_limit: int = RESTART_LIMIT,
                 restart_backoff_s: float = RESTART_BACKOFF_S, **options):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count: expected a number of replicas >= 1, got {count!r}")
        if isinstance(restart_limit, bool) or not isinstance(restart_limit, int) or restart_limit < 0:
            raise ValueError(f"restart_limit: expected restarts >= 0 per replica, got {restart_limit!r}")
        if not restart_backoff_s > 0:
            raise ValueError(f"restart_backoff_s: expected seconds > 0, got {restart_backoff_s!r}")
        if not health_interval_s >= 0:
            raise ValueError(f"health_interval_s: expected seconds >= 0 (0: no health loop), got {health_interval_s!r}")
        config = config_of(config, options)  # its admin key, made once if none was given, is every replica's
        fixed = {f"{kind}_port": port for kind, port in config.ports().items() if port}
        if fixed:
            raise ServerConfigError(f"{next(iter(fixed))}: expected none (each replica gets free ports), got "
                                    f"{', '.join(f'{name} {port}' for name, port in fixed.items())}")
        self.config = config
        self.health_interval_s = health_interval_s
        self.report = report
        ports = distinct_free_ports(PORTS_PER_SERVER * count)
        self.servers: list[TritonServer] = []
        for i in range(count):
            mine = ports[PORTS_PER_SERVER * i:PORTS_PER_SERVER * (i + 1)]
            own = replace(config, **{f"{kind}_port": port for kind, port in zip(PORT_KINDS, mine)})
            # The first server resolves the models (for s3://, one read of the store's index); the rest take its list.
            self.servers.append(TritonServer(repository, models if i == 0 else self.servers[0].models, config=own))
        self.health: list[ModelHealth | None] = [None] * count
        self._started: list[ReplicaEndpoint] = []
        self._stopped: set[int] = set()  # replicas stopped by us (stop_replica), not dead on their own
        self.restart_limit, self.restart_backoff_s = restart_limit, restart_backoff_s
        self.restarts = [0] * count  # each replica's restarts so far
        self._restart_at: dict[int, float] = {}  # dead replica -> when heal() restarts it
        self.gone: set[int] = set()  # replicas given up: out of endpoints()

    def __repr__(self) -> str:  # never the admin key
        return f"Replicas({len(self.servers)} x {str(self.servers[0].repository)!r})"

    def __len__(self) -> int:
        return len(self.servers)

    @property
    def admin_key(self) -> str:
        return self.config.admin_key

    @property
    def models(self) -> list[str]:
        return self.servers[0].models

    def start(self) -> "Replicas":
        """Start every replica side by side (a start mostly waits on the server loading its models), then
        their health loops. If any fails to start, all are stopped and its error is raised, naming it."""
        try:
            self._each(lambda i, server: server.start(), "start")
            self._started = [endpoint_of(s) for s in self.servers]
            if self.health_interval_s > 0:
                for i, server in enumerate(self.servers):
                    self.health[i] = ModelHealth(server, self.health_interval_s, self._reporter(i)).start()
        except BaseException:
            self.close()
            raise
        return self

    def _reporter(self, index: int) -> Callable[[str], None]:
        report = self.report or logging.getLogger(__name__).warning
        url = self.servers[index].grpc_url
        return lambda line: report(f"replica {index} ({url}): {line}")

    def endpoints(self) -> list[ReplicaEndpoint]:
        """Each replica's addresses and tritonserver pid (a restarted one's new pid), but those given up. A
        replica stopped or dead, and not yet given up, keeps its entry: clients of a cluster also see
        members go away, and come back."""
        if not self._started:
            raise ServerError(f"{self!r}: expected started replicas (start() or `with`), got none started")
        return [e for i, e in enumerate(self._started) if i not in self.gone]

    def heal(self) -> list[ReplicaEvent]:
        """Restart, on its own ports, each replica whose tritonserver died (not one stopped here), once its
        back-off has passed; give up one that has used its restarts. What was done, for the caller to
        report (and to rewrite the endpoints file on a restart or a give-up). A restart runs here, waiting
        for the server to be ready, while the other replicas serve on."""
        events = []
        for i, code in self.exited().items():
            if i in self.gone:
                continue
            if i not in self._restart_at:  # found dead now
                self._stop_health(i)
                if self.restarts[i] >= self.restart_limit:
                    self.gone.add(i)
                    events.append(ReplicaEvent(i, "gave up", f"tritonserver exited with code {code} after "
                                                             f"{self.restarts[i]} restart(s), the limit"))
                    continue
                delay = self.restart_backoff_s * 2 ** self.restarts[i]
                self._restart_at[i] = time.monotonic() + delay
                events.append(ReplicaEvent(i, "died", f"tritonserver exited with code {code}; restarting in "
                                                      f"{delay:g} s (restart {self.restarts[i] + 1} of "
                                                      f"{self.restart_limit})"))
            elif time.monotonic() >= self._restart_at[i]:
                del self._restart_at[i]
                self.restarts[i] += 1
                events.append(self._restart(i))
        return events

    def _restart(self, index: int) -> ReplicaEvent:
        server, started = self.servers[index], time.monotonic()
        server.stop()  # the dead one's leftovers: its stubs, its shared memory
        try:
            server.start()  # its own ports again; a failure leaves it stopped, found dead by the next heal()
        except ServerError as e:
            return ReplicaEvent(index, "restart failed", str(e).splitlines()[0])
        self._started[index] = endpoint_of(server)
        if self.health_interval_s > 0:
            self.health[index] = ModelHealth(server, self.health_interval_s, self._reporter(index)).start()
        return ReplicaEvent(index, "restarted", f"ready in {time.monotonic() - started:.1f} s, pid "
                                                f"{server.process.pid}")

    def _stop_health(self, index: int) -> None:
        if self.health[index] is not None:
            self.health[index].stop()
            self.health[index] = None

    def write_endpoints_file(self, path: str | os.PathLike) -> Path:
        return write_endpoints_file(path, self.endpoints())

    def exited(self) -> dict[int, int]:
        """Replica index -> exit code, for each tritonserver that ended without being stopped here."""
        return {i: s.process.returncode for i, s in enumerate(self.servers)
                if i not in self._stopped and s.process is not None and s.process.poll() is not None}

    def stop_replica(self, index: int) -> int | None:
        """Stop one replica as `stop` does (its health loop, then its drain); its exit code."""
        if not 0 <= index < len(self.servers):
            raise IndexError(f"replica: expected an index from 0 to {len(self.servers) - 1}, got {index}")
        self._stopped.add(index)
        self._stop_health(index)
        return self.servers[index].stop()

    def stop(self) -> list[int | None]:
        """Drain and stop every replica, all at once (each drain mostly waits: on the server to unload and on
        requests in flight); their exit codes, in replica order."""
        return self._each(lambda i, server: self.stop_replica(i), "stop")

    def close(self) -> None:
        """Stop every replica and remove its work folder."""
        def close_one(i: int, server: TritonServer) -> None:
            self.stop_replica(i)
            server.close()

        self._each(close_one, "close")

    def _each(self, call: Callable[[int, TritonServer], object], what: str) -> list:
        """`call(i, server)` for every replica in parallel; all run to the end before the first error is
        raised, so one failing replica does not leave the others unstarted or unstopped."""
        with ThreadPoolExecutor(len(self.servers), thread_name_prefix=f"tritonize-replicas-{what}") as pool:
            futures = [pool.submit(call, i, s) for i, s in enumerate(self.servers)]
        results, first = [], None
        for i, future in enumerate(futures):
            error = future.exception()
            if error is not None and first is None:
                first = (i, error)
            results.append(None if error is not None else future.result())
        if first is not None:
            i, error = first
            if isinstance(error, ServerError):  # one line first: which replica of how many, then the server's own
                raise ServerError(f"replica {i} of {len(self.servers)} ({self.servers[i].grpc_url}): {what}: "
                                  f"{error}") from error
            raise error
        return results

    def __enter__(self) -> "Replicas":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
