"""The `tritonize` command line: one subcommand per stage, and `run` to chain them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from rich import box
from rich.console import Console
from rich.markdown import Markdown
from rich.markup import escape
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from tritonize.artifacts import DEFAULT_REPOSITORY, DEFAULT_RESULTS, DEFAULT_ROOT
from tritonize.models import UnknownModelError, get_spec, model_names

console = Console(stderr=True)
out = Console()


class CliError(Exception):
    """An error the user can fix; printed without a traceback, exit code 2."""


def _specs(names: list[str], runtime: str | None = "onnx"):
    return [get_spec(n) for n in (names or model_names(runtime))]


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("[bold]{task.fields[model]:<12}"), BarColumn(),
                    TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=False)


def for_each_model(specs, title: str, work: Callable) -> list:
    """Run `work(spec, step)` per model under a progress bar; `step(msg)` updates the bar's text."""
    results = []
    with _progress() as progress:
        for spec in specs:
            task = progress.add_task(title, total=None, model=spec.name)
            results.append(work(spec, lambda msg, t=task: progress.update(t, description=msg)))
            progress.update(task, description="[green]done", total=1, completed=1)
    return results


def cmd_export(args) -> int:
    from tritonize.export.stage import export_model

    specs = _specs(args.models)
    manifests = for_each_model(specs, "exporting", lambda s, step: export_model(s, args.out, args.exporter, args.opset, step))
    table = Table("model", "exporter", "opset", "max |err| vs PyTorch", "cases", title=f"ONNX export -> {args.out}")
    for m in manifests:
        table.add_row(m["model"], m["export"]["exporter"], str(m["export"]["opset"]),
                      f"{m['parity']['max_abs_err']:.2e}", str(m["parity"]["cases"]))
    out.print(table)
    return 0


def _calibrations(specs, path: Path | None, variants: list[str]) -> dict:
    """Each model's calibration rows from `--calibration` (a model's .npz, or a folder of <model>.npz),
    all checked before any work; models without a file are calibrated on example inputs."""
    if path is None:
        return {}
    from tritonize.export.calibration import Calibration

    if "int8_static" not in variants:
        raise CliError(f"--calibration sets the int8_static variant's activation ranges, but --variants leaves it "
                       f"out (got {' '.join(variants)})")
    if not path.is_dir():
        if len(specs) != 1:
            raise CliError(f"--calibration {path}: one .npz calibrates one model; name that model "
                           f"(tritonize optimize MODEL --calibration {path}) or pass a folder of <model>.npz files")
        return {specs[0].name: Calibration.from_file(specs[0], path)}
    names = {s.name for s in specs}
    files = {f.stem: f for f in sorted(path.glob("*.npz"))}
    if not names & files.keys():
        raise CliError(f"--calibration {path}: expected files named {', '.join(f'{n}.npz' for n in sorted(names))}, "
                       f"found {', '.join(f.name for f in files.values()) or 'no .npz file'}")
    for stem, f in files.items():
        if stem not in names:
            console.print(f"[yellow]note:[/] {escape(str(f))} left unused: no model {stem!r} among those optimized",
                          highlight=False, soft_wrap=True)
    return {s.name: Calibration.from_file(s, files[s.name]) for s in specs if s.name in files}


def cmd_optimize(args) -> int:
    from tritonize.export.optimize import optimize_model

    specs = _specs(args.models)
    calibrations = _calibrations(specs, args.calibration, args.variants)
    if args.tensorrt:
        from tritonize.export.tensorrt import build_engine, require_tensorrt

        require_tensorrt()  # before any work: one clear message when TensorRT or a GPU is missing
    choices = for_each_model(specs, "optimizing", lambda s, step: optimize_model(
        s, args.out, tuple(args.variants), step, calibration=calibrations.get(s.name)))
    table = Table(title="CPU variants (ONNX Runtime, in-process)", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
                  collapse_padding=True,
                  caption="err: max abs error vs PyTorch; top1/cos: top-1 agreement (classifiers) or min cosine; "
                          "b=1, b=max: p50 ms at batch 1 and the max batch; * the pick")
    for header in ("model", "variant", "parity", "err", "top1/cos", "b=1", "b=max", "vs fp32"):
        table.add_column(header, no_wrap=True)
    for spec, choice in zip(specs, choices):
        for name, r in choice["variants"].items():
            if not r.get("built"):
                table.add_row(spec.name, name, "[red]build failed", escape(r["error"][:60]), "", "", "", "")
                continue
            lat = list(r["latency"].values())
            top1 = (f"{r['top1_agreement']:.3f}" if r["top1_agreement"] is not None
                    else f"{r['min_cosine']:.4f}" if r.get("min_cosine") is not None else "")
            table.add_row(spec.name, name + (" [bold green]*" if name == choice["chosen"] else ""),
                          "ok" if r["parity_ok"] else "[red]fail", f"{r['max_abs_err']:.1e}",
                          top1, f"{lat[0]['p50_ms']:.3f}", f"{lat[-1]['p50_ms']:.3f}",
                          f"{choice['speedup_vs_fp32'][name]:.2f}x" if name in choice["speedup_vs_fp32"] else "-")
    out.print(table)
    for spec, choice in zip(specs, choices):
        if "calibration" in choice:
            source = choice["calibration"]
            seqs = f", sequence lengths {', '.join(map(str, source['seq_lens']))}" if source["seq_lens"] else ""
            out.print(f"{spec.name}: int8_static calibrated on {escape(source['data'])} ({source['rows']} rows{seqs})",
                      highlight=False, soft_wrap=True)
    if args.tensorrt:
        engines = for_each_model(specs, "TensorRT", lambda s, step: build_engine(s, args.out, args.trt_precision, step))
        table = Table("model", "precision", "TensorRT", "GPU", "max |err| vs ORT", title="TensorRT engines")
        for spec, info in zip(specs, engines):
            table.add_row(spec.name, info["precision"], info["tensorrt"], info["gpu"], f"{info['parity']['max_abs_err']:.2e}")
        out.print(table)
    return 0


def cmd_repo(args) -> int:
    from tritonize.model_repository.writer import build_repository

    specs = _specs(args.models, runtime=None)
    overrides = {}
    for item in args.variant or []:
        model, sep, variant = item.partition("=")
        if not sep:
            raise CliError(f"--variant takes MODEL=VARIANT (e.g. minilm=fp32), got {item!r}")
        overrides[model] = variant
    with console.status(f"building the {args.target} repository"):
        index = build_repository(specs, args.artifacts, args.out, args.target, variants=overrides)
    table = Table("model", "runner", "variant", title=f"Triton model repository ({args.target}) -> {args.out}")
    for name, info in index["models"].items():
        table.add_row(name, info["runner"], info["variant"])
    out.print(table)
    return 0


def _placement(server_cpus: str | None, instance_cpus: str | None, stubs_alone: bool):
    from tritonize.serving.placement import Placement

    if (server_cpus is None) != (instance_cpus is None):
        raise CliError("--server-cpus and --instance-cpus go together (e.g. --server-cpus 0 --instance-cpus 1), "
                       f"got only {'--server-cpus' if server_cpus else '--instance-cpus'}")
    if stubs_alone and server_cpus is None:
        raise CliError("--stubs-alone places the stubs on --instance-cpus: give --server-cpus and --instance-cpus "
                       "too (e.g. --server-cpus 0 --instance-cpus 1 --stubs-alone)")
    return None if server_cpus is None else Placement.parse(server_cpus, instance_cpus, stubs_alone)


def cmd_serve(args) -> int:
    import contextlib
    import signal
    import threading

    from tritonize.serving.idle import poll_idle
    from tritonize.serving.server import TritonServer

    server = TritonServer(args.repo, args.models or None, http_port=args.http_port, grpc_port=args.grpc_port,
                          metrics_port=args.metrics_port, binary=args.server, ready_timeout_s=args.timeout,
                          placement=_placement(args.server_cpus, args.instance_cpus, args.stubs_alone))
    # Ctrl-C and SIGTERM only set a flag: a KeyboardInterrupt raised inside subprocess's own polling
    # can leave its wait lock taken, and the stop would then hang.
    stop = threading.Event()
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    host = contextlib.ExitStack()
    try:
        if args.poll_idle:
            host.enter_context(poll_idle())
        with console.status(f"starting {server.binary.path} on {args.repo}"):
            server.start()
        out.print(f"[bold green]ready[/]: models {', '.join(server.models)}\n"
                  f"  gRPC    {server.grpc_url}\n  HTTP    {server.http_url}\n  metrics {server.metrics_url}\n"
                  + (f"  placement: {server.placement.describe()}\n" if server.placement else "")
                  + ("  idle cores poll (PM QoS CPU latency 0 us, held until the server stops)\n" if args.poll_idle else "")
                  + "Ctrl-C stops the server.")
        while not stop.wait(0.5):
            if server.process.poll() is not None:
                raise CliError(f"tritonserver exited with code {server.process.returncode}\n{server.log_tail()}")
        console.print("stopping (SIGINT, waiting for in-flight requests)...")
        return 0
    finally:
        server.close()
        host.close()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def cmd_bench(args) -> int:
    from tritonize.bench.suite import SuiteOptions, run_suite

    models = args.models or ["mlp", "cnn", "lstm", "transformer", "minilm"]
    make = SuiteOptions.quick_defaults if args.quick else SuiteOptions
    opts = make(models=models, artifacts=args.artifacts, results_root=args.results, sweep_model=args.sweep,
                sweep_write_back=args.write_back, inprocess=not args.no_inprocess, served=not args.no_served,
                placement=not args.no_placement, compare_poll_idle=not args.no_poll_idle,
                perf_analyzer=args.perf_analyzer)
    if args.duration is not None:
        opts.duration_s = args.duration
    with console.status("benchmarking") as status:
        folder = run_suite(opts, progress=lambda msg: status.update(f"benchmarking: {msg}"))
    out.print(Markdown((folder / "summary.md").read_text()))
    out.print(f"[bold green]report[/]: {folder}")
    return 0


def cmd_run(args) -> int:
    from tritonize.cli.pipeline import RunOptions, run_main_job

    opts = RunOptions(models=tuple(args.models) if args.models else RunOptions.models, artifacts=args.artifacts,
                      repository=args.repo, results=args.results, bench=not args.no_bench, force=args.force)
    with console.status("tritonize run") as status:
        report = run_main_job(opts, step=lambda msg: status.update(f"tritonize run: {msg}"))
    table = Table("model", "artifacts", "served == in-process", "max |err|", "first call (ms)",
                  title=f"served by tritonserver from {opts.repository}")
    for row in report["served"]:
        spec = get_spec(row["model"])
        source = report["artifacts"].get(spec.base_model or spec.name, "")
        table.add_row(row["model"], source, "[green]yes" if row["ok"] else "[red]no", f"{row['max_abs_err']:.2e}",
                      f"{row['latency_ms']:.2f}")
    out.print(table)
    if "bench" in report:
        out.print(Markdown((report["bench"] / "summary.md").read_text()))
        out.print(f"[bold green]benchmark report[/]: {report['bench']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritonize", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def with_models(p, help_text="models (default: all exportable)"):
        p.add_argument("models", nargs="*", metavar="MODEL", help=help_text)
        p.add_argument("--out", type=Path, default=DEFAULT_ROOT, help="artifact root (default: %(default)s)")
        return p

    p = with_models(sub.add_parser("export", help="PyTorch -> ONNX with dynamic axes, checked against PyTorch"))
    p.add_argument("--exporter", choices=["auto", "dynamo", "legacy"], default="auto",
                   help="torch.onnx exporter; auto tries dynamo, then legacy (default: %(default)s)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.set_defaults(func=cmd_export)

    from tritonize.export.optimize import VARIANTS

    p = with_models(sub.add_parser("optimize", help="ORT-optimized and INT8 CPU variants, checked, timed, one picked"))
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--calibration", type=Path, metavar="PATH",
                   help="representative rows for int8_static's activation ranges: an .npz of the model's inputs "
                        "(np.savez, arrays named like the inputs), or a folder of <model>.npz "
                        "(default: the spec's random example inputs)")
    p.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines (needs TensorRT and an NVIDIA GPU)")
    p.add_argument("--trt-precision", choices=["fp32", "fp16", "bf16"], default="fp16", help="engine precision (default: %(default)s)")
    p.set_defaults(func=cmd_optimize)

    p = sub.add_parser("repo", help="a Triton model repository (config.pbtxt + versioned files) from the artifacts")
    p.add_argument("models", nargs="*", metavar="MODEL", help="models (default: all, kernel models included)")
    p.add_argument("--target", choices=["cpu", "gpu"], default="cpu",
                   help="cpu: Python backend + ONNX Runtime (what the bundled server runs); gpu: NVIDIA's container")
    p.add_argument("--artifacts", type=Path, default=DEFAULT_ROOT, help="artifact root (default: %(default)s)")
    p.add_argument("--out", type=Path, default=DEFAULT_REPOSITORY, help="repository folder (default: %(default)s)")
    p.add_argument("--variant", action="append", metavar="MODEL=VARIANT",
                   help="serve this ONNX variant instead of optimize's pick (e.g. minilm=fp32)")
    p.set_defaults(func=cmd_repo)

    p = sub.add_parser("serve", help="run tritonserver on a repository until Ctrl-C")
    p.add_argument("--repo", type=Path, default=DEFAULT_REPOSITORY, help="repository folder (default: %(default)s)")
    p.add_argument("--models", nargs="+", help="models to load (default: every model in the repository)")
    p.add_argument("--http-port", type=int, default=8000, help="(default: %(default)s, as tritonserver)")
    p.add_argument("--grpc-port", type=int, default=8001, help="(default: %(default)s)")
    p.add_argument("--metrics-port", type=int, default=8002, help="(default: %(default)s)")
    p.add_argument("--server", help="path to a tritonserver binary (default: PATH, then nvidia-pytriton's)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness (default: %(default)s)")
    p.add_argument("--server-cpus", metavar="LIST", help="cores for the server's own threads, e.g. 0 or 0-3 "
                   "(with --instance-cpus; run clients there too)")
    p.add_argument("--instance-cpus", metavar="RANGE", help="cores for the model instances of CPU-target configs, "
                   "e.g. 1 or 4-7 (Triton host policy)")
    p.add_argument("--stubs-alone", action="store_true",
                   help="with the two above: only the Python-backend stubs on --instance-cpus, their instance threads "
                        "with the server (each stub keeps its caches, and every request crosses cores)")
    p.add_argument("--poll-idle", action="store_true",
                   help="while serving, keep idle cores polling instead of halting (a PM QoS CPU latency request of "
                        "0 us, released on exit; needs write access to /dev/cpu_dma_latency): cheaper wake-ups per "
                        "request, paid for with idle cores that spin")
    p.set_defaults(func=cmd_serve)

    from tritonize.client.infer_cmd import register as register_infer

    register_infer(sub)

    p = sub.add_parser("bench", help="in-process and served latency/throughput, one report under bench/results/")
    p.add_argument("models", nargs="*", metavar="MODEL", help="models (default: mlp cnn lstm transformer minilm)")
    p.add_argument("--quick", action="store_true", help="a short run (under 2 minutes on 2 CPU cores)")
    p.add_argument("--artifacts", type=Path, default=DEFAULT_ROOT, help="artifact root (default: %(default)s)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="report root (default: %(default)s)")
    p.add_argument("--sweep", metavar="MODEL", help="also run a dynamic-batching sweep for MODEL")
    p.add_argument("--write-back", type=Path, metavar="REPO", help="write the sweep's best config into REPO")
    p.add_argument("--duration", type=float, help="seconds per load run")
    p.add_argument("--perf-analyzer", type=Path, metavar="PATH",
                   help="the perf_analyzer binary to run beside our load generator (default: the one on PATH; "
                        "without one the report says it was not run)")
    p.add_argument("--no-inprocess", action="store_true", help="skip the in-process rows")
    p.add_argument("--no-served", action="store_true", help="skip the served rows")
    p.add_argument("--no-placement", action="store_true",
                   help="leave the server, its model instances and the load generator to the OS scheduler "
                        "(default: split the cores between them, see `tritonize serve --instance-cpus`)")
    p.add_argument("--no-poll-idle", action="store_true",
                   help="do not measure the MLP floor and the CNN scaling again with idle cores polling "
                        "(default: measured where the host allows it, see `tritonize serve --poll-idle`)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("run", help="the main job: export, optimize, repository, real server, client check, quick benchmark")
    p.add_argument("models", nargs="*", metavar="MODEL", help="models (default: mlp cnn lstm transformer minilm cnn_fused transformer_flash)")
    p.add_argument("--artifacts", type=Path, default=DEFAULT_ROOT, help="artifact root (default: %(default)s)")
    p.add_argument("--repo", type=Path, default=DEFAULT_REPOSITORY, help="repository folder (default: %(default)s)")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="report root (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="export and optimize again even when artifacts are current")
    p.add_argument("--no-bench", action="store_true", help="stop after the served check")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tritonize.artifacts import ArtifactError
    from tritonize.export.onnx_export import ExportError
    from tritonize.export.parity import ParityError
    from tritonize.export.tensorrt import TensorRTUnavailable
    from tritonize.serving.idle import PollIdleUnavailable
    from tritonize.serving.server import ServerError
    from tritonclient.utils import InferenceServerException

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UnknownModelError, ArtifactError, ExportError, ParityError, ServerError, TensorRTUnavailable, CliError,
            PollIdleUnavailable, ValueError, InferenceServerException, OSError) as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True, highlight=False)  # text, not markup
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted")
        return 130


