"""A lean HTTP/1.1 sender for load runs, so that the load generator is not what gets measured.

tritonclient's Python clients spend about as much CPU per request (gRPC core and Python around it)
as the server spends serving a small model; on a small box the load generator then shares the cores
it loads and caps the throughput it can show. perf_analyzer avoids that by being C++. This sender
does the least a client can: the request (KServe v2 `infer` with Triton's binary tensor extension)
is encoded once, and each call is one `sendall` on a kept-alive socket and a read of the response by
its Content-Length, a fraction of tritonclient's CPU per request.

Each response's status is checked; the first one is also parsed in full and must carry the requested
outputs, so a run that succeeds answered the request it claims to.

`RawHttpSender` is the same kept-alive socket for any other server (the peers of bench/peers/compare.py): a
POST of bytes encoded once, to a path, with a content type; it checks for HTTP 200 and reads the body
by its Content-Length, so every server under one load generator costs that generator the same.
"""
from __future__ import annotations

import json
import socket
from typing import Sequence
from urllib.parse import urlsplit

import numpy as np
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor, triton_to_np_dtype


class LeanHttpError(RuntimeError):
    """The server answered with an error, or with something that is not a v2 infer response."""


def _np_dtype(wire_dtype: str) -> np.dtype:
    numpy_type = triton_to_np_dtype(wire_dtype)
    if numpy_type is None:
        raise ValueError(f"expected a Triton wire dtype such as FP32, INT64 or BYTES, got {wire_dtype!r}")
    return np.dtype(numpy_type)


def tensor_bytes(array: np.ndarray, wire_dtype: str) -> bytes:
    """A tensor in Triton's binary format: raw little-endian values, or for BYTES each element as a
    4-byte little-endian length and its bytes (tritonclient's own serializer)."""
    if wire_dtype == "BYTES":
        serialized = serialize_byte_tensor(array)  # a 0-d array holding the bytes, or empty for an empty tensor
        return serialized.item() if serialized.size else b""
    expected = _np_dtype(wire_dtype)
    if array.dtype != expected:
        raise ValueError(f"a {wire_dtype} input needs a {expected} array, got {array.dtype}")
    return np.ascontiguousarray(array).astype(expected.newbyteorder("<"), copy=False).tobytes()


def infer_request(host: str, model: str, inputs: Sequence[tuple[str, np.ndarray, str]],
                  output_names: Sequence[str]) -> bytes:
    """The whole HTTP request for one inference: `inputs` are (name, array, wire dtype)."""
    blobs = [tensor_bytes(array, dtype) for _, array, dtype in inputs]
    header = json.dumps({
        "inputs": [{"name": name, "shape": list(array.shape), "datatype": dtype,
                    "parameters": {"binary_data_size": len(blob)}}
                   for (name, array, dtype), blob in zip(inputs, blobs)],
        "outputs": [{"name": n, "parameters": {"binary_data": True}} for n in output_names],
    }).encode()
    body = header + b"".join(blobs)
    head = (f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {len(header)}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def _http_address(url: str, who: str) -> tuple[tuple[str, int], str]:
    """(host, port) and the Host header of an http://host:port URL (the scheme may be left out)."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        raise ValueError(f"the {who} needs an http://host:port URL, got {url!r}")
    return (parts.hostname, parts.port), parts.netloc


class _KeptAliveConnection:
    """One kept-alive HTTP/1.1 connection that sends a request encoded once and reads the response by
    its Content-Length; after a broken exchange the next one reconnects (its bytes may be in flight)."""

    def __init__(self, address: tuple[str, int], request: bytes, timeout_s: float):
        self.address, self.request, self.timeout_s = address, request, timeout_s
        self.sock: socket.socket | None = None
        self._connect()

    def _connect(self) -> None:
        self.sock = socket.create_connection(self.address, timeout=self.timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()

    def _send(self) -> tuple[int, dict[str, str], bytes]:
        if self.sock is None:
            self._connect()
        try:
            self.sock.sendall(self.request)
            return self._read_response()
        except (OSError, LeanHttpError):
            self.close()
            raise

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise LeanHttpError("the server closed the connection before answering")
        self.buffer += chunk

    def _read_response(self) -> tuple[int, dict[str, str], bytes]:
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            self._fill()
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if "content-length" not in headers:
            raise LeanHttpError(f"expected a response with a Content-Length, got headers {sorted(headers)}")
        total = end + 4 + int(headers["content-length"])
        while len(self.buffer) < total:
            self._fill()
        body = bytes(self.buffer[end + 4:total])
        del self.buffer[:total]
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            raise LeanHttpError(f"expected an HTTP status line, got {lines[0][:100]!r}") from None
        return status, headers, body


class LeanHttpSender(_KeptAliveConnection):
    """One kept-alive connection; calling it performs one inference and raises on any failure."""

    def __init__(self, url: str, model: str, inputs: Sequence[tuple[str, np.ndarray, str]],
                 output_names: Sequence[str], timeout_s: float = 10.0):
        address, host = _http_address(url, "lean sender")
        self.output_names = list(output_names)
        self.checked = False
        super().__init__(address, infer_request(host, model, inputs, output_names), timeout_s)

    def __call__(self) -> None:
        body, header_size = self._exchange()
        if not self.checked:
            self._decode(body, header_size)
            self.checked = True

    def infer(self) -> dict[str, np.ndarray]:
        """One inference with its outputs decoded (for checks; load runs call the sender itself)."""
        return self._decode(*self._exchange())

    def _exchange(self) -> tuple[bytes, int]:
        status, headers, body = self._send()
        if status != 200:
            raise LeanHttpError(f"HTTP {status}: {_error_text(body)}")
        return body, int(headers.get("inference-header-content-length", len(body)))

    def _decode(self, body: bytes, header_size: int) -> dict[str, np.ndarray]:
        try:
            outputs = json.loads(body[:header_size])["outputs"]
            names = [o["name"] for o in outputs]
        except (ValueError, KeyError, TypeError):
            raise LeanHttpError(f"expected a v2 infer response, got {body[:200]!r}") from None
        if sorted(names) != sorted(self.output_names):
            raise LeanHttpError(f"expected outputs {sorted(self.output_names)}, got {sorted(names)}")
        arrays, offset = {}, header_size
        for o in outputs:
            size = int(o.get("parameters", {}).get("binary_data_size", -1))
            if size < 0 or offset + size > len(body):
                raise LeanHttpError(f"expected output {o['name']!r} as binary data within the body, got {o}")
            arrays[o["name"]] = tensor_from_bytes(body[offset:offset + size], o["datatype"], o["shape"])
            offset += size
        return arrays


def tensor_from_bytes(data: bytes, wire_dtype: str, shape: Sequence[int]) -> np.ndarray:
    """The inverse of `tensor_bytes`."""
    if wire_dtype == "BYTES":
        return deserialize_bytes_tensor(data).reshape(shape)
    return np.frombuffer(data, _np_dtype(wire_dtype).newbyteorder("<")).reshape(shape)


def _error_text(body: bytes) -> str:
    try:
        return json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return body[:300].decode("utf-8", "replace")


def post_request(host: str, path: str, body: bytes, content_type: str) -> bytes:
    """The whole HTTP/1.1 POST of `body` to `path`, kept alive (HTTP/1.1's default)."""
    if not path.startswith("/"):
        raise ValueError(f"expected a request path starting with '/', got {path!r}")
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class RawHttpSender(_KeptAliveConnection):
    """One kept-alive connection that POSTs the same bytes each call and raises unless the answer is
    HTTP 200; the first answer's size is checked against `response_size` where one is given, so a
    run that succeeds answered with what the caller expects (one row of outputs, not an error page)."""

    def __init__(self, url: str, path: str, body: bytes, content_type: str = "application/octet-stream",
                 response_size: int | None = None, timeout_s: float = 10.0):
        address, host = _http_address(url, "raw HTTP sender")
        self.response_size = response_size
        self.checked = False
        super().__init__(address, post_request(host, path, body, content_type), timeout_s)

    def __call__(self) -> None:
        body = self.post()
        if not self.checked:
            if self.response_size is not None and len(body) != self.response_size:
                raise LeanHttpError(f"expected a {self.response_size}-byte answer, got {len(body)} bytes: "
                                    f"{body[:100]!r}")
            self.checked = True

    def post(self) -> bytes:
        """One request; the answer's body."""
        status, _, body = self._send()
        if status != 200:
            raise LeanHttpError(f"HTTP {status}: {_error_text(body)}")
        return body
