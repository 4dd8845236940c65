"""Tokenized corpora: a flat token stream per split plus document offsets.

Two ways to get one:
  * in memory, tokenizing a text source on first use (`load_corpus` caches it per process);
  * from a directory written once by ``python -m scion_jax.data.prepare`` (`write_prepared`):
    ``{split}.bin`` (raw uint16/uint32 tokens, read as a numpy memmap), ``{split}.docs.npy``
    (int64 start offset of each document) and ``index.json`` (vocab size, tokenizer, dtype,
    token and document counts). Training reads the memmap, so corpora larger than memory work.

Documents are concatenated; a tokenizer with an EOS id appends it after every document.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

import numpy as np

from scion_jax.data.sources import Splitter, iter_documents
from scion_jax.data.tokenizers import Tokenizer, load_tokenizer, token_dtype, tokenizer_name

INDEX = "index.json"
FORMAT = "scion_jax.tokens/1"
SPLITS = ("train", "eval")


@dataclasses.dataclass(frozen=True)
class Corpus:
    """One split: ``tokens`` (1-D ints, possibly a memmap) and ``doc_offsets`` (starts)."""

    tokens: np.ndarray
    doc_offsets: np.ndarray
    vocab_size: int
    tokenizer: str
    name: str

    @property
    def num_documents(self) -> int:
        return len(self.doc_offsets)


def is_prepared(source: str) -> bool:
    return os.path.isfile(os.path.join(source, INDEX))


def _tokenize_document(tok: Tokenizer, text: str) -> np.ndarray:
    ids = tok.encode(text)
    if tok.eos_id is not None:
        ids = np.append(ids, np.int32(tok.eos_id))
    return ids


class _SplitWriter:
    """Accumulates a split's tokens in memory or appends them to ``{split}.bin``."""

    def __init__(self, dtype: np.dtype, path: str | None):
        self.dtype, self.path = dtype, path
        self.parts: list[np.ndarray] = []
        self.offsets: list[int] = []
        self.count = 0
        self.file = open(path, "wb") if path else None  # noqa: SIM115 (closed in finish)

    def add(self, ids: np.ndarray) -> None:
        if ids.size == 0:
            return
        self.offsets.append(self.count)
        self.count += int(ids.size)
        ids = ids.astype(self.dtype)
        if self.file:
            ids.tofile(self.file)
        else:
            self.parts.append(ids)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        offsets = np.asarray(self.offsets, np.int64)
        if self.file:
            self.file.close()
            return np.empty(0, self.dtype), offsets
        tokens = np.concatenate(self.parts) if self.parts else np.empty(0, self.dtype)
        return tokens, offsets


def _tokenize(
    source: str, tok: Tokenizer, text_field: str, eval_fraction: float, out_dir: str | None
) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    splitter = Splitter(source, eval_fraction)
    dtype = token_dtype(tok.vocab_size)
    writers = {
        s: _SplitWriter(dtype, os.path.join(out_dir, f"{s}.bin") if out_dir else None)
        for s in SPLITS
    }
    for doc in iter_documents(source, text_field):
        writers[splitter.split(doc.group)].add(_tokenize_document(tok, doc.text))
    out = {}
    for split, w in writers.items():
        tokens, offsets = w.finish()
        out[split] = (tokens, offsets, w.count)
    if out["train"][2] == 0:
        raise ValueError(
            f"Data source {source!r} has no text in its training split "
            f"(empty corpus, or every document held out)."
        )
    return out


def write_prepared(
    source: str,
    out_dir: str,
    tokenizer: str = "byte",
    text_field: str = "text",
    eval_fraction: float = 0.0,
) -> dict[str, Any]:
    """Tokenizes `source` once into `out_dir` (see module docstring); returns the index."""
    tok = load_tokenizer(tokenizer)
    os.makedirs(out_dir, exist_ok=True)
    splits = _tokenize(source, tok, text_field, eval_fraction, out_dir)
    index: dict[str, Any] = {
        "format": FORMAT,
        "source": source,
        "tokenizer": tok.name,
        "vocab_size": tok.vocab_size,
        "dtype": token_dtype(tok.vocab_size).name,
        "eval_fraction": eval_fraction,
        "text_field": text_field,
        "splits": {},
    }
    for split, (_, offsets, count) in splits.items():
        np.save(os.path.join(out_dir, f"{split}.docs.npy"), offsets)
        index["splits"][split] = {
            "tokens": f"{split}.bin",
            "documents": f"{split}.docs.npy",
            "num_tokens": count,
            "num_documents": len(offsets),
        }
    with open(os.path.join(out_dir, INDEX), "w") as f:
        json.dump(index, f, indent=2)
    return index


def read_index(path: str) -> dict[str, Any]:
    with open(os.path.join(path, INDEX)) as f:
        index = json.load(f)
    if index.get("format") != FORMAT:
        raise ValueError(f"{path!r} is not a prepared corpus of format {FORMAT!r}.")
    return index


def _read_prepared(path: str, split: str) -> Corpus:
    index = read_index(path)
    meta = index["splits"][split]
    file = os.path.join(path, meta["tokens"])
    n = meta["num_tokens"]
    tokens = (
        np.memmap(file, dtype=index["dtype"], mode="r", shape=(n,))
        if n
        else np.empty(0, index["dtype"])
    )
    offsets = np.load(os.path.join(path, meta["documents"]))
    return Corpus(tokens, offsets, index["vocab_size"], index["tokenizer"], f"{path}[{split}]")


@functools.lru_cache(maxsize=4)
def _in_memory(source: str, tokenizer: str, text_field: str, eval_fraction: float):
    tok = load_tokenizer(tokenizer)
    splits = _tokenize(source, tok, text_field, eval_fraction, None)
    return {
        s: Corpus(t, o, tok.vocab_size, tok.name, f"{source}[{s}]")
        for s, (t, o, _) in splits.items()
    }


def load_corpus(
    source: str,
    split: str,
    tokenizer: str = "byte",
    text_field: str = "text",
    eval_fraction: float = 0.1,
) -> Corpus:
    """The `split` ("train" or "eval") of `source` (a text source or a prepared directory).

    For a prepared directory the tokenizer and split are the ones it was prepared with;
    a different `tokenizer` raises ValueError.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    if is_prepared(source):
        corpus = _read_prepared(source, split)
        wanted = tokenizer_name(tokenizer) if tokenizer else corpus.tokenizer
        if wanted != corpus.tokenizer:
            raise ValueError(
                f"Prepared corpus {source!r} was tokenized with "
                f"{corpus.tokenizer!r}, but the config asks for {wanted!r}."
            )
        return corpus
    return _in_memory(source, tokenizer or "byte", text_field, float(eval_fraction))[split]
