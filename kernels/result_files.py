"""Writing a result file whole or not at all, for the kernels' GPU check and compile check.

The kernels import nothing from tritonize outside this folder (the import contract), so they cannot use
tritonize.artifacts; this is the same rule, for their report files: write under a temporary name beside
the file, then rename it into place.
"""
import os
import tempfile
from pathlib import Path


def write_text_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep a shared report folder's files from others
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
