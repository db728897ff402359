"""Triton Python-backend model that runs an ONNX file with ONNX Runtime on the CPU.

Copied as-is into `<repository>/<model>/<version>/model.py` by `tritonize repo --target cpu`; what to
run comes from the config's `parameters`:
  onnx_file         the ONNX file beside this one (default model.onnx)
  intra_op_threads  ONNX Runtime threads per instance (default 1)
  allow_spinning    "1" lets ORT's threads spin-wait for work (default "0": on a small machine a
                    spinning pool steals the cores the server and its clients need)
It needs only numpy and onnxruntime, so the folder also runs in NVIDIA's Triton container.
"""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        path = os.path.join(args["model_repository"], args["model_version"], params.get("onnx_file", "model.onnx"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "0"))
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests):
        """Requests whose inputs have the same shapes (after the batch axis) run as one batch."""
        responses = [None] * len(requests)
        groups = {}
        for i, request in enumerate(requests):
            try:
                inputs = [pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names]
            except Exception as e:  # noqa: BLE001 - a bad request gets an error, never a crashed stub
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"reading inputs: {e}"))
                continue
            key = tuple(x.shape[1:] for x in inputs)
            groups.setdefault(key, []).append((i, inputs))
        for members in groups.values():
            self._run_group(members, responses)
        return responses

    def _run_group(self, members, responses):
        try:
            if len(members) == 1:
                feed = dict(zip(self.input_names, members[0][1]))
            else:
                feed = {n: np.concatenate([m[1][k] for m in members]) for k, n in enumerate(self.input_names)}
            outputs = self.session.run(self.output_names, feed)
        except Exception as e:  # noqa: BLE001
            error = pb_utils.TritonError(f"onnxruntime: {e}")
            for i, _ in members:
                responses[i] = pb_utils.InferenceResponse(error=error)
            return
        start = 0
        for i, inputs in members:
            stop = start + inputs[0].shape[0]
            tensors = [pb_utils.Tensor(n, out[start:stop]) for n, out in zip(self.output_names, outputs)]
            responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
            start = stop

    def finalize(self):
        self.session = None
