"""Train a SentencePiece tokenizer offline (hub tokenizers cannot be downloaded; DATA.md).

    python -m scion_jax.data.train_tokenizer --input=GLOB --vocab_size=8192 --output=tok.model

BPE by default (8k on 10 MB takes about a second); byte fallback keeps every input encodable;
an EOS piece is defined, and the data pipeline appends it after each document.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

from scion_jax.data.sources import iter_documents


def _lines(source: str, text_field: str) -> Iterator[str]:
    for doc in iter_documents(source, text_field):
        for line in doc.text.splitlines():
            if line.strip():
                yield line


def train_tokenizer(
    source: str,
    output: str,
    vocab_size: int = 8192,
    model_type: str = "bpe",
    text_field: str = "text",
) -> str:
    """Trains on every non-empty line of `source`; writes `output` (a ``.model`` path)."""
    import sentencepiece as spm

    if not output.endswith(".model"):
        raise ValueError(f"--output must end in .model, got {output!r}.")
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
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
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help='"shakespeare", a path, dir or glob')
    parser.add_argument("--output", required=True, help="path of the .model to write")
    parser.add_argument("--vocab_size", type=int, default=8192)
    parser.add_argument("--model_type", default="bpe", choices=["bpe", "unigram"])
    parser.add_argument("--text_field", default="text")
    args = parser.parse_args(argv)
    print(
        train_tokenizer(args.input, args.output, args.vocab_size, args.model_type, args.text_field)
    )


if __name__ == "__main__":
    main()
