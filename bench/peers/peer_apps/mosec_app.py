"""Mosec serving one ONNX file: POST /inference, a raw float32 row in, its raw float32 output out.

Runs inside the Mosec peer's own virtual environment (bench/peers/envs.py), started by bench/peers/compare.py:

    python mosec_app.py MODEL.onnx --max-batch-size 64 --max-wait-ms 1 --threads 1 --address 127.0.0.1 --port PORT

With --max-batch-size above 1 Mosec's dynamic batcher hands `forward` a list of rows (waiting at
most --max-wait-ms for more); at 1 it hands over one row. One worker process. Mosec reads its own
options (--address, --port, ...) from the same command line.
"""
from __future__ import annotations

import argparse
import os
import sys

from mosec import Server, ValidationError, Worker

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # onnx_rows.py beside this file
from onnx_rows import OnnxRows  # noqa: E402

MODEL_ENV = "TRITONIZE_PEER_MODEL"  # how the spawned worker learns the model's path
THREADS_ENV = "TRITONIZE_PEER_THREADS"  # and its ONNX Runtime threads


class OnnxWorker(Worker):
    req_mime_type = "application/octet-stream"
    resp_mime_type = "application/octet-stream"

    def __init__(self):
        super().__init__()
        self.model = OnnxRows(os.environ[MODEL_ENV], int(os.environ.get(THREADS_ENV, "1")))

    def deserialize(self, data: bytes):
        try:
            return self.model.decode(data)
        except ValueError as e:
            raise ValidationError(str(e)) from None  # Mosec answers it with 422

    def serialize(self, data: bytes) -> bytes:
        return data

    def forward(self, data):
        if isinstance(data, list):  # dynamic batching on: a list of rows, one answer each
            return self.model.run(data)
        return self.model.run([data])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the ONNX file")
    parser.add_argument("--max-batch-size", type=int, default=1)
    parser.add_argument("--max-wait-ms", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args, _ = parser.parse_known_args()  # the rest is Mosec's (--address, --port)
    server = Server()
    server.append_worker(OnnxWorker, num=1, max_batch_size=args.max_batch_size, max_wait_time=args.max_wait_ms,
                         env=[{MODEL_ENV: os.path.abspath(args.model), THREADS_ENV: str(args.threads)}])
    server.run()


if __name__ == "__main__":
    main()
