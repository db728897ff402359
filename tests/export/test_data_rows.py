"""--data: parity and accuracy judged on the user's own rows, recorded with their SHA-256, so that a
variant is kept or refused on what the user's data says rather than on random inputs."""
import textwrap

import numpy as np
import pytest

from tritonize.cli import main
from tritonize.models import registry

# Two logits that differ by a hair on random inputs (INT8's rounding flips the decision there) and by
# a wide margin on the user's rows, which lie along the direction that separates them.
NEAR_TIE = textwrap.dedent('''
    import torch
    from tritonize import ModelSpec, TensorSpec

    def build():
        torch.manual_seed(0)
        net = torch.nn.Linear(16, 2, bias=False)
        with torch.no_grad():
            direction = torch.randn(16)
            net.weight[1] = net.weight[0] + 1e-3 * direction
        return net.eval()

    SPEC = ModelSpec(name="near_tie", factory=build, classifier=True,
                     inputs=[TensorSpec("x", "float32", ("batch", 16))], outputs=[TensorSpec("y", "float32", ("batch", 2))])
''')


@pytest.fixture
def near_tie(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_RESOLVED", {})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "near_tie.py").write_text(NEAR_TIE)
    reference = "near_tie.py:SPEC"
    spec = registry.get_spec(reference)
    weight = spec.factory().weight.detach().numpy()
    direction = (weight[1] - weight[0]) / np.linalg.norm(weight[1] - weight[0])
    rng = np.random.default_rng(3)
    signs = rng.choice([-1.0, 1.0], size=(256, 1))
    rows = (signs * 1e4 * direction + 0.01 * rng.standard_normal((256, 16))).astype(np.float32)
    np.savez(tmp_path / "rows.npz", x=rows)
    assert main(["export", reference, "--artifacts", "art", "--data", "rows.npz"]) == 0
    return reference, tmp_path


def _choice(folder):
    import json

    return json.loads((folder / "art" / "near_tie" / "variants" / "choice.json").read_text())


def test_int8_misses_the_budget_on_random_rows_and_meets_it_on_the_users_rows(near_tie, capsys):
    reference, folder = near_tie
    budget = ["--variants", "fp32", "int8", "--accuracy", "top1>=0.99"]
    assert main(["optimize", reference, "--artifacts", "art", *budget, "--accuracy-on-random-rows"]) == 0
    random_choice = _choice(folder)
    assert random_choice["rejected"]["int8"].startswith("misses the accuracy budget: top1>=0.99 (measured ")
    assert random_choice["data"]["data"] == "random example inputs"
    assert random_choice["accuracy"] == {"budgets": ["top1>=0.99"], "lossy_pick": False, "judged_on": "random rows"}

    assert main(["optimize", reference, "--artifacts", "art", *budget, "--data", "rows.npz"]) == 0
    choice = _choice(folder)
    assert "int8" not in choice["rejected"] and choice["variants"]["int8"]["top1_agreement"] >= 0.99
    assert choice["accuracy"]["judged_on"] == "your data"
    assert choice["data"]["rows"] == 256 and len(choice["data"]["sha256"]) == 64
    assert choice["data"]["data"] == str((folder / "rows.npz").resolve()) and "judged on your data" in choice["why"]
    assert f"judged on {(folder / 'rows.npz').resolve()}" in capsys.readouterr().out.replace("\n", "")


def test_without_a_budget_int8_is_reported_and_not_picked_even_on_the_users_rows(near_tie):
    reference, folder = near_tie
    assert main(["optimize", reference, "--artifacts", "art", "--variants", "fp32", "int8", "--data", "rows.npz"]) == 0
    choice = _choice(folder)
    assert choice["chosen"] == "fp32" and not choice["variants"]["int8"]["fp32_exact"]
    assert "outside FP32 tolerance" in choice["rejected"]["int8"]


def test_data_that_does_not_fit_the_model_is_refused_before_any_work(near_tie, capsys):
    reference, folder = near_tie
    np.savez(folder / "wrong.npz", x=np.zeros((4, 15), np.float32))
    before = _choice(folder) if (folder / "art" / "near_tie" / "variants").exists() else None
    assert main(["optimize", reference, "--artifacts", "art", "--data", "wrong.npz"]) == 2
    err = capsys.readouterr().err
    assert "data wrong.npz: model 'near_tie' expects x float32 [batch,16]; got x with axis 1 of 15" in err
    assert (_choice(folder) if before else None) == before


# --- a text model's rows as sentences: tokenized as the server's tokenizer does --------------------

SENTENCES = ["The quick brown fox jumps over the lazy dog.", "Grüße aus München!", "東京は日本の首都です。",
             "a", "Paragraph one: " + "sentence embeddings turn passages into vectors. " * 60,
             "I love pizza 🍕", "weather", "The GPU accelerates deep learning.", "Goal!", "Sushi"]


@pytest.fixture
def minilm_text():
    return registry.get_spec("minilm")


def _batches_equal(got, want):
    return len(got) == len(want) and all(
        g.keys() == w.keys() and all(np.array_equal(g[k], w[k]) for k in g) for g, w in zip(got, want))


def test_sentences_are_tokenized_per_batch_as_the_server_tokenizes(minilm_text, tmp_path, load_minilm_tokenizer,
                                                                    minilm_tokenize):
    from tritonize.export.input_rows import ROWS, InputRows

    # Blank lines are skipped; a CRLF file reads the same.
    (tmp_path / "s.txt").write_bytes(("\r\n".join(SENTENCES[:3]) + "\r\n\r\n   \n" + "\n".join(SENTENCES[3:]) + "\n")
                                     .encode("utf-8"))
    rows = InputRows.from_file(minilm_text, tmp_path / "s.txt", "data")
    tokenizer = load_minilm_tokenizer()
    # The tests' own tokenization (held against sentence-transformers in tests/models/test_minilm.py),
    # ROWS sentences per batch, each padded to its own longest: what one request of them would get.
    want = [minilm_tokenize(SENTENCES[i:i + ROWS], tokenizer) for i in range(0, len(SENTENCES), ROWS)]
    assert _batches_equal(rows.batches, want)
    assert rows.batches[0]["input_ids"].shape[1] == minilm_text.text.max_seq_len  # the long one, truncated
    assert rows.source["rows"] == len(SENTENCES) and rows.source["sentences"] is True
    assert rows.source["seq_lens"] == sorted({b["input_ids"].shape[1] for b in want})
    import hashlib
    assert rows.source["sha256"] == hashlib.sha256((tmp_path / "s.txt").read_bytes()).hexdigest()

    # The same sentences as an .npz string array (str or UTF-8 bytes, [rows] or [rows, 1]) give the same rows.
    np.savez(tmp_path / "u.npz", text=np.array(SENTENCES))
    np.savez(tmp_path / "b.npz", text=np.array([[s.encode("utf-8")] for s in SENTENCES]))
    for name in ("u.npz", "b.npz"):
        assert _batches_equal(InputRows.from_file(minilm_text, tmp_path / name, "data").batches, want)


@pytest.mark.parametrize("write, message", [
    (lambda p: p.write_bytes(b"fine\nbad \xff here\n"),
     r"expected a UTF-8 text file of one sentence per line, got .*s\.txt, whose line 2 is not UTF-8"),
    (lambda p: p.write_text("\n  \n"), r"expected one sentence per line, got .*s\.txt, which has no non-blank line"),
    (lambda p: np.savez(p.with_suffix(".npz"), text=np.zeros((3, 2), np.float32)),
     r"expected 'text' as \[rows\] or \[rows, 1\] strings .* got .*s\.npz with float32 \[3, 2\]"),
    (lambda p: np.savez(p.with_suffix(".npz"), text=np.array([b"ok", b"\xc3"])),
     r".*s\.npz 'text' row 1 is not UTF-8"),
])
def test_sentences_that_cannot_be_read_are_refused_with_the_reason(minilm_text, tmp_path, write, message):
    from tritonize.export.input_rows import InputRows

    write(tmp_path / "s.txt")
    path = tmp_path / "s.txt" if (tmp_path / "s.txt").exists() else tmp_path / "s.npz"
    with pytest.raises(ValueError, match=r"^data for model 'minilm': " + message):
        InputRows.from_file(minilm_text, path, "data")


def test_a_folder_may_hold_sentences_and_two_files_for_one_model_are_refused(tmp_path, capsys):
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "minilm.txt").write_text("hello\n")
    np.savez(tmp_path / "rows" / "minilm.npz", text=np.array(["hello"]))
    assert main(["optimize", "minilm", "--artifacts", str(tmp_path / "art"), "--data", str(tmp_path / "rows")]) == 2
    assert "expected one file per model, got both minilm.npz and minilm.txt" in capsys.readouterr().err
