"""A full disk is one line and exit 2, and nothing half-written stays (#35). Each command runs in a mount
namespace of its own on a tmpfs too small for what it writes (unshare --user --mount: no root needed
where user namespaces are allowed), so the real filesystem refuses the real write."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tritonize.export.stage import export_model
from tritonize.models import get_spec

UNSHARE = shutil.which("unshare")


def _namespaces_work() -> bool:
    if UNSHARE is None:
        return False
    probe = subprocess.run([UNSHARE, "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _namespaces_work(), reason="needs `unshare --user --mount` (util-linux, and user "
                                                                  "namespaces allowed) to mount a small tmpfs")


def _on_small_disk(tmp_path: Path, size: str, *args: str, before: tuple[str, ...] = ()) -> tuple[int, str, list[str]]:
    """`tritonize ARGS` with DISK (in args) on a fresh tmpfs of `size` (after `tritonize BEFORE`, which must
    succeed): exit code, stderr, and what is on the disk after it (listed inside the namespace, where the
    tmpfs is mounted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    tritonize = str(Path(sys.executable).with_name("tritonize"))

    def command(words) -> str:
        return " ".join("'" + w.replace("DISK", str(disk)) + "'" for w in (tritonize, *words))

    first = f"{command(before)} 2>/dev/null && " if before else ""
    script = (f"mount -t tmpfs -o size={size} tmpfs {disk} && {first}{command(args)}; code=$?; "
              f"echo; echo LEFT; (cd {disk} && find . -mindepth 1 | sort); exit $code")
    done = subprocess.run([UNSHARE, "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=300)
    left = done.stdout.split("LEFT\n", 1)[1].split() if "LEFT\n" in done.stdout else ["(no listing)"]
    return done.returncode, done.stderr, left


def _one_line_error(err: str, disk: Path) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]  # a progress line may come first
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == lines[-1:] and errors[0].startswith(f"error: No space left on device while writing {disk}/"), err
    return errors[0]


def test_export_on_a_full_disk(tmp_path):
    code, err, left = _on_small_disk(tmp_path, "200k", "export", "mlp", "--exporter", "legacy", "--artifacts",
                                     "DISK/art")
    assert code == 2
    assert "run the command again" in _one_line_error(err, tmp_path / "disk")
    assert left in ([], ["./art"])  # the folder it made for the artifacts, empty: no temp folder stays


def test_repo_on_a_full_disk(tmp_path):
    export_model(get_spec("mlp"), tmp_path / "art", exporter="legacy")
    code, err, left = _on_small_disk(tmp_path, "100k", "repo", "mlp", "--artifacts", str(tmp_path / "art"),
                                     "--out", "DISK/repo")
    assert code == 2
    _one_line_error(err, tmp_path / "disk")
    assert left == []  # the repository is built beside its place and renamed: none of it stays


def test_optimize_on_a_full_disk_keeps_the_export(tmp_path):
    """Room for the export (~0.9 MB) but not for the variants: optimize fails in one line, and the
    export's folder stays as it was, usable, with no half-written variants beside it."""
    code, err, left = _on_small_disk(tmp_path, "1100k", "optimize", "mlp", "--artifacts", "DISK/art",
                                     before=("export", "mlp", "--exporter", "legacy", "--artifacts", "DISK/art"))
    assert code == 2
    _one_line_error(err, tmp_path / "disk")
    assert left == ["./art", "./art/mlp", "./art/mlp/manifest.json", "./art/mlp/model.onnx",
                    "./art/mlp/parity.json", "./art/mlp/weights.safetensors"]


def test_bench_results_on_a_full_disk(tmp_path):
    """The report's folder is written beside its place and renamed: a full disk leaves none of it."""
    code, err, left = _on_small_disk(tmp_path, "4k", "bench", "mlp", "--no-inprocess", "--no-served",
                                     "--artifacts", str(tmp_path / "none"), "--results", "DISK/res")
    assert code == 2
    _one_line_error(err, tmp_path / "disk")
    assert left == ["./res"]  # the results root it made; no report folder, whole or half


_SERVE_FILES = """
import sys
from pathlib import Path
from tritonize.serving.admin import write_admin_key_file
from tritonize.serving.endpoints_file import ReplicaEndpoint, write_endpoints_file
disk = Path(sys.argv[1])
(disk / "filler").write_bytes(b"x" * 4096)  # the disk is full from here on
for write in (lambda: write_admin_key_file(disk / "admin.key", "k" * 43),
              lambda: write_endpoints_file(disk / "endpoints.json", [ReplicaEndpoint("a:1", "a:2", "a:3", 1)])):
    try:
        write()
    except OSError as e:
        print(e.errno, e.filename)
"""


def test_serves_files_on_a_full_disk_name_the_file_and_leave_nothing(tmp_path):
    """The admin key file and the endpoints file (what `serve` writes): the error names the file, and no
    empty key file stays (the next start would refuse it as existing)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (f"mount -t tmpfs -o size=4k tmpfs {disk} && '{sys.executable}' -P -c '{_SERVE_FILES}' {disk}; "
              f"echo LEFT; cd {disk} && find . -mindepth 1 | sort")
    done = subprocess.run([UNSHARE, "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=120)
    errors, left = done.stdout.split("LEFT\n")
    assert errors.split("\n")[:2] == [f"28 {disk}/admin.key", f"28 {disk}/endpoints.json"], done
    assert left.split() == ["./filler"]
