"""How text becomes a BERT-family model's token inputs: the model's own fast tokenizer (its
tokenizer.json), [CLS] text [SEP], truncated at the model's maximum sequence length and padded on the
right to the longest sentence of each batch, with an attention mask of 1 for tokens and 0 for padding.

This is the one implementation. The Triton tokenizer backend runs it server-side (a repository copies
this file beside the backend's model.py, so it imports nothing but numpy and `tokenizers`: it must run
in NVIDIA's Triton container, where tritonize is not installed), and export runs it on a user's
sentences (`--data sentences.txt`), so parity is judged on exactly the ids the server will produce.
"""
import numpy as np

OUTPUT_NAMES = ("input_ids", "attention_mask")


def load_tokenizer(path, max_seq_len):
    """The fast tokenizer from `path`, truncating at `max_seq_len` tokens (special tokens included) and
    padding on the right to the longest sentence of each encode_batch call. A tokenizer.json may carry
    its own truncation and fixed-length padding (all-MiniLM-L6-v2's: 128); both are replaced."""
    from tokenizers import Tokenizer

    max_seq_len = int(max_seq_len)
    if max_seq_len < 2:
        raise ValueError(f"max_seq_len must be at least 2 ([CLS] and [SEP]), got {max_seq_len}")
    tokenizer = Tokenizer.from_file(str(path))
    padding = tokenizer.padding
    if padding:
        pad_id, pad_token = padding["pad_id"], padding["pad_token"]
    else:
        pad_id, pad_token = tokenizer.token_to_id("[PAD]"), "[PAD]"
        if pad_id is None:
            raise ValueError(f"{path}: no padding settings and no [PAD] token")
    tokenizer.enable_truncation(max_length=max_seq_len, strategy="longest_first", direction="right")
    tokenizer.enable_padding(direction="right", pad_id=pad_id, pad_token=pad_token, length=None)
    return tokenizer


def encode(tokenizer, texts):
    """input_ids, attention_mask: int64 [len(texts), longest of these texts]."""
    if not texts:
        empty = np.zeros((0, 0), dtype=np.int64)
        return empty, empty.copy()
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    return ids, mask
