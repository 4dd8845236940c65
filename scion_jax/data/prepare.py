"""Tokenize a corpus once into a memmap-able directory (see `scion_jax.data.corpus`).

    python -m scion_jax.data.prepare --input='data/*.jsonl' --output=DIR \
        --tokenizer=byte|path.model [--text_field=text] [--eval_fraction=0.01]

The held-out split is chosen by document group (file for .txt, play for "shakespeare",
line/row for jsonl/parquet), never by position inside a document.
"""

from __future__ import annotations

import argparse
import json

from scion_jax.data.corpus import write_prepared


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help='"shakespeare", a path, dir or glob')
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument("--tokenizer", default="byte", help='"byte" or a SentencePiece .model')
    parser.add_argument("--text_field", default="text", help="jsonl field / parquet column")
    parser.add_argument(
        "--eval_fraction", type=float, default=0.0, help="fraction of documents (groups) held out"
    )
    args = parser.parse_args(argv)
    index = write_prepared(
        args.input, args.output, args.tokenizer, args.text_field, args.eval_fraction
    )
    print(
        json.dumps({k: index[k] for k in ("tokenizer", "vocab_size", "dtype", "splits")}, indent=2)
    )


if __name__ == "__main__":
    main()
