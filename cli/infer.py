"""`tritonize infer MODEL`: one request (or a few) to a running server; prints outputs and latency.

The main CLI calls `register(subparsers)`. Mistakes the user can fix raise ValueError (the CLI
prints the message and exits 2); server errors propagate as tritonclient InferenceServerException.
numpy, tritonclient and the client load inside the command, so that `--help` stays fast.
"""
from __future__ import annotations

import argparse
import statistics
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..client import DEFAULT_URL

if TYPE_CHECKING:
    import numpy as np

    from ..client import EndpointStats, ModelInfo, TritonClient

    Files = list[tuple[str | None, Path, dict[str | None, np.ndarray]]]  # (NAME or None, path, its arrays) per --input

SHOWN_VALUES = 5
DESCRIPTION = """Send a request to a running Triton server over gRPC; print the outputs and the latency.

examples:
  tritonize infer mlp --url 127.0.0.1:8001 --batch 4
  tritonize infer mlp --url dns:///triton.default.svc.cluster.local:8001 --repeat 100
  tritonize infer mlp --url file:endpoints.json --repeat 100
  tritonize infer transformer --seq 32 --repeat 100
  tritonize infer cnn --input images.npy
  tritonize infer transformer --input input_ids=ids.npy --input attention_mask=mask.npy
"""


def register(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("infer", help="send a request to a running server; print the outputs and the latency",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", help="a model the server has loaded")
    p.add_argument("--url", dest="urls", nargs="+", action="extend", metavar="URL",
                   help="server gRPC address host:port, dns:///NAME:PORT (every address behind the name) or an "
                        "endpoints file (file:PATH or PATH.json, as `serve --endpoints-file` writes); several "
                        f"are used round-robin, with a table per endpoint (default: {DEFAULT_URL})")
    p.add_argument("--input", dest="inputs", action="append", metavar="SOURCE",
                   help="'random' (default: made from the model's metadata), FILE.npy for a one-input model, "
                        "FILE.npz with arrays named after the inputs, or NAME=FILE.npy (repeat per input); "
                        "save text as np.array([...], dtype=str): object arrays need pickle and are refused")
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
    from ..client.examples import random_inputs

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
    files = read_sources(args.inputs or ["random"])  # a bad file fails before any connection
    with TritonClient(args.urls or [DEFAULT_URL], timeout_s=args.timeout,
                      use_shared_memory=args.shared_memory) as client:
        if args.texts:
            info = text_model_info(client, args.model)
            inputs = {info.inputs[0].name: np.array([[t.encode("utf-8")] for t in args.texts], dtype=object)}
        else:
            info = client.model_info(args.model)
            inputs = (name_inputs(files, info) if files
                      else random_inputs(info, args.batch, args.seq, np.random.default_rng(args.seed)))
        latencies = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            outputs = client.infer(info.name, inputs)
            latencies.append(time.perf_counter() - start)
        where = ", ".join(client.targets)
        if client.urls != client.targets:  # a name or a file: say what it resolved to
            where += f" ({', '.join(client.urls)})"
        stats = client.endpoint_stats()
    print(report(info, where, inputs, outputs, latencies))
    if len(stats) > 1:
        print(endpoint_table(stats))
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


def read_sources(sources: list[str]) -> Files:
    """The --input files, or [] for random input. Run before connecting, so that a bad file fails at
    once, whatever the server."""
    if sources == ["random"]:
        return []
    if "random" in sources:
        raise ValueError("--input random cannot be combined with files")
    files = []
    for source in sources:
        name, sep, path = source.partition("=")
        if not sep:
            name, path = None, source
        elif not name:
            raise ValueError(f"--input {source}: expected NAME=FILE.npy, got no NAME before '='")
        files.append((name, Path(path), _read_file(Path(path), name)))
    return files


def name_inputs(files: Files, info: ModelInfo) -> dict[str, np.ndarray]:
    """The arrays by input name: a bare FILE.npy goes to a one-input model's only input."""
    arrays: dict[str, np.ndarray] = {}
    for _, path, loaded in files:
        if None in loaded:
            if len(info.inputs) != 1:
                raise ValueError(f"--input {path}: model {info.name} has {len(info.inputs)} inputs "
                                 f"({', '.join(info.input_names)}); pass NAME=FILE.npy per input or one .npz")
            loaded = {info.inputs[0].name: loaded[None]}
        arrays.update(loaded)
    return arrays


def _read_file(path: Path, name: str | None) -> dict[str | None, np.ndarray]:
    """The arrays of a .npy (under `name`, None when not given) or .npz file, read without pickle: a
    pickled array could run any code as it loads."""
    if not path.is_file():
        raise ValueError(f"--input {path}: no such file (expected random, FILE.npy, FILE.npz or NAME=FILE.npy)")
    if path.suffix == ".npz":
        if name is not None:
            raise ValueError(f"--input {name}={path}: a .npz holds named arrays already; pass --input {path}")
        arrays = {}
        try:
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    if not member.endswith(".npy"):
                        raise ValueError(f"--input {path}: expected only .npy arrays in the .npz (np.savez), "
                                         f"got a member {member!r}")
                    with archive.open(member) as f:
                        arrays[member[:-4]] = _read_npy(f, f"--input {path} array {member[:-4]!r}")
        except zipfile.BadZipFile as e:
            raise ValueError(f"--input {path}: expected a .npz archive (np.savez), got a file zip cannot read "
                             f"({e})") from None
        if not arrays:
            raise ValueError(f"--input {path}: expected arrays named after the model's inputs, got an empty .npz")
        return arrays
    if path.suffix != ".npy":
        raise ValueError(f"--input {path}: expected a .npy or .npz file, got {path.suffix or 'no suffix'}")
    with open(path, "rb") as f:
        return {name: _read_npy(f, f"--input {path}")}


def _read_npy(f, where: str) -> np.ndarray:
    """One array from an open .npy stream. An object array is refused from its header, before its
    (pickled) data is touched; strings come as str or bytes arrays, which need no pickle, and become
    the object array of UTF-8 bytes that a BYTES input sends (what --text sends)."""
    import numpy as np

    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        # Versions 1 and 2 are what np.save writes for every dtype but structured ones with non-Latin-1
        # field names (3.0); for those, read_array(allow_pickle=False) below still refuses objects.
        read_header = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        shape, _, dtype = read_header(f) if read_header else (None, None, None)
        if dtype is None or not dtype.hasobject:
            f.seek(0)
            array = fmt.read_array(f, allow_pickle=False)
    except (ValueError, EOFError) as e:
        raise ValueError(f"{where}: expected an array saved with np.save, got a file numpy cannot read as one "
                         f"({e})") from None
    if dtype is not None and dtype.hasobject:
        raise ValueError(f"{where}: expected numbers, or strings saved as np.array([...], dtype=str), got an object "
                         f"array (dtype {dtype}, shape [{','.join(map(str, shape))}]), which only unpickling could "
                         f"load; tritonize never unpickles")
    if array.dtype.kind == "U":
        return np.array([s.encode("utf-8") for s in array.ravel()], dtype=object).reshape(array.shape)
    if array.dtype.kind == "S":
        return array.astype(object)
    return array


def _first_values(x: np.ndarray) -> str:
    flat = x.reshape(-1)[:SHOWN_VALUES]
    if x.dtype.kind == "f":
        shown = ", ".join(f"{v:.5g}" for v in flat)
    else:
        shown = ", ".join(repr(v) if isinstance(v, bytes) else str(v) for v in flat)
    return f"[{shown}{', ...' if x.size > SHOWN_VALUES else ''}]"


def _shape(x: np.ndarray) -> str:
    return f"[{','.join(map(str, x.shape))}]"


def report(info: ModelInfo, where: str, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray],
           latencies: list[float]) -> str:
    batch = f", max batch {info.max_batch_size}" if info.batching else ""
    lines = [f"model {info.name} (version {info.version}{batch}) at {where}"]
    lines += [f"  input  {name:<16} {x.dtype} {_shape(x)}" for name, x in inputs.items()]
    lines += [f"  output {name:<16} {x.dtype} {_shape(x)} {_first_values(x)}" for name, x in outputs.items()]
    ms = [t * 1e3 for t in latencies]
    if len(ms) == 1:
        lines.append(f"latency {ms[0]:.3f} ms (one request, round trip)")
    else:
        lines.append(f"latency p50 {statistics.median(ms):.3f} ms, min {min(ms):.3f} ms, max {max(ms):.3f} ms "
                     f"over {len(ms)} requests")
    return "\n".join(lines)


def _ms_or_dash(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def endpoint_table(stats: list[EndpointStats]) -> str:
    """One row per endpoint: requests, answers, failures by kind, retries sent elsewhere, latency, state.
    Latency percentiles come from the client's histogram (within ~5%)."""
    header = ("endpoint", "requests", "ok", "failed", "retried elsewhere", "p50 ms", "p90 ms", "p99 ms", "state")
    rows = []
    for s in stats:
        state = "removed" if s.removed else "ejected" if s.ejected else "up"
        failed = f"{s.failures.total}" + (f" ({s.failures.nonzero()})" if s.failures.total else "")
        rows.append((s.url, str(s.requests), str(s.successes), failed, str(s.retried_elsewhere),
                     _ms_or_dash(s.latency.p50_s), _ms_or_dash(s.latency.p90_s), _ms_or_dash(s.latency.p99_s), state))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    # The endpoint and the failures read left to right; the numbers line up on the right.
    left = {0, 3, 8}
    return "\n".join("  ".join(cell.ljust(w) if i in left else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))).rstrip() for row in [header, *rows])
