"""Data: tokenizers, text sources, pre-tokenized corpora and grain pipelines (PAPER.md §5).

Names are imported on first use (PEP 562): `python -m scion_jax.data.prepare` and its worker
processes never import grain or JAX, which only the training pipeline needs.
"""

import importlib

# public name -> the submodule that defines it
_EXPORTS = {
    "Corpus": "corpus",
    "PiecedTokens": "corpus",
    "load_corpus": "corpus",
    "TrainIterator": "pipeline",
    "default_data_config": "pipeline",
    "get_tokenizer": "pipeline",
    "make_eval_batches": "pipeline",
    "make_train_iterator": "pipeline",
    "write_prepared": "prepare",
    "ENGLISH": "sources",
    "SHAKESPEARE": "sources",
    "iter_documents": "sources",
    "play_name": "sources",
    "ByteTokenizer": "tokenizers",
    "HFTokenizer": "tokenizers",
    "SentencePieceTokenizer": "tokenizers",
    "load_tokenizer": "tokenizers",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
