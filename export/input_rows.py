"""Rows of a model's inputs: what static INT8 is calibrated on (`--calibration`) and what parity and
accuracy are judged on (`--data`).

Static quantization is only as good as the rows it is calibrated on, and an accuracy figure only as
telling as the rows it is measured on. By default those are the spec's
random example inputs (all the seed models have), over every sequence length of a text model. A user
with representative data passes it as an .npz holding one array per model input, named like the
inputs, all with the same rows (`np.savez("cnn.npz", image=rows)`); it is checked against the spec
before any work, and choice.json records which data calibrated the variant, or judged them, with its
SHA-256.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models.spec import ModelSpec

BATCHES = 8  # of example inputs
ROWS = 8  # per batch


@dataclass(frozen=True)
class InputRows:
    batches: tuple[dict[str, np.ndarray], ...]
    source: dict  # what calibrated: recorded in choice.json

    @classmethod
    def from_examples(cls, spec: ModelSpec, rng: np.random.Generator) -> "InputRows":
        seqs = spec.seq_lens if spec.has_seq else (None,)
        batches = tuple(spec.example_inputs(ROWS, seqs[i % len(seqs)], rng) for i in range(BATCHES))
        return cls(batches, {"data": "example inputs", "rows": BATCHES * ROWS,
                             "seq_lens": sorted({s for s in seqs if s is not None})})

    @classmethod
    def from_file(cls, spec: ModelSpec, path: Path, purpose: str = "calibration data") -> "InputRows":
        """The rows of an .npz file, checked against the spec, in batches of at most ROWS rows.
        `purpose` names the data in messages ("calibration data", "data")."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{purpose} for model {spec.name!r}: expected an .npz file, got {path} "
                             f"({'a folder' if path.is_dir() else 'no such file'})")
        expected = f"expected an .npz file of arrays named {', '.join(spec.input_names)} (np.savez)"
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError(f"it holds a single {loaded.dtype} array {list(loaded.shape)}, not named arrays")
            with loaded as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{purpose} for model {spec.name!r}: {expected}, got {path}, which numpy "
                             f"cannot read that way ({e})") from None
        rows, seq = spec.check_inputs(arrays, f"{purpose} {path}")
        batches = tuple({n: a[i:i + ROWS] for n, a in arrays.items()} for i in range(0, rows, ROWS))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return cls(batches, {"data": str(path.resolve()), "sha256": digest, "rows": rows,
                             "seq_lens": [seq] if seq is not None else []})
