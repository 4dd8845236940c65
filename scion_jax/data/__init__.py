"""Data: tokenizers, text sources, pre-tokenized corpora and grain pipelines (PAPER.md §5)."""

from scion_jax.data.corpus import Corpus, PiecedTokens, load_corpus
from scion_jax.data.pipeline import (
    TrainIterator,
    default_data_config,
    get_tokenizer,
    make_eval_batches,
    make_train_iterator,
)
from scion_jax.data.prepare import write_prepared
from scion_jax.data.sources import ENGLISH, SHAKESPEARE, iter_documents, play_name
from scion_jax.data.tokenizers import (
    ByteTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    load_tokenizer,
)

__all__ = [
    "ENGLISH",
    "SHAKESPEARE",
    "ByteTokenizer",
    "Corpus",
    "HFTokenizer",
    "PiecedTokens",
    "SentencePieceTokenizer",
    "TrainIterator",
    "default_data_config",
    "get_tokenizer",
    "iter_documents",
    "load_corpus",
    "load_tokenizer",
    "make_eval_batches",
    "make_train_iterator",
    "play_name",
    "write_prepared",
]
