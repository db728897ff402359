"""A small HTTP server on loopback for the load generators' tests (the raw sender, wrk)."""
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Received:
    peer: tuple  # the client's (address, port): one per connection
    path: str
    content_type: str | None
    model: str | None  # the X-Model header, where sent
    body: bytes


@dataclass
class Reverser:
    """POST answers the body reversed on kept-alive connections; a body of b"fail" gets HTTP 500 with a
    JSON error. Every request is kept in `requests`."""
    url: str
    requests: list[Received] = field(default_factory=list)


@pytest.fixture
def reverser():
    state = Reverser(url="")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - the http.server API
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(Received(self.client_address, self.path, self.headers["Content-Type"],
                                           self.headers.get("X-Model"), body))
            status, answer = (500, b'{"error": "no such luck"}') if body == b"fail" else (200, body[::-1])
            self.send_response(status)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state
    server.shutdown()
    server.server_close()
