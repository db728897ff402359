"""LitServe serving one ONNX file: POST /predict, a raw float32 row in, its raw float32 output out.

Runs inside the LitServe peer's own virtual environment (bench/peers/envs.py), started by bench/peers/compare.py:

    python litserve_app.py MODEL.onnx --port PORT [--max-batch-size 64 --batch-timeout-ms 1] [--threads 1]

LitServe's defaults otherwise: one inference worker on the CPU, one API server process, no batching
unless --max-batch-size is above 1 (then LitServe collects up to that many rows, waiting at most
--batch-timeout-ms).

LitServe 0.2.19 reads every request body as JSON or a form (server.py,
BaseRequestHandler._prepare_request). So that it gets the same raw float32 body as the other servers,
without a JSON encoding the others do not pay for, an application/octet-stream body is handed over
as its bytes; everything else goes LitServe's own way.
"""
from __future__ import annotations

import argparse
import os
import sys

import litserve
from litserve import server as litserve_server

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # onnx_rows.py beside this file
from onnx_rows import OnnxRows  # noqa: E402

EXPECTED_LITSERVE = "0.2.19"  # the version whose request handling the patch below was written against
RAW = "application/octet-stream"


def _patch_raw_bodies() -> None:
    handler = litserve_server.BaseRequestHandler
    if litserve.__version__ != EXPECTED_LITSERVE or not hasattr(handler, "_prepare_request"):
        raise RuntimeError(f"this app reads raw bodies through LitServe {EXPECTED_LITSERVE}'s "
                           f"BaseRequestHandler._prepare_request; got LitServe {litserve.__version__}")
    json_or_form = handler._prepare_request

    async def raw_or_theirs(self, request, request_type):
        if request_type is litserve_server.Request and request.headers.get("content-type", "") == RAW:
            return await request.body()
        return await json_or_form(self, request, request_type)

    handler._prepare_request = raw_or_theirs


_patch_raw_bodies()  # at import: the API server processes are forked from this one


class OnnxApi(litserve.LitAPI):
    def __init__(self, model_path: str, max_batch_size: int, batch_timeout_s: float, threads: int = 1):
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout_s)
        self.model_path, self.threads = model_path, threads

    def setup(self, device):
        self.model = OnnxRows(self.model_path, self.threads)

    def decode_request(self, request):
        if not isinstance(request, bytes):
            raise litserve_server.HTTPException(415, f"expected an {RAW} body of float32 values")
        try:
            return self.model.decode(request)
        except ValueError as e:
            raise litserve_server.HTTPException(400, str(e)) from None

    def batch(self, inputs):
        return inputs  # a list of rows: OnnxRows stacks them

    def predict(self, x):
        return self.model.run(x if isinstance(x, list) else [x])

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        # Unbatched, predict answered its one row as a list of one.
        return litserve.Response(content=output[0] if isinstance(output, list) else output, media_type=RAW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="the ONNX file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=1)
    parser.add_argument("--batch-timeout-ms", type=float, default=0.0)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    args = parser.parse_args()
    api = OnnxApi(os.path.abspath(args.model), args.max_batch_size, args.batch_timeout_ms / 1e3, args.threads)
    server = litserve.LitServer(api, accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
