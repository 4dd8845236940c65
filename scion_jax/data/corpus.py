"""Tokenized corpora: a token stream per split plus document offsets.

Two ways to get one:
  * in memory, tokenizing a text source on first use (`load_corpus` caches it per process);
  * from a directory written once by ``python -m scion_jax.data.prepare`` (see
    `scion_jax.data.prepare` for the layout): each split is the concatenation, in unit order,
    of per-unit piece files of raw uint16/uint32 tokens read as numpy memmaps (`PiecedTokens`),
    so corpora larger than memory work; ``index.json`` (written last) lists them.

Documents are concatenated; a tokenizer with an EOS id appends it after every document.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from scion_jax.data.sources import Splitter, Unit, read_unit, units
from scion_jax.data.tokenizers import Tokenizer, load_tokenizer, token_dtype, tokenizer_name

INDEX = "index.json"
PLAN = "plan.json"  # written first by prepare: a directory with a plan but no index is partial
FORMAT = "scion_jax.tokens/2"
SPLITS = ("train", "eval")


class PiecedTokens:
    """A read-only 1-D concatenation of token arrays (a prepared split's piece memmaps).

    Supports ``len``, integer-array / slice indexing (what batching needs) and ``np.asarray``
    (which copies the whole split into memory).
    """

    def __init__(self, pieces: Sequence[np.ndarray]):
        self.pieces = [p for p in pieces if len(p)]
        self.dtype = pieces[0].dtype
        self.starts = np.cumsum([0] + [len(p) for p in self.pieces])

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, slice):
            index = np.arange(*index.indices(len(self)))
        index = np.asarray(index, np.int64)
        flat = index.reshape(-1)
        if flat.size and (flat.min() < 0 or flat.max() >= len(self)):
            raise IndexError(f"token index out of range [0, {len(self)}).")
        piece = np.searchsorted(self.starts, flat, side="right") - 1
        out = np.empty(flat.shape, self.dtype)
        for p in np.unique(piece):
            mask = piece == p
            out[mask] = self.pieces[p][flat[mask] - self.starts[p]]
        return out.reshape(index.shape)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.concatenate(self.pieces) if self.pieces else np.empty(0, self.dtype)
        return out if dtype is None else out.astype(dtype)


@dataclasses.dataclass(frozen=True)
class Corpus:
    """One split: ``tokens`` (1-D ints: an array, a memmap or `PiecedTokens`) and
    ``doc_offsets`` (int64 start of each document in ``tokens``)."""

    tokens: np.ndarray | PiecedTokens
    doc_offsets: np.ndarray
    vocab_size: int
    tokenizer: str
    name: str

    @property
    def num_documents(self) -> int:
        return len(self.doc_offsets)


def tokenize_unit(
    unit: Unit, tok: Tokenizer, splitter: Splitter, text_field: str
) -> Iterator[tuple[str, np.ndarray]]:
    """``(split, ids)`` per non-empty document of `unit` (EOS appended when the tokenizer has
    one)."""
    for doc in read_unit(unit, text_field):
        ids = tok.encode(doc.text)
        if tok.eos_id is not None:
            ids = np.append(ids, np.int32(tok.eos_id))
        if ids.size:
            yield splitter.split(doc.group), ids


def no_train_text(source: str) -> ValueError:
    return ValueError(
        f"Data source {source!r} has no text in its training split "
        f"(empty corpus, or every document held out)."
    )


@functools.lru_cache(maxsize=4)
def _in_memory(source: str, tokenizer: str, text_field: str, eval_fraction: float):
    tok = load_tokenizer(tokenizer)
    source_units = units(source)
    splitter = Splitter(source_units, eval_fraction)
    dtype = token_dtype(tok.vocab_size)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for unit in source_units:
        for split, ids in tokenize_unit(unit, tok, splitter, text_field):
            parts[split].append(ids.astype(dtype))
    out = {}
    for split, arrays in parts.items():
        sizes = [len(a) for a in arrays]
        tokens = np.concatenate(arrays) if arrays else np.empty(0, dtype)
        offsets = np.cumsum([0] + sizes[:-1], dtype=np.int64) if arrays else np.empty(0, np.int64)
        out[split] = Corpus(tokens, offsets, tok.vocab_size, tok.name, f"{source}[{split}]")
    if not len(out["train"].tokens):
        raise no_train_text(source)
    return out


def is_prepared(source: str) -> bool:
    return os.path.isfile(os.path.join(source, INDEX))


def read_index(path: str) -> dict[str, Any]:
    with open(os.path.join(path, INDEX)) as f:
        index = json.load(f)
    if index.get("format") != FORMAT:
        raise ValueError(
            f"{path!r} is not a prepared corpus of format {FORMAT!r} (found "
            f"{index.get('format')!r}): prepare it again with `python -m scion_jax.data.prepare`."
        )
    return index


def _piece(path: str, dtype: str, meta: dict[str, Any]) -> np.ndarray:
    file, n = os.path.join(path, meta["tokens"]), int(meta["num_tokens"])
    size = os.path.getsize(file) if os.path.exists(file) else None
    if size != n * np.dtype(dtype).itemsize:
        raise ValueError(
            f"Prepared piece {file!r} has {size} bytes, but the index says {n} {dtype} tokens "
            f"(missing, truncated or modified: prepare again)."
        )
    return np.memmap(file, dtype=dtype, mode="r", shape=(n,)) if n else np.empty(0, dtype)


def _read_prepared(path: str, split: str) -> Corpus:
    index = read_index(path)
    meta = index["splits"][split]
    pieces = [_piece(path, index["dtype"], p) for p in meta["pieces"]]
    nonempty = [p for p in pieces if len(p)]
    if len(nonempty) == 1:
        tokens = nonempty[0]  # a plain memmap
    else:
        tokens = PiecedTokens(pieces) if pieces else np.empty(0, index["dtype"])
    offsets = np.load(os.path.join(path, meta["documents"]))
    return Corpus(tokens, offsets, index["vocab_size"], index["tokenizer"], f"{path}[{split}]")


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
    if os.path.isfile(os.path.join(source, PLAN)):
        raise ValueError(
            f"{source!r} is an unfinished prepare (it has {PLAN} but no {INDEX}): rerun the "
            f"prepare command(s) — finished units are skipped — for every shard."
        )
    return _in_memory(source, tokenizer or "byte", text_field, float(eval_fraction))[split]
