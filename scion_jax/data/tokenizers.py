"""Tokenizers with one small interface: ``vocab_size``, ``eos_id``, ``encode(str)``, ``decode``.

Three kinds, chosen by the spec string:
  * ``"byte"``: UTF-8 bytes (vocab 256), needs nothing;
  * a SentencePiece ``.model`` file (train one with ``python -m scion_jax.data.train_tokenizer``);
  * a Hugging Face ``tokenizer.json`` (any path ending in ``.json``; the `tokenizers` library,
    local file only — Llama-3's 128k tokenizer, the paper's (PAPER.md §5), ships as one).

Special tokens: text is encoded without any BOS or template the tokenizer would add
(``add_special_tokens=False``); the tokenizer's EOS id, when it has one, is appended after
every document, so it separates packed documents. A ``tokenizer.json``'s EOS is the
``eos_token`` of a ``tokenizer_config.json`` beside it (the hub's layout), else the first of
`HF_EOS_TOKENS` in its vocabulary, else none (documents then run together, as with bytes).
"""

from __future__ import annotations

import json
import os
from typing import Protocol

import numpy as np

BYTE = "byte"
# Document separators of common tokenizer.json files, most specific first (Llama-3, GPT-2/our
# trained BPE, Llama-2/T5, Gemma).
HF_EOS_TOKENS = ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>")


class Tokenizer(Protocol):
    """What the data pipeline needs from a tokenizer."""

    name: str  # "byte" or the absolute path of the model / tokenizer.json file
    vocab_size: int
    eos_id: int | None  # appended after each document when not None

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: np.ndarray | list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens (vocab 256, no special tokens)."""

    name = BYTE
    vocab_size = 256
    eos_id = None

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return bytes(np.asarray(ids, np.uint8).tolist()).decode("utf-8", errors="replace")


class SentencePieceTokenizer:
    """A trained SentencePiece model (``.model`` file); its EOS (if any) ends each document."""

    def __init__(self, path: str):
        import sentencepiece as spm

        if not os.path.isfile(path):
            raise ValueError(f"SentencePiece model {path!r} does not exist.")
        self.name = os.path.abspath(path)
        self._sp = spm.SentencePieceProcessor(model_file=path)
        self.vocab_size = int(self._sp.get_piece_size())
        eos = int(self._sp.eos_id())
        self.eos_id = eos if eos >= 0 else None

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text), np.int32)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        return self._sp.decode([int(i) for i in np.asarray(ids).reshape(-1)])


def _hf_eos(path: str, tok) -> int | None:
    config = os.path.join(os.path.dirname(path), "tokenizer_config.json")
    names: tuple[str, ...] = HF_EOS_TOKENS
    if os.path.isfile(config):
        with open(config) as f:
            eos = json.load(f).get("eos_token")
        if isinstance(eos, dict):  # {"content": "</s>", ...} in older configs
            eos = eos.get("content")
        if eos:
            names = (eos,)
    for name in names:
        if (i := tok.token_to_id(name)) is not None:
            return int(i)
    return None


class HFTokenizer:
    """A Hugging Face ``tokenizer.json`` (`tokenizers` library); EOS as in the module docstring."""

    def __init__(self, path: str):
        from tokenizers import Tokenizer as _Tokenizer

        if not os.path.isfile(path):
            raise ValueError(f"Tokenizer file {path!r} does not exist.")
        self.name = os.path.abspath(path)
        try:
            self._tok = _Tokenizer.from_file(path)
        except Exception as e:  # the Rust side raises a bare Exception on a bad file
            raise ValueError(f"{path!r} is not a Hugging Face tokenizer.json: {e}.") from e
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        self.eos_id = _hf_eos(path, self._tok)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, np.int32)

    def decode(self, ids: np.ndarray | list[int]) -> str:
        ids = [int(i) for i in np.asarray(ids).reshape(-1)]
        return self._tok.decode(ids, skip_special_tokens=False)


def load_tokenizer(spec: str | None) -> Tokenizer:
    """``"byte"`` (or None) → bytes; ``*.model`` → SentencePiece; ``*.json`` → HF tokenizers."""
    if spec is None or spec == BYTE:
        return ByteTokenizer()
    spec = str(spec)
    if spec.endswith(".json"):
        return HFTokenizer(spec)
    if spec.endswith(".model"):
        return SentencePieceTokenizer(spec)
    raise ValueError(
        f"Unknown tokenizer {spec!r}: expected 'byte', a SentencePiece .model file or a "
        f"Hugging Face tokenizer .json file."
    )


def tokenizer_name(spec: str | None) -> str:
    """The `name` a tokenizer built from `spec` would have (without loading it)."""
    return BYTE if spec is None or spec == BYTE else os.path.abspath(str(spec))


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest storage dtype for token ids (uint16 up to 65,536 ids, else uint32)."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)
