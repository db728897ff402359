"""The `tritonize` command line: PyTorch models to a real Triton Inference Server, with benchmarks.

One module per subcommand (`tritonize.cli.<command>`), each with `register(subparsers)` and `run(args)`.
Registering loads only the standard library, rich and the names of defaults, so `tritonize --help`
and `tritonize <command> --help` answer at once; each command imports its stage when it runs.
"""
from __future__ import annotations

import argparse
import sys

from rich.markup import escape

from ..artifacts import DISK_ERRNOS
from . import bench, deploy, export, infer, models, optimize, peers, publish, repo, rollout, run, serve, stages, top
from .common import CliError, console

# In the order `tritonize --help` lists them: the stages in the order they run, the main job, the models.
COMMANDS = {module.__name__.rpartition(".")[2]: module for module in (export, optimize, repo, publish, serve, rollout,
                                                                  infer, bench, peers, stages, top, deploy, run,
                                                                  models)}

# The errors a user can fix, by the module that defines them: the message is printed without a
# traceback and the exit code is 2. Only the modules a command has loaded can have raised one, so
# looking only at those keeps every other stage (and torch) unloaded.
USER_ERRORS = {
    "tritonize.models.registry": ("UnknownModelError",),
    "tritonize.models.references": ("ModelReferenceError",),
    "tritonize.artifacts": ("ArtifactError",),
    "tritonize.export.onnx_export": ("ExportError",),
    "tritonize.export.parity": ("ParityError",),
    "tritonize.export.tensorrt": ("TensorRTUnavailable",),
    "tritonize.serving.server": ("ServerError",),
    "tritonize.serving.idle": ("PollIdleUnavailable",),
    "tritonclient.utils": ("InferenceServerException",),
}


def user_errors() -> tuple[type[BaseException], ...]:
    loaded = [getattr(sys.modules[module], name) for module, names in USER_ERRORS.items() if module in sys.modules
              for name in names]
    return (CliError, ValueError, OSError, *loaded)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tritonize", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - re-raised below unless it is one the user can fix
        if not isinstance(e, user_errors()):
            raise
        console.print(f"[bold red]error:[/] {escape(_message(e))}", soft_wrap=True, highlight=False)  # text, not markup
        return 2


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and e.errno in DISK_ERRNOS and e.filename:
        # A copy's error names both files (shutil: filename the source, filename2 the destination).
        return (f"{e.strerror} while writing {e.filename2 or e.filename}; the files being written were removed (a stage "
                f"writes beside its output and renames at the end): free space there, or choose another "
                f"folder, and run the command again")
    return str(e)
