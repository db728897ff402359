"""Free loopback ports for servers started on demand (tests, benchmarks, replicas).

Binding port 0 and closing the socket leaves a port that is free now, but nothing reserves it: the
kernel may hand the same port out again at the next bind of port 0. Two servers started together,
or one server's HTTP and metrics ports, could then get the same port, and tritonserver exits
("cannot listen to HTTP requests and metrics requests at the same address and port"). So this
process remembers the ports it handed out lately and never hands one out twice in that window.
"""
from __future__ import annotations

import socket
import threading
from collections import deque

HOST = "127.0.0.1"
RECENT = 4096  # ports handed out that are not handed out again: far more than any run starts servers with
_issued: deque[int] = deque(maxlen=RECENT)
_lock = threading.Lock()


class NoFreePort(OSError):
    """No free loopback port was found that this process had not handed out lately."""


def free_port() -> int:
    """A loopback port that is free now and that this process has not handed out lately."""
    with _lock:
        for _ in range(1000):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((HOST, 0))
                port = s.getsockname()[1]
            if port not in _issued:
                _issued.append(port)
                return port
    raise NoFreePort(f"expected a free loopback port on {HOST} not handed out lately; 1000 binds of port 0 gave "
                     f"only ports among the {len(_issued)} this process handed out")


def distinct_free_ports(count: int) -> list[int]:
    """`count` free loopback ports, all different."""
    return [free_port() for _ in range(count)]
