"""Triton Python-backend model that runs an ONNX file with ONNX Runtime on the CPU.

Copied as-is into `<repository>/<model>/<version>/model.py` by `tritonize repo --target cpu`; what to
run comes from the config's `parameters`:
  onnx_file         the ONNX file beside this one (default model.onnx)
  intra_op_threads  ONNX Runtime threads per instance (default 1)
  allow_spinning    "1" lets ORT's threads spin-wait for work (default "0": on a small machine a
                    spinning pool steals the cores the server and its clients need)
  large_batch_threads, large_batch_rows
                    batches of at least large_batch_rows rows run on a second session with
                    large_batch_threads threads, smaller ones (a lone client's) on the first. Set by
                    `tritonize repo` from optimize's measurement of where the threads pay
                    (export/threads.py); off where unset, and where this process has fewer cores
                    than large_batch_threads. The second session holds a second copy of the weights.
  input_checks      what to check in each request before running it (JSON; see request_batching.py)
  stage_timings     a file path: each `execute` call's steps are timed (request_batching.run_timed) and
                    written there as JSON when the model is unloaded (default "": off, and nothing is
                    timed: `execute` is then the plain method). bench/suite/stages.py sets it.
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
        spin = params.get("allow_spinning", "0")
        threads = int(params.get("intra_op_threads", "1"))
        large_threads, large_rows = self._large_batches(params, threads, args["model_name"])
        if large_rows is not None and large_rows <= 1:  # every batch on the larger count: one session is enough
            threads, large_rows = large_threads, None
        self.session = _session(path, threads, spin)
        # Triton has already checked each request against the config, which names the ONNX file's own
        # inputs, so the checks InferenceSession.run repeats on every call are skipped: its binding is
        # called directly. Those checks are a fixed cost in Python on every request, whatever the model's
        # size, so for a small model at batch 1 they are a visible share of its compute time (the
        # benchmarks show it as the served model's cost over a do-nothing model served beside it).
        self._run_session = getattr(self.session, "_sess", self.session).run
        self.large_rows, self._run_large = large_rows, None
        if large_rows is not None:
            large = _session(path, large_threads, spin)
            self._run_large = getattr(large, "_sess", large).run
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        # What Triton cannot check against the config (token ids in the vocabulary, sequence lengths,
        # masks, finite floats); a request failing it gets INVALID_ARG and never reaches the model.
        self.checks = read_checks(config)
        # Stage timings for bench/suite/stages.py. Off, the class's own `execute` runs and nothing is timed; on,
        # this instance's `execute` is the timed one (the stub looks the method up on the instance).
        self.timings = StepTimings(params["stage_timings"]) if params.get("stage_timings") else None
        if self.timings is not None:
            self.execute = self._timed_execute

    @staticmethod
    def _large_batches(params, threads, model):
        """(threads, from rows) for large batches, or (threads, None) where they are off."""
        large_threads = int(params.get("large_batch_threads", "0") or 0)
        if large_threads <= threads or not params.get("large_batch_rows"):
            return threads, None
        cores = len(os.sched_getaffinity(0))
        if cores < large_threads:
            pb_utils.Logger.log_warn(f"{model}: large_batch_threads {large_threads} asks for more threads than the "
                                     f"{cores} cores this process may use; every batch runs on {threads}")
            return threads, None
        rows = int(params["large_batch_rows"])
        which = "every batch runs" if rows <= 1 else f"batches of {rows} rows or more run"
        pb_utils.Logger.log_info(f"{model}: {which} on {large_threads} ONNX Runtime threads")
        return large_threads, rows

    def execute(self, requests):
        return run_batched(requests, self.input_names, self.output_names, self._run, pb_utils, self.checks)

    def _timed_execute(self, requests):
        return run_timed(requests, self.input_names, self.output_names, self._run, pb_utils, self.checks, self.timings)

    def _run(self, inputs):
        if self.large_rows is not None and len(inputs[0]) >= self.large_rows:
            return self._run_large(self.output_names, dict(zip(self.input_names, inputs)), None)
        return self._run_session(self.output_names, dict(zip(self.input_names, inputs)), None)

    def finalize(self):
        if self.timings is not None:
            self.timings.write()
        self.session = self._run_session = self._run_large = None


def _session(path, threads, spin):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
