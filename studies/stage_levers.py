"""Levers on the batch-1 floor, each measured side by side with the current defaults.

Two (or more) servers run at once, one per setup: the current defaults and a lever (a change to every
model's config, more tritonserver flags, or other runner files). One client takes turns over the setups
and the models, round after round (the order of the setups reversed every other round), so a slow spell
of this shared machine falls on every setup alike: per model, a block of requests at concurrency 1 (its
p50) and a window at concurrency 8 (its throughput and p50), both with the lean HTTP sender. Each lever is
judged by its ratios to the defaults' (the median over the rounds of the per-round ratio), never by its
absolute timings.

    python -m tritonize.studies.stage_levers --lever no-batcher [http-threads-1 ...] --models mlp cnn [--rounds 6]
    python -m tritonize.studies.stage_levers --lever backend --backend DIR   (DIR's runner files as the defaults)
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..artifacts import write_json
from ..bench import rounds as alternating
from ..bench.load.loadgen import closed_loop
from ..bench.load.served import LEAN_HTTP, sender_factory
from ..bench.record import Record
from ..model_repository.config import parse_pbtxt, to_pbtxt
from ..model_repository.writer import build_repository
from ..models import get_spec
from ..serving.server import TritonServer

BUILT_IN = ("mlp", "cnn", "lstm", "transformer", "minilm")
C1_BLOCK = 200  # requests per concurrency-1 block
C8_WINDOW_S = 0.3
WARMUP = 20


@dataclass
class Setup:
    """One server: every model's config edited by `edit`, more tritonserver flags, and runner files
    (model.py, request_batching.py) copied from `backend` over the repository's own."""
    label: str
    edit: Callable | None = None
    server_args: list[str] = field(default_factory=list)
    backend: Path | None = None


def _no_batcher(config) -> None:
    config.ClearField("dynamic_batching")


def _param(key: str, value: str) -> Callable:
    def edit(config) -> None:
        config.parameters[key].string_value = value
    return edit


LEVERS: dict[str, Callable[[], Setup]] = {
    "no-batcher": lambda: Setup("no dynamic_batching block", _no_batcher),
    "http-threads-1": lambda: Setup("--http-thread-count=1", server_args=["--http-thread-count=1"]),
    "http-threads-2": lambda: Setup("--http-thread-count=2", server_args=["--http-thread-count=2"]),
    "shm-64mb": lambda: Setup("python shm 64 MiB", server_args=[
        "--backend-config=python,shm-default-byte-size=67108864",
        "--backend-config=python,shm-growth-byte-size=67108864"]),
    "buffer-manager-1": lambda: Setup("--buffer-manager-thread-count=1",
                                      server_args=["--buffer-manager-thread-count=1"]),
    "no-input-checks": lambda: Setup("no input checks (for scale only)", _param("input_checks", "")),
}


@dataclass
class LevelRatio(Record):
    """One model at one concurrency: the lever's numbers over the defaults', median of the rounds' ratios."""
    model: str
    level: str  # "c1" or "c8"
    p50_ratio: float
    throughput_ratio: float
    p50_ratio_quartiles: list[float]
    base_p50_ms: float  # medians over the rounds, for scale only
    lever_p50_ms: float


@dataclass
class LeverResult(Record):
    lever: str
    base: str
    rounds: int
    c1_block: int
    c8_window_s: float
    rows: list[LevelRatio]


def build_setup_repository(setup: Setup, base: Path, out: Path) -> Path:
    """A copy of the repository `base` with the setup's config edits and runner files."""
    shutil.copytree(base, out)
    for config_path in out.glob("*/config.pbtxt"):
        if setup.edit is not None:
            config = parse_pbtxt(config_path.read_text())
            setup.edit(config)
            config_path.write_text(to_pbtxt(config))
        if setup.backend is not None:  # the ONNX Runtime runner's folders only (they hold model.onnx)
            for version in (p for p in config_path.parent.iterdir() if (p / "model.onnx").is_file()):
                for name in ("model.py", "request_batching.py"):
                    if (version / name).is_file() and (setup.backend / name).is_file():
                        shutil.copyfile(setup.backend / name, version / name)
    return out


def _c1(send, n: int) -> float:
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        send()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples)) * 1e3


def compare(setups: list[Setup], models: list[str], artifacts: Path, work: Path, rounds: int) -> dict:
    """Per setup, model and level, the rounds' p50 (ms) and throughput (requests/s)."""
    base = work / "base"
    build_repository([dataclasses.replace(get_spec(m), text=None) for m in models], artifacts, base, "cpu")
    servers = [TritonServer(build_setup_repository(s, base, work / f"setup{i}"), models, extra_args=s.server_args)
               for i, s in enumerate(setups)]
    runs = {(i, m, lv): [] for i in range(len(setups)) for m in models for lv in ("c1", "c8")}
    try:
        for server in servers:
            server.start()
        senders = {(i, m): sender_factory(LEAN_HTTP, s.http_url, m, get_spec(m)) for i, s in enumerate(servers)
                   for m in models}
        lone = {k: make() for k, make in senders.items()}
        for send in lone.values():
            for _ in range(WARMUP):
                send()
        for _, order in alternating.rounds(range(len(setups)), count=rounds, order=alternating.REVERSED):
            for i in order:
                for m in models:
                    runs[i, m, "c1"].append((_c1(lone[i, m], C1_BLOCK), float("nan")))
                    load = closed_loop(senders[i, m], 8, C8_WINDOW_S, 100_000, warmup_requests=2).summary()
                    runs[i, m, "c8"].append((load.p50_ms, load.throughput_rps))
    finally:
        for server in servers:
            server.close()
    return runs


def ratios(runs: dict, models: list[str], lever: int = 1) -> list[LevelRatio]:
    rows = []
    for m in models:
        for level in ("c1", "c8"):
            base, ours = np.array(runs[0, m, level]), np.array(runs[lever, m, level])
            p50 = ours[:, 0] / base[:, 0]
            rows.append(LevelRatio(
                model=m, level=level, p50_ratio=float(np.median(p50)),
                throughput_ratio=float(np.median(ours[:, 1] / base[:, 1])) if level == "c8" else float("nan"),
                p50_ratio_quartiles=[float(q) for q in np.percentile(p50, [25, 50, 75])],
                base_p50_ms=float(np.median(base[:, 0])), lever_p50_ms=float(np.median(ours[:, 0]))))
    return rows


def markdown(result: LeverResult) -> str:
    lines = [f"#### {result.lever} against {result.base}: {result.rounds} rounds", "",
             "| model | level | p50 ratio | p50 ratio quartiles | throughput ratio |", "|---|---|---:|---|---:|"]
    for r in result.rows:
        q = ", ".join(f"{x:.3f}" for x in r.p50_ratio_quartiles)
        lines.append(f"| {r.model} | {r.level} | {r.p50_ratio:.3f} | {q} | "
                     f"{'' if np.isnan(r.throughput_ratio) else f'{r.throughput_ratio:.3f}'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tritonize.studies.stage_levers",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--lever", required=True, nargs="+", choices=sorted(LEVERS) + ["backend"],
                        help="one or more levers, each against the same defaults in the same turns")
    parser.add_argument("--backend", type=Path, help="with --lever backend: a folder of the runner files that "
                                                     "the defaults use (e.g. the last commit's); ours are the lever")
    parser.add_argument("--models", nargs="+", default=list(BUILT_IN))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if "backend" in args.lever:
        if args.backend is None or args.lever != ["backend"]:
            parser.error("--lever backend goes alone, with --backend DIR")
        setups = [Setup(f"runner files of {args.backend}", backend=args.backend),
                  Setup("runner files of this checkout")]
    else:
        setups = [Setup("current defaults"), *(LEVERS[name]() for name in args.lever)]
    with tempfile.TemporaryDirectory(prefix="tritonize-levers-") as tmp:
        runs = compare(setups, args.models, args.artifacts.resolve(), Path(tmp), args.rounds)
    for i, name in enumerate(args.lever, start=1):
        result = LeverResult(lever=setups[i].label, base=setups[0].label, rounds=args.rounds, c1_block=C1_BLOCK,
                             c8_window_s=C8_WINDOW_S, rows=ratios(runs, args.models, i))
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            write_json(args.out / f"lever-{name}.json", result.to_json())
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
