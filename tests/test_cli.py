"""The command line's shape: every subcommand registers from its own module, and asking for help
loads no stage (no torch, ONNX Runtime, tritonclient or numpy), which is what keeps it fast."""
import subprocess
import sys

import pytest

from tritonize.cli.main import COMMANDS, build_parser

HEAVY = ("torch", "onnxruntime", "onnx", "tritonclient", "numpy", "matplotlib", "triton")


def test_every_command_is_registered_from_its_own_module():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert tuple(sub.choices) == tuple(COMMANDS)
    for name, command in sub.choices.items():
        assert command.get_default("func").__module__ == f"tritonize.cli.{name}"


@pytest.mark.parametrize("argv", [["--help"], ["infer", "--help"], ["bench", "--help"], ["run", "--help"]])
def test_help_loads_no_stage(argv):
    code = ("import sys\nfrom tritonize.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-P", "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: tritonize" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_a_user_error_prints_one_line_and_exits_2(capsys):
    from tritonize.cli import main

    assert main(["export", "no_such_model", "--artifacts", "/nonexistent/unused"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "no_such_model" in err and "Traceback" not in err


def test_every_command_names_the_artifact_root_artifacts():
    """One name per flag: --artifacts is the artifact root wherever a command reads or writes it; the
    --out of export and optimize is its deprecated old name, and the help says so."""
    for name, command in next(a for a in build_parser()._actions if a.dest == "command").choices.items():
        for action in command._actions:
            if "artifact root" in (action.help or ""):
                assert action.option_strings == ["--artifacts"], name
            if action.dest == "old_out":
                assert name in ("export", "optimize") and action.help.startswith("deprecated")


# A model small enough to export and optimize in a few seconds.
TINY = """
import torch
from tritonize import ModelSpec, TensorSpec

def build():
    torch.manual_seed(0)
    return torch.nn.Linear(4, 2).eval()

SPEC = ModelSpec(name="tiny_linear", factory=build,
                 inputs=[TensorSpec("x", "float32", ("batch", 4))], outputs=[TensorSpec("y", "float32", ("batch", 2))])
"""
WARNING = "--out is deprecated for the artifact folder; use --artifacts"


def test_out_still_names_the_artifact_folder_of_export_and_optimize_and_warns(tmp_path, monkeypatch, capsys):
    from tritonize.model_artifacts import ModelArtifacts
    from tritonize.cli import main
    from tritonize.models import registry

    monkeypatch.setattr(registry, "_RESOLVED", {})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.py").write_text(TINY)
    assert main(["export", "tiny.py:SPEC", "--out", "art"]) == 0
    err = capsys.readouterr().err
    assert err.count(WARNING) == 1 and f"tritonize export: {WARNING}" in err
    assert main(["optimize", "tiny.py:SPEC", "--artifacts", "art", "--variants", "fp32"]) == 0  # what export wrote
    assert WARNING not in capsys.readouterr().err
    assert ModelArtifacts.load(tmp_path / "art", registry.get_spec("tiny.py:SPEC")).manifest.optimize.chosen == "fp32"
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize("command", ["export", "optimize"])
def test_the_old_name_warns_on_both_commands(command, tmp_path, capsys):
    from tritonize.cli import main

    assert main([command, "no_such_model", "--out", str(tmp_path / "art")]) == 2  # the model is unknown
    err = capsys.readouterr().err
    assert f"tritonize {command}: {WARNING}" in err and "no_such_model" in err


@pytest.mark.parametrize("command", ["export", "optimize"])
def test_both_names_of_the_artifact_folder_are_refused(command, tmp_path, capsys):
    from tritonize.cli import main

    assert main([command, "mlp", "--out", str(tmp_path / "a"), "--artifacts", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "--artifacts" in err and "give --artifacts only" in err and "Traceback" not in err
    assert WARNING not in err and not list(tmp_path.iterdir())  # refused before any work
