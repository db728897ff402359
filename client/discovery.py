"""Where a client's servers are: fixed addresses, a DNS name, or an endpoints file, re-read as they change.

A client is given one target or a list of them; its endpoints are the union of what they name, in
order, without repeats. Each target is told apart by its form alone:

- `dns:///NAME:PORT` (gRPC's target syntax; `dns:NAME:PORT` too; PORT defaults to 8001): every
  address behind NAME, IPv4 and IPv6 (`socket.getaddrinfo`), re-resolved every `refresh_s` (default
  30 s). A Kubernetes headless Service answers with one A record per ready pod, so the client sees
  each replica and balances over them itself.
- `file:PATH` (or `file:///PATH`), a str ending in `.json`, or any os.PathLike: the JSON list that
  `tritonize serve --replicas N --endpoints-file PATH` writes, `[{"grpc": "host:port", ...}, ...]`,
  re-read when its modification time (or size, or inode: an atomic rename) changes, looked at every
  `refresh_s` (default 2 s: a stat is cheap). A host:port ends in its port, so a .json name is a file.
- anything else: one `host:port` (`grpc://` dropped; a bare host gets port 8001; IPv6 in brackets).

The first resolution of every target happens in the constructor, and its failure is an error there:
a client that cannot name a single server is a mistake to report at once. Later, a resolution that
fails or names no server keeps that target's last good set and is logged (warning): a DNS hiccup or
a half-written file must not take the endpoints away from calls that are working.
"""
from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
from pathlib import Path
from socket import getaddrinfo
from typing import Sequence, Union

from ..serving.endpoints_file import EndpointsFileError, read_endpoints
from .endpoints import DEFAULT_PORT, normalize_url, split_host_port

log = logging.getLogger(__name__)

DNS_REFRESH_S = 30.0
FILE_REFRESH_S = 2.0
FORMS = "expected host:port, a list of them, dns:///NAME:PORT or an endpoints file (file:PATH or PATH.json)"

Target = Union[str, os.PathLike]


class DiscoveryError(ValueError):
    """A target named no server: a DNS name that does not resolve, an endpoints file that is missing,
    malformed or empty. Raised by the client's constructor; later failures are only logged."""


class Source:
    """One target: what it names now (`urls`), and when to look again."""

    target: str  # the canonical form, for repr, stats and messages
    dynamic = False
    urls: list[str]

    def __init__(self, refresh_s: float):
        self.refresh_s = refresh_s
        self.next_check = 0.0
        self.failing = ""  # the last resolution's error, "" when it succeeded

    def resolve(self) -> list[str] | None:
        """The URLs it names now, None when unchanged since the last call; DiscoveryError if none."""
        raise NotImplementedError


class Fixed(Source):
    def __init__(self, url: str):
        super().__init__(math.inf)
        self.target = url
        self.urls = [url]
        self.next_check = math.inf

    def resolve(self) -> list[str] | None:
        return None


class DnsName(Source):
    dynamic = True

    def __init__(self, host: str, port: int, refresh_s: float):
        super().__init__(refresh_s)
        self.host, self.port = host, port
        self.target = f"dns:///{host}:{port}" if ":" not in host else f"dns:///[{host}]:{port}"

    def resolve(self) -> list[str]:
        try:
            infos = getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:  # socket.gaierror is an OSError; a bad IDNA label a UnicodeError
            raise DiscoveryError(f"{self.target}: the name {self.host!r} does not resolve ({e}); expected a name "
                                 "with A or AAAA records") from None
        urls = []
        for family, _, _, _, address in infos:
            url = f"[{address[0]}]:{address[1]}" if family == socket.AF_INET6 else f"{address[0]}:{address[1]}"
            if url not in urls:
                urls.append(url)
        if not urls:
            raise DiscoveryError(f"{self.target}: the name {self.host!r} resolves to no IPv4 or IPv6 address")
        return urls


class EndpointsFile(Source):
    dynamic = True

    def __init__(self, path: Path, refresh_s: float):
        super().__init__(refresh_s)
        self.path = path.absolute()  # a later chdir must not change which file is read
        self.target = f"file:{self.path}"
        self._seen: tuple[int, int, int] | None = None  # (mtime_ns, size, inode) of the last good read

    def resolve(self) -> list[str] | None:
        try:
            st = os.stat(self.path)
            if (st.st_mtime_ns, st.st_size, st.st_ino) == self._seen:
                return None
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DiscoveryError(f"endpoints file {self.path}: no such file; expected the JSON list that "
                                 "`tritonize serve --endpoints-file` writes") from None
        except (OSError, UnicodeDecodeError) as e:
            raise DiscoveryError(f"endpoints file {self.path}: cannot be read ({e})") from None
        urls = parse_endpoints(text, self.path)
        # Marked as read only once it parsed: a file caught half-written is read again at the next look.
        self._seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        return urls


def parse_endpoints(text: str, path: Path) -> list[str]:
    """The gRPC URLs of an endpoints file's `[{"grpc": "host:port", ...}, ...]`."""
    try:
        entries = read_endpoints(text, required=("grpc",))
    except EndpointsFileError as e:
        raise DiscoveryError(f'endpoints file {path}: expected a JSON list of {{"grpc": "host:port", ...}} objects, '
                             f"{e}") from None
    urls = []
    for i, entry in enumerate(entries):
        try:
            url = normalize_url(entry["grpc"], f'endpoints file {path}: entry {i}: expected "grpc": "host:port"')
        except ValueError as e:
            raise DiscoveryError(str(e)) from None
        if url not in urls:
            urls.append(url)
    return urls


def parse_dns(text: str, refresh_s: float) -> DnsName:
    """`dns:///NAME[:PORT]` or `dns:NAME[:PORT]` (gRPC's forms without a DNS server authority)."""
    rest = text[len("dns:"):]
    if rest.startswith("//"):
        authority, slash, rest = rest[2:].partition("/")
        if not slash or authority:
            raise ValueError(f"{FORMS}, got {text!r}: a DNS server authority (dns://SERVER/NAME) is not supported; "
                             "use dns:///NAME:PORT, resolved by this machine's resolver")
    host, port, why = split_host_port(rest)
    if why is not None:
        raise ValueError(f"{FORMS}, got {text!r}: {why}")
    return DnsName(host.strip("[]"), int(port or DEFAULT_PORT), refresh_s)


def parse_target(target: object, refresh_s: float | None) -> Source:
    """The Source a target names, by its form alone (see the module doc)."""
    if isinstance(target, os.PathLike):
        return EndpointsFile(Path(target), refresh_s or FILE_REFRESH_S)
    if not isinstance(target, str):
        raise TypeError(f"{FORMS}, got {type(target).__name__} {target!r}")
    text = target.strip()
    if text.startswith("dns:"):
        return parse_dns(text, refresh_s or DNS_REFRESH_S)
    if text.startswith("file:"):
        path = text[len("file:"):]
        if path.startswith("//"):  # file:///abs/path, the URL form; file://HOST/... names another machine
            if not path.startswith("///"):
                raise ValueError(f"{FORMS}, got {text!r}: a file URL names a local file as file:///PATH")
            path = path[2:]
        if not path:
            raise ValueError(f"{FORMS}, got {text!r}: no PATH after file:")
        return EndpointsFile(Path(path), refresh_s or FILE_REFRESH_S)
    if text.endswith(".json"):
        return EndpointsFile(Path(text), refresh_s or FILE_REFRESH_S)
    return Fixed(normalize_url(text, FORMS))


class Discovery:
    """A client's targets and the union of the endpoints they name now. Thread-safe."""

    def __init__(self, targets: Target | Sequence[Target], refresh_s: float | None = None):
        if refresh_s is not None and not refresh_s > 0:
            raise ValueError(f"refresh_s must be > 0 seconds (or None for the defaults), got {refresh_s!r}")
        items = [targets] if isinstance(targets, (str, os.PathLike)) else targets
        if not isinstance(items, Sequence) or isinstance(items, (bytes, bytearray)):
            raise TypeError(f"{FORMS}, got {type(targets).__name__} {targets!r}")
        if not items:
            raise ValueError(f"a client needs at least one server: {FORMS}, got an empty list")
        self.sources = [parse_target(t, refresh_s) for t in items]
        now = time.monotonic()
        for source in self.sources:  # the first resolution's errors are the constructor's
            if source.dynamic:
                source.urls = source.resolve()
                source.next_check = now + source.refresh_s
        self.dynamic = any(s.dynamic for s in self.sources)
        self._lock = threading.Lock()  # guards the due check
        self._refresh_lock = threading.Lock()  # one refresh at a time
        self._publish()

    @property
    def targets(self) -> list[str]:
        return [s.target for s in self.sources]

    def source_of(self, url: str) -> str:
        return self._source_of.get(url, "")

    def _publish(self) -> None:
        """Set `urls` (a new list each time: readers keep a consistent snapshot) and `_next_check`."""
        source_of: dict[str, str] = {}
        for source in self.sources:
            for url in source.urls:
                source_of.setdefault(url, source.target)
        self._source_of = source_of
        self.urls = list(source_of)
        self._next_check = min(s.next_check for s in self.sources)

    def due(self) -> bool:
        """True for the one caller that should refresh now (at most once per refresh period)."""
        now = time.monotonic()
        if now < self._next_check:  # the common case, without the lock
            return False
        with self._lock:
            if now < self._next_check:
                return False
            # Until this refresh publishes the real next time; should it never run, the next period retries.
            self._next_check = now + min(s.refresh_s for s in self.sources)
            return True

    def refresh(self, force: bool = False) -> list[str] | None:
        """Resolve the targets that are due (all dynamic ones with `force`); the new endpoint URLs when
        they changed, else None. Never raises for a failed resolution: it is logged, the last set kept."""
        with self._refresh_lock:
            before = self.urls
            try:
                self._resolve_due(time.monotonic(), force)
            finally:
                self._publish()
            return None if self.urls == before else self.urls

    def _resolve_due(self, now: float, force: bool) -> None:
        for source in self.sources:
            if not source.dynamic or (not force and now < source.next_check):
                continue
            try:
                urls = source.resolve()
            except DiscoveryError as e:
                # Once per distinct failure: a file gone for an hour must not log every refresh_s.
                (log.debug if str(e) == source.failing else log.warning)(
                    "%s; keeping its last endpoints: %s", e, ", ".join(source.urls))
                source.failing = str(e)
                continue
            finally:
                source.next_check = time.monotonic() + source.refresh_s
            if source.failing:
                log.info("%s resolves again", source.target)
                source.failing = ""
            if urls is not None and urls != source.urls:
                added = [u for u in urls if u not in source.urls]
                gone = [u for u in source.urls if u not in urls]
                log.info("%s: endpoints now %s (added: %s; removed: %s)", source.target, ", ".join(urls),
                         ", ".join(added) or "none", ", ".join(gone) or "none")
                source.urls = urls
