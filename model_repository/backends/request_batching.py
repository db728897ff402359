"""Shared by the Python-backend runners (copied beside their model.py): the requests Triton hands to
`execute` at once are run as batches, one per distinct input shape, and each request gets its own
response or its own error. A failure never escapes to crash the backend stub."""
import numpy as np


def run_batched(requests, input_names, output_names, run, pb_utils):
    """`run(list of input arrays) -> list of output arrays`, batch axis first."""
    if len(requests) == 1:  # the usual case at low load: no grouping, no slicing
        return [_run_one(requests[0], input_names, output_names, run, pb_utils)]
    responses = [None] * len(requests)
    groups = {}
    for i, request in enumerate(requests):
        try:
            inputs = [pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in input_names]
        except Exception as e:  # noqa: BLE001
            responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(f"reading inputs: {e}"))
            continue
        # The dynamic batcher may hand over requests of different sequence lengths together.
        groups.setdefault(tuple(x.shape[1:] for x in inputs), []).append((i, inputs))
    for members in groups.values():
        try:
            if len(members) == 1:
                batch = members[0][1]
            else:
                batch = [np.concatenate([m[1][k] for m in members]) for k in range(len(input_names))]
            outputs = run(batch)
        except Exception as e:  # noqa: BLE001
            error = pb_utils.TritonError(f"{type(e).__name__}: {e}")
            for i, _ in members:
                responses[i] = pb_utils.InferenceResponse(error=error)
            continue
        start = 0
        for i, inputs in members:
            stop = start + inputs[0].shape[0]
            tensors = [pb_utils.Tensor(n, out[start:stop]) for n, out in zip(output_names, outputs)]
            responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
            start = stop
    return responses


def _run_one(request, input_names, output_names, run, pb_utils):
    try:
        outputs = run([pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in input_names])
    except Exception as e:  # noqa: BLE001
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(e).__name__}: {e}"))
    return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, o) for n, o in zip(output_names, outputs)])
