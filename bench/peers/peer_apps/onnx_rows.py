"""One ONNX file in ONNX Runtime, rows in and rows out as raw little-endian float32 bytes.

Shared by the peer apps (mosec_app.py, litserve_app.py), which run inside each peer's own virtual
environment: only numpy and onnxruntime here, never tritonize or torch. The session is set up as
tritonize's own ONNX Runtime model.py sets it up: the CPU provider, one intra-op thread (`--threads`
of the apps changes that), one inter-op thread, and no spin-waiting (spinning threads would take the
cores the server and the load need).
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

ROW_DTYPE = np.dtype("<f4")


class OnnxRows:
    """A model with one float32 input and one float32 output, both with the batch first."""

    def __init__(self, path: str, threads: int = 1):
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{path}: expected one input and one output, got inputs {[i.name for i in inputs]} "
                             f"and outputs {[o.name for o in outputs]}")
        row_shape = inputs[0].shape[1:]
        if not all(isinstance(d, int) for d in row_shape) or inputs[0].type != "tensor(float)":
            raise ValueError(f"{path}: expected a float input of fixed shape after the batch, got "
                             f"{inputs[0].type} {inputs[0].shape}")
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        self.row_shape = tuple(row_shape)
        self.row_bytes = int(np.prod(self.row_shape)) * ROW_DTYPE.itemsize

    def decode(self, body: bytes) -> np.ndarray:
        """One request body as one input row; a wrong size is the client's error (ValueError)."""
        if len(body) != self.row_bytes:
            raise ValueError(f"expected {self.row_bytes} bytes (float32 {list(self.row_shape)}), got {len(body)}")
        return np.frombuffer(body, ROW_DTYPE).reshape(self.row_shape)

    def run(self, rows: list[np.ndarray]) -> list[bytes]:
        """The rows through the model as one batch; each row's output as raw float32 bytes."""
        outputs = self.session.run([self.output_name], {self.input_name: np.stack(rows)})[0]
        return [np.ascontiguousarray(row, ROW_DTYPE).tobytes() for row in outputs]
