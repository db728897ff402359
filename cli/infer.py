"""`tritonize infer MODEL`: one request (or a few) to a running server; prints outputs and latency.

The main CLI calls `register(subparsers)`. Mistakes the user can fix raise ValueError (the CLI
prints the message and exits 2); server errors propagate as tritonclient InferenceServerException.
numpy, tritonclient and the client load inside the command, so that `--help` stays fast.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..client import DEFAULT_URL

if TYPE_CHECKING:
    import numpy as np

    from ..client import ModelInfo, TritonClient

SHOWN_VALUES = 5
DESCRIPTION = """Send a request to a running Triton server over gRPC; print the outputs and the latency.

examples:
  tritonize infer mlp --url 127.0.0.1:8001 --batch 4
  tritonize infer transformer --seq 32 --repeat 100
  tritonize infer cnn --input images.npy
  tritonize infer transformer --input input_ids=ids.npy --input attention_mask=mask.npy
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("infer", help="send a request to a running server; print the outputs and the latency",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a model the server has loaded")
    p.add_argument("--url", dest="urls", nargs="+", action="extend", metavar="URL",
                   help=f"server gRPC address host:port; several are used round-robin (default: {DEFAULT_URL})")
    p.add_argument("--input", dest="inputs", action="append", metavar="SOURCE",
                   help="'random' (default: made from the model's metadata), FILE.npy for a one-input model, "
                        "FILE.npz with arrays named after the inputs, or NAME=FILE.npy (repeat per input)")
    p.add_argument("--text", dest="texts", action="append", metavar="TEXT",
                   help="a sentence for a text model (repeat for a batch); MODEL or its MODEL_text ensemble "
                        "takes the strings and tokenizes them on the server")
    p.add_argument("--batch", type=int, default=1, help="rows of random input (default: %(default)s)")
    p.add_argument("--seq", type=int, default=None, help="length of variable axes of random input")
    p.add_argument("--protocol", choices=["grpc"], default="grpc", help="transport (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per request (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=1, help="send the request N times and report p50/min/max")
    p.add_argument("--shared-memory", action="store_true",
                   help="pass tensors through system shared memory (server on this machine)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (default: %(default)s)")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..client import TritonClient

    if args.repeat < 1:
        raise ValueError(f"--repeat must be at least 1, got {args.repeat}")
    if args.timeout <= 0:
        raise ValueError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.batch < 1:
        raise ValueError(f"--batch must be at least 1, got {args.batch}")
    if args.seq is not None and args.seq < 1:
        raise ValueError(f"--seq must be at least 1, got {args.seq}")
    if args.texts and args.inputs:
        raise ValueError("--text and --input cannot be combined")
    urls = args.urls or [DEFAULT_URL]
    with TritonClient(urls, timeout_s=args.timeout, use_shared_memory=args.shared_memory) as client:
        if args.texts:
            info = text_model_info(client, args.model)
            inputs = {info.inputs[0].name: np.array([[t.encode("utf-8")] for t in args.texts], dtype=object)}
        else:
            info = client.model_info(args.model)
            inputs = load_inputs(args.inputs or ["random"], info, args.batch, args.seq, args.seed)
        latencies = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            outputs = client.infer(info.name, inputs)
            latencies.append(time.perf_counter() - start)
    print(report(info, urls, inputs, outputs, latencies))
    return 0


TEXT_SUFFIX = "_text"


def text_model_info(client: TritonClient, model: str) -> ModelInfo:
    """The model that takes strings: MODEL itself when its one input is BYTES, else MODEL_text."""
    from tritonclient.utils import InferenceServerException

    info = client.model_info(model)
    if len(info.inputs) == 1 and info.inputs[0].is_bytes:
        return info
    try:
        text = client.model_info(model + TEXT_SUFFIX)
    except InferenceServerException:
        raise ValueError(f"model {model} takes {', '.join(f'{i.name} {i.datatype}' for i in info.inputs)}, not text, "
                         f"and the server has no {model + TEXT_SUFFIX} model that does") from None
    if len(text.inputs) != 1 or not text.inputs[0].is_bytes:
        raise ValueError(f"model {text.name} does not take one BYTES input")
    return text


def load_inputs(sources: list[str], info: ModelInfo, batch: int, seq: int | None, seed: int) -> dict[str, np.ndarray]:
    """The request's arrays from --input values (checked against the model later, by the client)."""
    import numpy as np

    from ..client.examples import random_inputs

    if sources == ["random"]:
        return random_inputs(info, batch, seq, np.random.default_rng(seed))
    if "random" in sources:
        raise ValueError("--input random cannot be combined with files")
    arrays: dict[str, np.ndarray] = {}
    for source in sources:
        name, sep, path = source.partition("=")
        if not sep:
            name, path = None, source
        arrays.update(_load_file(Path(path), name, info))
    return arrays


def _load_file(path: Path, name: str | None, info: ModelInfo) -> dict[str, np.ndarray]:
    import numpy as np

    if not path.is_file():
        raise ValueError(f"--input {path}: no such file (expected random, FILE.npy, FILE.npz or NAME=FILE.npy)")
    if path.suffix == ".npz":
        if name is not None:
            raise ValueError(f"--input {name}={path}: a .npz holds named arrays already; pass --input {path}")
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    if path.suffix != ".npy":
        raise ValueError(f"--input {path}: expected a .npy or .npz file, got {path.suffix or 'no suffix'}")
    array = np.load(path, allow_pickle=True)  # BYTES inputs are saved as object arrays
    if name is None:
        if len(info.inputs) != 1:
            raise ValueError(f"--input {path}: model {info.name} has {len(info.inputs)} inputs "
                             f"({', '.join(info.input_names)}); pass NAME=FILE.npy per input or one .npz")
        name = info.inputs[0].name
    return {name: array}


def _first_values(x: np.ndarray) -> str:
    flat = x.reshape(-1)[:SHOWN_VALUES]
    if x.dtype.kind == "f":
        shown = ", ".join(f"{v:.5g}" for v in flat)
    else:
        shown = ", ".join(repr(v) if isinstance(v, bytes) else str(v) for v in flat)
    return f"[{shown}{', ...' if x.size > SHOWN_VALUES else ''}]"


def _shape(x: np.ndarray) -> str:
    return f"[{','.join(map(str, x.shape))}]"


def report(info: ModelInfo, urls: list[str], inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
           latencies: list[float]) -> str:
    batch = f", max batch {info.max_batch_size}" if info.batching else ""
    lines = [f"model {info.name} (version {info.version}{batch}) at {', '.join(urls)}"]
    lines += [f"  input  {name:<16} {x.dtype} {_shape(x)}" for name, x in inputs.items()]
    lines += [f"  output {name:<16} {x.dtype} {_shape(x)} {_first_values(x)}" for name, x in outputs.items()]
    ms = [t * 1e3 for t in latencies]
    if len(ms) == 1:
        lines.append(f"latency {ms[0]:.3f} ms (one request, round trip)")
    else:
        lines.append(f"latency p50 {statistics.median(ms):.3f} ms, min {min(ms):.3f} ms, max {max(ms):.3f} ms "
                     f"over {len(ms)} requests")
    return "\n".join(lines)
