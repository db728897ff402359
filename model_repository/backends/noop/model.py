"""Triton Python-backend model that does nothing: zeros of the configured output shapes.

Served beside a real model with the same config, it measures the floor every Python-backend model
pays (transport, the server, the stub's shared-memory hand-off); the real model's latency over this
floor is what its own path costs.
"""
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.first_input = config["input"][0]["name"]
        self.outputs = [(o["name"], [max(int(d), 1) for d in o["dims"]], pb_utils.triton_string_to_numpy(o["data_type"]))
                        for o in config["output"]]

    def execute(self, requests):
        responses = []
        for request in requests:
            batch = pb_utils.get_input_tensor_by_name(request, self.first_input).as_numpy().shape[0]
            tensors = [pb_utils.Tensor(name, np.zeros((batch, *dims), dtype)) for name, dims, dtype in self.outputs]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses
