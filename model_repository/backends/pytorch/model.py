"""Triton Python-backend model that runs a tritonize model in PyTorch (custom Triton kernels included).

Copied as-is into `<repository>/<model>/<version>/model.py` by `tritonize repo`; the config's
`parameters` say what to run:
  model         the registry name of the model (e.g. cnn_fused)
  weights_file  the safetensors file beside this one (the weights of the model it is a variant of)
  device        "cuda" or "cpu"; on "cpu" the Triton kernels run in Triton's interpreter, which is
                slow and meant for correctness checks, not speed
  input_checks  what to check in each request before running it (JSON; see request_batching.py)
Needs the `tritonize` package in the server's Python environment.
"""
import json
import os

import triton_python_backend_utils as pb_utils
from request_batching import read_checks, run_batched


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.device = params.get("device", "cpu")
        if self.device == "cpu":
            # Must be set before any @triton.jit function is defined, i.e. before tritonize.kernels loads.
            os.environ["TRITON_INTERPRET"] = "1"
        import torch
        from safetensors.torch import load_file

        from tritonize.models import get_spec

        self.torch = torch
        spec = get_spec(params["model"])
        module = spec.factory()
        weights = os.path.join(args["model_repository"], args["model_version"], params.get("weights_file", "weights.safetensors"))
        module.load_state_dict(load_file(weights))
        self.module = module.eval().to(self.device)
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        # What Triton cannot check against the config (token ids in the vocabulary, sequence lengths,
        # masks, finite floats); a request failing it gets INVALID_ARG and never reaches the model.
        self.checks = read_checks(config)

    def execute(self, requests):
        return run_batched(requests, self.input_names, self.output_names, self._run, pb_utils, self.checks)

    def _run(self, inputs):
        torch = self.torch
        with torch.inference_mode():
            out = self.module(*(torch.from_numpy(x).to(self.device) for x in inputs))
        return [o.float().cpu().numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]

    def finalize(self):
        self.module = None
