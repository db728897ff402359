"""examples/minilm_classifier.py: all-MiniLM-L6-v2 with a 3-class topic head, taken by its reference through
export -> optimize -> repo -> a real tritonserver, and served text in, probabilities out."""
import functools
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import tritonize.export.optimize
import tritonize.models.registry
from tritonize.cli import main
from tritonize.client import TritonClient
from tritonize.models import minilm
from tritonize.models.registry import get_spec
from tritonize.serving.server import TritonServer

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "minilm_classifier.py"
REFERENCE = f"{EXAMPLE}:SPEC"

# Real sentences of mixed topics and lengths (none is a seed sentence of the head).
SENTENCES = [
    "The quarterback threw a touchdown pass in the Super Bowl.",
    "Apple announced a new chip for its computers.",
    "I baked a chocolate cake with strawberries.",
    "Tennis star wins Wimbledon title.",
    "The GPU accelerates deep learning workloads.",
    "Add salt and pepper to the soup.",
    "Who won the football game last night?",
    "My phone battery dies too quickly.",
    "Pizza with mozzarella and olives",
    "Goal!",
    "Python 3.13 ships a faster interpreter and a new garbage collector.",
    "After a slow start in the first half, the visiting side pressed high, won the ball back near the "
    "box again and again, and finally equalized through a header from a corner in stoppage time.",
    "Slice the onions thinly, fry them in butter until golden, then deglaze the pan with white wine "
    "and let the sauce reduce for ten minutes before stirring in the cream.",
    "The database migration failed because the schema change locked the table for hours.",
    "Sushi",
    "The cyclist attacked on the final climb and took the yellow jersey.",
    "Our router keeps dropping the Wi-Fi connection every evening.",
    "Grandma's apple pie recipe uses cinnamon, nutmeg and a buttery crust.",
    "Olympic swimmers train for hours in the pool every day.",
    "The compiler optimizes loops by unrolling them and vectorizing the arithmetic.",
    "A bowl of ramen with a soft-boiled egg is the perfect winter dinner.",
    "weather",
    "The referee showed a red card after a reckless tackle.",
    "Quantum computers may one day break today's encryption.",
]
ON_TOPIC = {
    "sports": "The basketball player scored thirty points and the team won the playoff game.",
    "technology": "The new laptop has a faster processor, more memory and a better graphics card.",
    "food": "Fresh pasta with tomato sauce, basil and grated parmesan cheese.",
}


def load_example():
    spec = importlib.util.spec_from_file_location("minilm_classifier_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _texts(sentences):
    return {"text": np.array([[s.encode("utf-8")] for s in sentences], dtype=object)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The user's own folder, outside the checkout, with the example exported into art/ once."""
    home = tmp_path_factory.mktemp("users_project")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tritonize.models.registry, "_RESOLVED", {})
        patch.chdir(home)
        assert main(["export", REFERENCE, "--artifacts", "art"]) == 0
    return home


def _fewer_rows(monkeypatch, agreement_rows):
    # `tritonize optimize` checks each variant on 1000 random rows and times the max batch 100 times;
    # CI checks fewer rows, as fast.
    monkeypatch.setattr(tritonize.export.optimize, "optimize_model", functools.partial(
        tritonize.export.optimize.optimize_model, agreement_rows=agreement_rows, latency_iters=3))


@pytest.mark.server
def test_the_classifier_goes_from_its_file_to_a_real_server_text_in(exported, monkeypatch,
                                                                     load_minilm_tokenizer, minilm_tokenize):
    monkeypatch.setattr(tritonize.models.registry, "_RESOLVED", {})
    _fewer_rows(monkeypatch, 32)
    home = exported
    monkeypatch.chdir(home)
    assert main(["optimize", REFERENCE, "--artifacts", "art", "--variants", "fp32"]) == 0
    assert main(["repo", REFERENCE, "--artifacts", "art", "--out", "repo"]) == 0

    spec = get_spec(REFERENCE)
    assert spec.name == "minilm_topics" and spec.classifier
    served = json.loads((home / "repo" / "repository.json").read_text())["models"]
    assert served[spec.name]["variant"] == "fp32"
    assert {spec.name + "_tokenizer", spec.name + "_text"} <= set(served)

    example = load_example()
    module = spec.factory()
    tokenizer = load_minilm_tokenizer()
    tolerance = spec.tolerance("fp32")
    with TritonServer(home / "repo") as server, TritonClient(server.grpc_url) as client:
        got = client.infer(spec.name + "_text", _texts(SENTENCES))["probabilities"]
        on_topic = client.infer(spec.name + "_text", _texts(list(ON_TOPIC.values())))["probabilities"]

    # PyTorch in-process on the same tokens the server's tokenizer makes (one request: padded together).
    tokens = minilm_tokenize(SENTENCES, tokenizer)
    with torch.no_grad():
        want = module(*(torch.from_numpy(tokens[n]) for n in minilm.INPUT_NAMES)).numpy()
    assert got.shape == (len(SENTENCES), 3) and got.dtype == np.float32
    assert np.allclose(got, want, atol=tolerance.atol, rtol=tolerance.rtol), np.abs(got - want).max()
    assert np.allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()
    assert [example.CLASSES[i] for i in on_topic.argmax(axis=1)] == list(ON_TOPIC)
    assert (on_topic.max(axis=1) > 0.8).all(), on_topic


@pytest.mark.heavy  # exports and quantizes the classifier: about a minute
def test_int8_misses_the_budget_on_random_tokens_and_meets_it_on_the_users_sentences(exported, tmp_path, monkeypatch,
                                                                                      capsys):
    """Dynamic INT8 moves this head's probabilities by more than a 0.05 budget on random token ids (text no
    user sends), and by less on real sentences: judged on the user's sentences it may be picked, and the
    choice says what it was judged on."""
    monkeypatch.setattr(tritonize.models.registry, "_RESOLVED", {})
    _fewer_rows(monkeypatch, 256)  # fewer random rows may all miss the ones INT8 gets wrong
    shutil.copytree(exported / "art", tmp_path / "art")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sentences.txt").write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    choice_file = tmp_path / "art" / "minilm_topics" / "variants" / "choice.json"
    budget = ["--variants", "fp32", "int8", "--accuracy", "max_abs<=0.05", "--accuracy", "top1>=0.99"]

    assert main(["optimize", REFERENCE, "--artifacts", "art", *budget, "--accuracy-on-random-rows"]) == 0
    on_random = json.loads(choice_file.read_text())
    assert on_random["chosen"] == "fp32", on_random["rejected"]
    assert on_random["rejected"]["int8"].startswith("misses the accuracy budget: max_abs<=0.05")
    assert on_random["data"]["data"] == "random example inputs"

    capsys.readouterr()
    assert main(["optimize", REFERENCE, "--artifacts", "art", *budget, "--data", "sentences.txt"]) == 0
    choice = json.loads(choice_file.read_text())
    int8 = choice["variants"]["int8"]
    assert "int8" not in choice["rejected"] and int8["top1_agreement"] == 1.0 and int8["max_abs_err"] <= 0.05
    p50 = {n: choice["variants"][n]["latency"]["batch1"]["p50_ms"] for n in ("fp32", "int8")}
    assert choice["chosen"] == min(p50, key=p50.get)  # the latency objective: the faster at batch 1
    assert choice["accuracy"] == {"budgets": ["max_abs<=0.05", "top1>=0.99"], "lossy_pick": choice["chosen"] == "int8",
                                  "judged_on": "your data"}
    digest = hashlib.sha256((tmp_path / "sentences.txt").read_bytes()).hexdigest()
    assert choice["data"] == {"data": str(tmp_path / "sentences.txt"), "sha256": digest, "rows": len(SENTENCES),
                              "sentences": True, "seq_lens": choice["data"]["seq_lens"]}
    assert choice["why"].endswith(f"judged on your data {tmp_path / 'sentences.txt'}")
    assert f"variants judged on {tmp_path / 'sentences.txt'} ({len(SENTENCES)} rows" in capsys.readouterr().out
