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

    assert main(["export", "no_such_model", "--out", "/nonexistent/unused"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "no_such_model" in err and "Traceback" not in err
