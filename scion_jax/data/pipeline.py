"""The training and eval input pipelines (grain), and the config the trainer passes in.

Packing: a split's token stream ``x`` gives ``N = (len(x) − 1) // T`` sequences; sequence ``i``
is ``x[i·T : i·T + T + 1]`` (``inputs`` its first T tokens, ``targets`` its last T), so every
token is a target exactly once per epoch and documents are packed back to back.

Order: global step ``s`` of epoch ``e`` takes sequences ``k·B .. k·B + B − 1`` (``k = s mod
steps_per_epoch``, ``B`` the global batch) of epoch ``e``'s permutation (grain's index shuffle,
seeded by ``seed + e``); process ``p`` of ``P`` gets the ``p``-th contiguous slice of B/P.
The trailing ``N mod B`` sequences of each epoch's permutation are skipped (a different set
each epoch).

Epochs (``num_epochs``): the paper never repeats data (PAPER.md §5). Our default, None, repeats
(with a fresh permutation per epoch) so a fixed-step run never dies on a small corpus; the
iterator's ``epoch`` says which epoch the last batch came from — log it, and set
``num_epochs=1`` to forbid repetition (the iterator then stops after one pass; given the run's
``num_steps``, `make_train_iterator` refuses up front a run that would need more data).
"""

from __future__ import annotations

from typing import Any

import grain
import ml_collections
import numpy as np
from ml_collections import config_dict

from scion_jax.data.corpus import Corpus, is_prepared, load_corpus, read_index
from scion_jax.data.tokenizers import Tokenizer, load_tokenizer

_FOREVER = 2**62  # batches in a repeating pipeline (grain datasets need a length)


def default_data_config() -> ml_collections.ConfigDict:
    """The data config (keys read by this module).

    source: "shakespeare" (the quickstart's), "english" (≈ 60 MB: Shakespeare, KJV, GCIDE,
      WordNet; ``make corpus``), a .txt/.jsonl/.parquet path, directory or glob, or a
      directory written by ``python -m scion_jax.data.prepare``.
    tokenizer: "byte", a SentencePiece ``.model`` or a Hugging Face ``tokenizer.json``.
    text_field: jsonl field / parquet column holding the text.
    eval_fraction: fraction of document groups held out (ignored for prepared dirs, which
      carry their own split).
    num_epochs: None repeats forever (epoch counter exposed); k stops after k epochs.
    read_threads, prefetch: grain read threads and prefetch buffer (batches).
    """
    return ml_collections.ConfigDict(
        dict(
            source="shakespeare",
            tokenizer="byte",
            text_field="text",
            eval_fraction=0.1,
            num_epochs=config_dict.placeholder(int),  # None; typed for --config overrides
            read_threads=1,
            prefetch=4,
        )
    )


def _get(cfg: Any, key: str) -> Any:
    defaults = default_data_config()
    if hasattr(cfg, "get"):
        return cfg.get(key, defaults[key])
    return getattr(cfg, key, defaults[key])


def _corpus(data_cfg: Any, split: str) -> Corpus:
    return load_corpus(
        str(_get(data_cfg, "source")),
        split,
        _get(data_cfg, "tokenizer"),
        _get(data_cfg, "text_field"),
        _get(data_cfg, "eval_fraction"),
    )


def get_tokenizer(data_cfg: Any) -> Tokenizer:
    """The tokenizer of `data_cfg` (a prepared directory's own tokenizer if it is one)."""
    source = str(_get(data_cfg, "source"))
    if is_prepared(source):
        return load_tokenizer(read_index(source)["tokenizer"])
    return load_tokenizer(_get(data_cfg, "tokenizer"))


def num_sequences(corpus: Corpus, seq_len: int) -> int:
    """How many packed ``seq_len + 1`` windows the split holds (raises if none)."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be positive, got {seq_len}.")
    n = (len(corpus.tokens) - 1) // seq_len
    if n < 1:
        raise ValueError(
            f"Corpus {corpus.name} has {len(corpus.tokens)} tokens, fewer than one "
            f"sequence of seq_len + 1 = {seq_len + 1}."
        )
    return n


def gather_sequences(tokens: np.ndarray, indices: np.ndarray, seq_len: int) -> dict[str, Any]:
    """``{"inputs", "targets"}`` int32 ``[len(indices), seq_len]`` for packed windows."""
    offsets = np.asarray(indices, np.int64)[:, None] * seq_len + np.arange(seq_len + 1)
    window = np.asarray(tokens[offsets], np.int32)
    return {"inputs": window[:, :-1], "targets": window[:, 1:]}


class _BatchAt:
    """Global step → this process's batch (a picklable grain map function)."""

    def __init__(
        self, tokens, order, seq_len, global_batch, local_batch, process_index, steps_per_epoch
    ):
        self.tokens, self.order, self.seq_len = tokens, order, seq_len
        self.global_batch, self.local_batch = global_batch, local_batch
        self.process_index, self.steps_per_epoch = process_index, steps_per_epoch

    def __call__(self, step: int) -> dict[str, Any]:
        epoch, k = divmod(int(step), self.steps_per_epoch)
        n = len(self.order)
        start = k * self.global_batch + self.process_index * self.local_batch
        # Index e·n + i of the shuffled range is epoch e's permutation at i (seed + e).
        shuffled = [self.order[epoch * n + start + r] % n for r in range(self.local_batch)]
        return gather_sequences(self.tokens, np.asarray(shuffled), self.seq_len)


class TrainIterator(grain.DatasetIterator):
    """Batches ``{"inputs", "targets"}``; ``epoch`` / ``step`` for logging; grain state for
    exact resume (save with ``grain.checkpoint.CheckpointSave(it)`` in an orbax manager)."""

    def __init__(self, parent: grain.DatasetIterator, steps_per_epoch: int):
        super().__init__(parent)
        self.steps_per_epoch = steps_per_epoch
        self.step = 0  # batches returned so far

    def __next__(self) -> dict[str, Any]:
        batch = next(self._parent)
        self.step += 1
        return batch

    @property
    def epoch(self) -> int:
        """0-based epoch of the last batch returned (0 before the first)."""
        return max(self.step - 1, 0) // self.steps_per_epoch

    def get_state(self) -> dict[str, Any]:
        return {"step": self.step, "parent": self._parent.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self.step = int(state["step"])


def make_train_iterator(
    data_cfg: Any,
    *,
    seq_len: int,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    num_steps: int | None = None,
) -> TrainIterator:
    """This process's training batches: dicts of int32 ``[global_batch_size / process_count,
    seq_len]`` ``inputs`` and ``targets`` (see the module docstring for order and epochs).

    `num_steps`, the run's length, lets a run with ``num_epochs`` set fail here, before any
    training, when ``num_steps · global_batch_size · seq_len`` tokens would need more epochs
    than ``num_epochs`` of the training split.
    """
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"Bad process_index {process_index} / process_count {process_count}.")
    if global_batch_size < 1 or global_batch_size % process_count:
        raise ValueError(
            f"global_batch_size {global_batch_size} is not a positive multiple of "
            f"process_count {process_count}."
        )
    corpus = _corpus(data_cfg, "train")
    n = num_sequences(corpus, seq_len)
    steps_per_epoch = n // global_batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"Corpus {corpus.name} packs into {n} sequences of {seq_len + 1} "
            f"tokens, fewer than one global batch of {global_batch_size}."
        )
    num_epochs = _get(data_cfg, "num_epochs")
    if num_epochs is not None and int(num_epochs) < 1:
        raise ValueError(f"num_epochs must be None or ≥ 1, got {num_epochs}.")
    total = _FOREVER if num_epochs is None else int(num_epochs) * steps_per_epoch
    if num_steps is not None and num_steps > total:
        raise ValueError(
            f"A run of {num_steps} steps × batch {global_batch_size} × seq_len {seq_len} = "
            f"{num_steps * global_batch_size * seq_len:,} tokens exceeds num_epochs={num_epochs}"
            f" × {steps_per_epoch * global_batch_size * seq_len:,} tokens of {corpus.name} "
            f"({len(corpus.tokens):,} tokens, {steps_per_epoch} steps per epoch): it would "
            f"repeat data. Train ≤ {total} steps, use a larger source (e.g. 'english'), or "
            f"set data.num_epochs=None to allow repetition."
        )
    order = grain.MapDataset.range(n).shuffle(seed=int(seed) % 2**32)
    batch_at = _BatchAt(
        corpus.tokens,
        order,
        seq_len,
        global_batch_size,
        global_batch_size // process_count,
        process_index,
        steps_per_epoch,
    )
    options = grain.ReadOptions(
        num_threads=int(_get(data_cfg, "read_threads")),
        prefetch_buffer_size=int(_get(data_cfg, "prefetch")),
    )
    dataset = grain.MapDataset.range(total).map(batch_at).to_iter_dataset(options)
    return TrainIterator(iter(dataset), steps_per_epoch)


def make_eval_batches(
    data_cfg: Any, *, seq_len: int, batch_size: int, num_batches: int, spread: bool = False
) -> list[dict[str, np.ndarray]]:
    """Fixed eval batches of ``batch_size · num_batches`` packed sequences of the held-out
    split (the same on every call): its first ones in corpus order, or with `spread` ones
    evenly spaced over the whole split, so that every held-out document group (play, book,
    dictionary range, ...) is in the set in proportion to its tokens (±1 sequence)."""
    corpus = _corpus(data_cfg, "eval")
    if len(corpus.tokens) == 0:
        raise ValueError(
            f"Data source {_get(data_cfg, 'source')!r} has an empty held-out split "
            f"(eval_fraction={_get(data_cfg, 'eval_fraction')})."
        )
    n = num_sequences(corpus, seq_len)
    count = batch_size * num_batches
    if count > n:
        raise ValueError(
            f"Held-out split {corpus.name} has {n} sequences of {seq_len + 1} "
            f"tokens; {num_batches} batches of {batch_size} need {count}."
        )
    indices = np.arange(count) * n // count if spread else np.arange(count)
    return [
        gather_sequences(corpus.tokens, indices[i * batch_size : (i + 1) * batch_size], seq_len)
        for i in range(num_batches)
    ]
