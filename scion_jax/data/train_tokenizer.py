"""Train a tokenizer offline (hub tokenizers cannot be downloaded here; DATA.md).

    python -m scion_jax.data.train_tokenizer --input=GLOB --vocab_size=8192 --output=tok.model
    python -m scion_jax.data.train_tokenizer --input=GLOB --vocab_size=32768 --output=tok.json

The output's extension picks the library:
  * ``.model``: SentencePiece, BPE by default (8k on 10 MB takes about a second), byte fallback
    so every input is encodable, EOS piece ``</s>`` (id 1);
  * ``.json``: a Hugging Face `tokenizers` byte-level BPE (GPT-2 style: every byte is a base
    token, so every input is encodable and decoding is lossless), EOS ``<|endoftext|>`` (id 0).
No BOS is defined; the data pipeline appends the EOS after each document.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

from scion_jax.data.sources import iter_documents

HF_EOS = "<|endoftext|>"


def _lines(source: str, text_field: str) -> Iterator[str]:
    for doc in iter_documents(source, text_field):
        for line in doc.text.splitlines():
            if line.strip():
                yield line


def _train_sentencepiece(
    source: str, output: str, vocab_size: int, model_type: str, text_field: str
) -> None:
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=_lines(source, text_field),
        model_prefix=output.removesuffix(".model"),
        vocab_size=vocab_size,
        model_type=model_type,
        byte_fallback=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=-1,
        eos_id=1,
        pad_id=-1,
        minloglevel=2,
    )


def _train_hf_bpe(source: str, output: str, vocab_size: int, text_field: str) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[HF_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Whole documents, not lines: the byte-level pre-tokenizer splits them itself, and merges
    # then learn the newline / indentation runs the corpus has.
    tok.train_from_iterator((d.text for d in iter_documents(source, text_field)), trainer)
    tok.save(output)


def train_tokenizer(
    source: str,
    output: str,
    vocab_size: int = 8192,
    model_type: str = "bpe",
    text_field: str = "text",
) -> str:
    """Trains on `source`; writes `output` (``.model``: SentencePiece, ``.json``: HF BPE)."""
    if not output.endswith((".model", ".json")):
        raise ValueError(
            f"--output must end in .model (SentencePiece) or .json (HF tokenizers), got {output!r}."
        )
    if output.endswith(".json") and model_type != "bpe":
        raise ValueError(f"A tokenizers .json is a byte-level BPE; got --model_type={model_type}.")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    if output.endswith(".model"):
        _train_sentencepiece(source, output, vocab_size, model_type, text_field)
    else:
        _train_hf_bpe(source, output, vocab_size, text_field)
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help='"shakespeare", "english", a path/dir/glob')
    parser.add_argument("--output", required=True, help="the .model or .json file to write")
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--model_type", default="bpe", choices=["bpe", "unigram"])
    parser.add_argument("--text_field", default="text")
    args = parser.parse_args(argv)
    print(
        train_tokenizer(args.input, args.output, args.vocab_size, args.model_type, args.text_field)
    )


if __name__ == "__main__":
    main()
