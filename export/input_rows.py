"""Rows of a model's inputs: what static INT8 is calibrated on (`--calibration`) and what parity and
accuracy are judged on (`--data`).

Static quantization is only as good as the rows it is calibrated on, and an accuracy figure only as
telling as the rows it is measured on. By default those are the spec's
random example inputs (all the seed models have), over every sequence length of a text model. A user
with representative data passes it as an .npz holding one array per model input, named like the
inputs, all with the same rows (`np.savez("cnn.npz", image=rows)`); it is checked against the spec
before any work, and choice.json records which data calibrated the variant, or judged them, with its
SHA-256.

For a text model (one served text-in), the rows can also be sentences: a UTF-8 .txt file of one
sentence per line, or an .npz holding one string array named like the text input. They are tokenized
by models/tokenization.py, the code the server's tokenizer runs, in batches padded to their own
longest sentence as the server pads each request, so parity is judged on the ids clients will send.
"""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..models import tokenization
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
            raise ValueError(f"{purpose} for model {spec.name!r}: expected {_expected_file(spec)}, got {path} "
                             f"({'a folder' if path.is_dir() else 'no such file'})")
        if spec.text is not None and path.suffix == ".txt":
            return cls.from_sentences(spec, _read_lines(spec, path, purpose), path)
        expected = f"expected an .npz file of arrays named {', '.join(spec.input_names)} (np.savez)"
        if spec.text is not None:
            expected += f", or of one string array named {spec.text.input.name!r}, or a UTF-8 .txt file"
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError(f"it holds a single {loaded.dtype} array {list(loaded.shape)}, not named arrays")
            with loaded as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{purpose} for model {spec.name!r}: {expected}, got {path}, which numpy "
                             f"cannot read that way ({e})") from None
        if spec.text is not None and set(arrays) == {spec.text.input.name}:
            return cls.from_sentences(spec, _strings(spec, arrays[spec.text.input.name], path, purpose), path)
        rows, seq = spec.check_inputs(arrays, f"{purpose} {path}")
        batches = tuple({n: a[i:i + ROWS] for n, a in arrays.items()} for i in range(0, rows, ROWS))
        return cls(batches, {"data": str(path.resolve()), "sha256": _sha256(path), "rows": rows,
                             "seq_lens": [seq] if seq is not None else []})

    @classmethod
    def from_sentences(cls, spec: ModelSpec, sentences: list[str], path: Path) -> "InputRows":
        """A text model's rows from sentences: tokenized as the server tokenizes, ROWS per batch, each
        batch padded to its own longest sentence (as the server pads each request)."""
        tokenizer = tokenization.load_tokenizer(spec.text.tokenizer_file(), spec.text.max_seq_len)
        batches = []
        for i in range(0, len(sentences), ROWS):
            ids, mask = tokenization.encode(tokenizer, sentences[i:i + ROWS])
            batch = dict(zip(tokenization.OUTPUT_NAMES, (ids, mask)))
            spec.check_inputs(batch, f"sentences {i + 1}-{i + len(ids)} of {path}, tokenized")
            batches.append(batch)
        seq_lens = sorted({b["input_ids"].shape[1] for b in batches})
        return cls(tuple(batches), {"data": str(path.resolve()), "sha256": _sha256(path), "rows": len(sentences),
                                    "sentences": True, "seq_lens": seq_lens})


def _expected_file(spec: ModelSpec) -> str:
    if spec.text is None:
        return "an .npz file"
    return "an .npz file or a UTF-8 .txt file of one sentence per line"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_lines(spec: ModelSpec, path: Path, purpose: str) -> list[str]:
    """One sentence per line; blank lines are skipped (a trailing newline is not an empty sentence)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise ValueError(f"{purpose} for model {spec.name!r}: expected a UTF-8 text file of one sentence per "
                         f"line, got {path}, whose line {line} is not UTF-8 ({e.reason})") from None
    sentences = [line for line in text.splitlines() if line.strip()]
    if not sentences:
        raise ValueError(f"{purpose} for model {spec.name!r}: expected one sentence per line, got {path}, "
                         f"which has no non-blank line")
    return sentences


def _strings(spec: ModelSpec, array: np.ndarray, path: Path, purpose: str) -> list[str]:
    """An .npz string array ([rows] or [rows, 1] of str or UTF-8 bytes) as a list of sentences."""
    name = spec.text.input.name
    if array.dtype.kind not in "US" or not (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
        raise ValueError(f"{purpose} for model {spec.name!r}: expected {name!r} as [rows] or [rows, 1] strings "
                         f"(np.array([...], dtype=str)), got {path} with {array.dtype} {list(array.shape)}")
    if array.size == 0:
        raise ValueError(f"{purpose} for model {spec.name!r}: got {path} with no sentences in {name!r}")
    sentences = []
    for row, value in enumerate(array.reshape(-1)):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{purpose} for model {spec.name!r}: {path} {name!r} row {row} is not "
                                 f"UTF-8 ({e.reason})") from None
        sentences.append(str(value))
    return sentences
