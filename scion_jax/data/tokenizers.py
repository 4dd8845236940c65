"""Tokenizers with one small interface: ``vocab_size``, ``encode(str)``, ``decode(ids)``.

The byte-level tokenizer (vocab 256) needs nothing; a SentencePiece model is trained offline
with ``python -m scion_jax.data.train_tokenizer`` (hub tokenizers cannot be downloaded here,
see DATA.md). The paper used the Llama-3 tokenizer (vocab 128,256, PAPER.md §5).
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

BYTE = "byte"


class Tokenizer(Protocol):
    """What the data pipeline needs from a tokenizer."""

    name: str  # "byte" or the path of the SentencePiece model
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


def load_tokenizer(spec: str | None) -> Tokenizer:
    """``"byte"`` (or None) → `ByteTokenizer`; a ``.model`` path → `SentencePieceTokenizer`."""
    if spec is None or spec == BYTE:
        return ByteTokenizer()
    return SentencePieceTokenizer(str(spec))


def tokenizer_name(spec: str | None) -> str:
    """The `name` a tokenizer built from `spec` would have (without loading it)."""
    return BYTE if spec is None or spec == BYTE else os.path.abspath(str(spec))


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest storage dtype for token ids (uint16 up to 65,536 ids, else uint32)."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)
