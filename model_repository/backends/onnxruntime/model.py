"""Triton Python-backend model that runs an ONNX file with ONNX Runtime on the CPU.

Copied as-is into `<repository>/<model>/<version>/model.py` by `tritonize repo --target cpu`; what to
run comes from the config's `parameters`:
  onnx_file         the ONNX file beside this one (default model.onnx)
  intra_op_threads  ONNX Runtime threads per instance (default 1)
  allow_spinning    "1" lets ORT's threads spin-wait for work (default "0": on a small machine a
                    spinning pool steals the cores the server and its clients need)
  input_checks      what to check in each request before running it (JSON; see request_batching.py)
  stage_timings     a file path: each `execute` call's steps are timed (request_batching.run_timed) and
                    written there as JSON when the model is unloaded (default "": off, and nothing is
                    timed: `execute` is then the plain method). bench/stages.py sets it.
It needs only numpy, onnxruntime and request_batching.py (copied beside it), so the folder also runs in NVIDIA's Triton container.
"""
import json
import os

import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from request_batching import StepTimings, read_checks, run_batched, run_timed


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
        # Triton has already checked each request against the config, which names the ONNX file's own
        # inputs, so the checks InferenceSession.run repeats on every call are skipped: its binding is
        # called directly. Those checks are a fixed cost in Python on every request, whatever the model's
        # size, so for a small model at batch 1 they are a visible share of its compute time (the
        # benchmarks show it as the served model's cost over a do-nothing model served beside it).
        self._run_session = getattr(self.session, "_sess", self.session).run
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        # What Triton cannot check against the config (token ids in the vocabulary, sequence lengths,
        # masks, finite floats); a request failing it gets INVALID_ARG and never reaches the model.
        self.checks = read_checks(config)
        # Stage timings for bench/stages.py. Off, the class's own `execute` runs and nothing is timed; on,
        # this instance's `execute` is the timed one (the stub looks the method up on the instance).
        self.timings = StepTimings(params["stage_timings"]) if params.get("stage_timings") else None
        if self.timings is not None:
            self.execute = self._timed_execute

    def execute(self, requests):
        return run_batched(requests, self.input_names, self.output_names, self._run, pb_utils, self.checks)

    def _timed_execute(self, requests):
        return run_timed(requests, self.input_names, self.output_names, self._run, pb_utils, self.checks, self.timings)

    def _run(self, inputs):
        return self._run_session(self.output_names, dict(zip(self.input_names, inputs)), None)

    def finalize(self):
        if self.timings is not None:
            self.timings.write()
        self.session = self._run_session = None
