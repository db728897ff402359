"""all-MiniLM-L6-v2 served text in, embeddings out, against sentence-transformers' own encode."""
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tritonize.client import TritonClient
from tritonize.export.optimize import PRECISION
from tritonize.models import get_spec, minilm

pytestmark = pytest.mark.server

SENTENCES = [
    "Triton serves models over gRPC and HTTP.",
    "Das ist ein ganz normaler Satz auf Deutsch.",
    "日本語の文です。",
    "Привет, как дела?",
    "🙂🚀",
    "a",
    "",
    "tokens " * 400,  # far over 256 tokens: truncated, as sentence-transformers does
]


def _texts(sentences):
    return {"text": np.array([[s.encode("utf-8")] for s in sentences], dtype=object)}


def _cosine(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm.model_folder()), device="cpu")
    return model.encode(SENTENCES, convert_to_numpy=True)


def test_served_embeddings_match_sentence_transformers(server, cpu_repository, reference):
    variant = json.loads((cpu_repository / "repository.json").read_text())["models"]["minilm"]["variant"]
    assert PRECISION[variant] == "fp32"  # the bound below is the FP32 one
    with TritonClient(server.grpc_url) as client:
        served = client.infer("minilm_text", _texts(SENTENCES))["embeddings"]
    assert served.shape == (len(SENTENCES), 384) and served.dtype == np.float32
    assert _cosine(served, reference).min() >= 0.9999


def test_same_vectors_alone_or_batched_with_other_lengths(server):
    with TritonClient(server.grpc_url) as client:
        together = client.infer("minilm_text", _texts(SENTENCES))["embeddings"]
        with ThreadPoolExecutor(len(SENTENCES)) as pool:  # concurrent: the dynamic batcher may merge them
            alone = list(pool.map(lambda s: client.infer("minilm_text", _texts([s]))["embeddings"][0], SENTENCES))
    assert _cosine(np.stack(alone), together).min() >= 0.99999


def test_bad_text_is_refused_and_the_server_stays_up(server):
    raw = grpcclient.InferenceServerClient(server.grpc_url)
    bad = grpcclient.InferInput("text", [2, 1], "BYTES")
    bad.set_data_from_numpy(np.array([[b"fine"], [b"\xff\xfe broken"]], dtype=object))
    with pytest.raises(InferenceServerException) as e:
        raw.infer("minilm_text", [bad])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "row 1 is not valid UTF-8" in str(e.value)
    too_many = grpcclient.InferInput("text", [33, 1], "BYTES")
    too_many.set_data_from_numpy(np.array([[b"x"]] * 33, dtype=object))
    with pytest.raises(InferenceServerException, match="batch-size must be <= 32"):
        raw.infer("minilm_text", [too_many])
    with TritonClient(server.grpc_url) as client:  # the client splits a batch over the max instead
        out = client.infer("minilm_text", _texts(["x"] * 40))["embeddings"]
    assert out.shape == (40, 384) and raw.is_server_ready()


def test_int8_variant_keeps_the_stated_cosine_bound(artifacts, reference, load_minilm_tokenizer, minilm_tokenize):
    from tritonize.export.runtime import ort_session, run_ort

    spec = get_spec("minilm")
    session = ort_session(artifacts / "minilm" / "variants" / "int8" / "model.onnx")
    tokenizer = load_minilm_tokenizer()
    rows = [run_ort(session, spec, minilm_tokenize([s], tokenizer))["embeddings"][0] for s in SENTENCES]
    assert _cosine(np.stack(rows), reference).min() >= 0.97  # measured 0.979 on real sentences


def test_cli_infer_sends_text(server):
    out = subprocess.run([sys.executable, "-P", "-m", "tritonize.cli", "infer", "minilm", "--url", server.grpc_url,
                          "--text", "hello there", "--text", "second sentence"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "model minilm_text" in out.stdout and "embeddings" in out.stdout and "[2,384]" in out.stdout
