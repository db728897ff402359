import os

import torch

# Without a GPU, Triton kernels run in Triton's CPU interpreter; it must be switched on before any
# @triton.jit function is defined, so before anything imports tritonize.kernels.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib.util  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from tritonize.models import get_spec, minilm, model_names  # noqa: E402


def _load_by_path(file: str):
    """A helper module of tests/ (s3_fixtures.py, project_records.py), imported by path: under
    --import-mode=importlib tests/ is not importable by name."""
    name = f"tritonize_tests_{Path(file).stem}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / file)
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


# The fast tier (`make test-fast`): the tests that start no tritonserver and build no built-in model,
# for the inner loop; `make test` (CI) stays the whole suite. A test is slow when it is marked `server`
# or `heavy`, or needs a fixture that exports the built-in models or starts a server; in the fast tier a server
# start fails the test, naming the marker it lacks, so the tier cannot grow slow unnoticed.
HEAVY_FIXTURES = frozenset({"artifacts", "cpu_repository", "server", "guarded", "serve_cli", "serve_tiny",
                            "serve_any", "text_server", "mlp_pair", "affine_trio"})


def pytest_addoption(parser):
    parser.addoption("--fast", action="store_true", default=False,
                     help="the fast tier: only tests that start no tritonserver and build no built-in model")


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--fast"):
        return
    slow = [i for i in items if i.get_closest_marker("server") or i.get_closest_marker("heavy")
            or HEAVY_FIXTURES & set(i.fixturenames)]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [i for i in items if i not in set(slow)]


@pytest.fixture(autouse=True)
def _fast_tier_starts_no_server(request, monkeypatch):
    if request.config.getoption("--fast"):
        from tritonize.serving.server import TritonServer

        def refuse(self):
            pytest.fail(f"{request.node.nodeid} starts a tritonserver: mark it @pytest.mark.server "
                        "(the fast tier, pytest --fast, starts none)")

        monkeypatch.setattr(TritonServer, "start", refuse)


# A moto S3 server on loopback, one for the session (`s3_store`), and its AWS_* variables in os.environ
# for one test (`s3_env`).
s3_store = _load_by_path("s3_fixtures.py").s3_store
s3_env = _load_by_path("s3_fixtures.py").s3_env
own_s3_store = _load_by_path("s3_fixtures.py").own_s3_store  # a moto process a test may pause and stop


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    """Every exportable model exported and optimized once, for all tests that need artifacts."""
    from tritonize.export.optimize import optimize_model
    from tritonize.export.stage import export_model

    root = tmp_path_factory.mktemp("artifacts")
    for name in model_names("onnx"):
        export_model(get_spec(name), root)
        # Few latency rounds: the tests check what optimize records and picks, not how fast (benchmarks do).
        optimize_model(get_spec(name), root, latency_iters=5, agreement_rows=256)
    return root


@pytest.fixture(scope="session")
def cpu_repository(artifacts, tmp_path_factory):
    """A CPU-target model repository of every model, kernel models included."""
    from tritonize.model_repository.writer import build_repository

    out = tmp_path_factory.mktemp("serving") / "model_repository"
    build_repository([get_spec(n) for n in model_names()], artifacts, out, "cpu")
    return out


@pytest.fixture(scope="session")
def server(cpu_repository):
    """One real tritonserver for all serving tests, on free loopback ports."""
    from tritonize.serving.server import TritonServer

    with TritonServer(cpu_repository) as s:
        yield s


# all-MiniLM-L6-v2 text to ids and mask, as sentence-transformers does it: the reference the MiniLM
# tests compare the encoder, its ONNX variants and the Triton tokenizer backend with (tritonize itself
# tokenizes only in that backend). The `tokenizers` library on the folder's tokenizer.json, as the
# backend uses it: it is what transformers' AutoTokenizer wraps for this model anyway.

def _load_minilm_tokenizer():
    """The model's fast tokenizer, truncating at max_seq_length (256) and padding on the right to the
    longest sentence of each batch; the file itself ships truncation at 128 and fixed padding to 128."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm.model_folder() / "tokenizer.json"))
    _configure_minilm_tokenizer(tokenizer, minilm.pipeline().max_seq_len)
    return tokenizer


def _configure_minilm_tokenizer(tokenizer, max_len):
    """Truncate at `max_len` tokens (special tokens included), pad on the right to the batch's longest;
    set only where they differ, so a shared tokenizer is not changed per call."""
    truncation = tokenizer.truncation
    if not truncation or truncation["max_length"] != max_len or truncation["direction"] != "right":
        tokenizer.enable_truncation(max_length=max_len, strategy="longest_first", direction="right")
    padding = tokenizer.padding
    if not padding or padding["length"] is not None or padding["direction"] != "right" or padding["pad_to_multiple_of"]:
        if padding:  # the file's own padding token (for BERT: [PAD], id 0)
            pad_id, pad_token = padding["pad_id"], padding["pad_token"]
        else:
            pad_id, pad_token = tokenizer.token_to_id("[PAD]"), "[PAD]"
            assert pad_id is not None, "the tokenizer has no padding settings and no [PAD] token"
        tokenizer.enable_padding(direction="right", pad_id=pad_id, pad_token=pad_token, length=None)


def _minilm_tokenize(texts, tokenizer, max_len=None):
    """input_ids and attention_mask, int64 [len(texts), longest sentence of this batch]: [CLS] text
    [SEP], truncated at `max_len` (default: the model's max_seq_length); "" gives [CLS] [SEP]."""
    assert not isinstance(texts, str) and len(texts) > 0
    _configure_minilm_tokenizer(tokenizer, minilm.pipeline().max_seq_len if max_len is None else max_len)
    encodings = tokenizer.encode_batch(list(texts))
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


@pytest.fixture(scope="session")
def load_minilm_tokenizer():
    """load_minilm_tokenizer() -> a new all-MiniLM-L6-v2 tokenizer, set up as sentence-transformers uses it."""
    return _load_minilm_tokenizer


@pytest.fixture(scope="session")
def minilm_tokenize():
    """minilm_tokenize(texts, tokenizer, max_len=None) -> {"input_ids", "attention_mask"} int64 arrays."""
    return _minilm_tokenize


@pytest.fixture
def project_records():
    """tests/project_records.py: builders of the project benchmark's records (scaling, floor, level)."""
    return _load_by_path("project_records.py")
