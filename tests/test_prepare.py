"""prepare at scale: HF tokenizers, sharded / parallel / resumable prepare, the "english"
corpus and its split, and bad input."""

import gzip
import json
import os
import stat
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scion_jax.data import (
    PiecedTokens,
    default_data_config,
    english,
    get_tokenizer,
    load_corpus,
    load_tokenizer,
    make_train_iterator,
    prepare,
    train_tokenizer,
)
from scion_jax.data import corpus as corpus_lib
from scion_jax.data.dictzip import DictzipReader
from scion_jax.data.sources import Splitter, read_unit, units

WORDS = "thou art king crown sword alpha beta gamma delta river stone light dark".split()


def _text(n_words: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    lines = [" ".join(rng.choice(WORDS, 8)) for _ in range(n_words // 8)]
    return "\n".join(lines) + "\n"


def _mixed_source(root) -> str:
    """Seven input files of the three kinds, with mixed document sizes."""
    for i in range(4):
        (root / f"t{i}.txt").write_text(f"file {i}\n" + _text(60 + 40 * i, seed=i))
    rows = [{"text": f"row {i}: " + _text(16 + 8 * (i % 5), seed=10 + i)} for i in range(12)]
    (root / "r.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:6]))
    for j, part in enumerate((rows[6:9], rows[9:])):
        pq.write_table(pa.table({"text": [r["text"] for r in part]}), root / f"p{j}.parquet")
    return str(root / "*")


def _cfg(source, **kw):
    cfg = default_data_config()
    cfg.source = str(source)
    cfg.eval_fraction = 0.0
    cfg.update(kw)
    return cfg


def _batches(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b):
    return all(np.array_equal(x[k], y[k]) for x, y in zip(a, b, strict=True) for k in x)


def _assert_same_corpus(a_dir, b_dir):
    for split in ("train", "eval"):
        a, b = load_corpus(str(a_dir), split), load_corpus(str(b_dir), split)
        np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
        np.testing.assert_array_equal(a.doc_offsets, b.doc_offsets)


@pytest.fixture
def hf_tokenizer(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    for i in range(3):
        (root / f"t{i}.txt").write_text(_text(2000, seed=100 + i))
    path = str(root / "tok.json")
    train_tokenizer.main([f"--input={root}/t*.txt", "--vocab_size=400", f"--output={path}"])
    return path


def test_hf_tokenizer_round_trip_and_prepare(tmp_path, hf_tokenizer):
    src = _mixed_source(tmp_path)
    tok = get_tokenizer(_cfg(src, tokenizer=hf_tokenizer))
    assert tok.eos_id == 0 and 256 < tok.vocab_size <= 400
    sample = "thou art king,  ünïcode\n\tcrown — ☃"
    ids = tok.encode(sample)
    assert tok.decode(ids) == sample and len(ids) < len(sample.encode())  # merges learned
    assert tok.eos_id not in ids  # no BOS / EOS added by encode
    out = tmp_path / "prepared"
    prepare.main([f"--input={src}", f"--output={out}", f"--tokenizer={hf_tokenizer}"])
    index = json.loads((out / "index.json").read_text())
    assert index["vocab_size"] == tok.vocab_size and index["dtype"] == "uint16"
    train = load_corpus(str(out), "train", tokenizer=hf_tokenizer)
    docs = np.asarray(train.tokens)
    assert (docs == tok.eos_id).sum() == train.num_documents == 4 + 12  # one EOS per document
    first = docs[: train.doc_offsets[1]]  # p0.parquet's first row: units go in file order
    assert first[-1] == tok.eos_id
    assert tok.decode(first[:-1]) == next(read_unit(units(src)[0])).text
    mem = load_corpus(src, "train", tokenizer=hf_tokenizer, eval_fraction=0.0)
    np.testing.assert_array_equal(docs, mem.tokens)


def test_prepare_imports_neither_jax_nor_grain():
    """The prepare CLI and its forkserver workers start in a fraction of a second: the package
    imports JAX and grain only when a name that needs them is used."""
    code = (
        "import sys, scion_jax.data.prepare, scion_jax.data.train_tokenizer; "
        "assert not {'jax', 'grain'} & set(sys.modules), 'imported'; "
        "import scion_jax; scion_jax.scion; assert 'jax' in sys.modules; "
        # a submodule imported after the package keeps the package's name for the function
        "from scion_jax.newton_schulz import POLAR_EXPRESS; "
        "assert callable(scion_jax.newton_schulz), scion_jax.newton_schulz; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_hf_eos_comes_from_tokenizer_config(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    special = ["<pad>", "<sep>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=special, show_progress=False)
    tok.train_from_iterator([_text(200, seed=0)], trainer)
    path = str(tmp_path / "tokenizer.json")
    tok.save(path)
    assert load_tokenizer(path).eos_id is None  # no known EOS name: documents run together
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "<sep>"}}))
    assert load_tokenizer(path).eos_id == 1


def _kill_after(monkeypatch, n_markers: int):
    """Make the n-th unit marker write die (a prepare killed between a piece and its marker)."""
    real, calls = prepare._write_json, []

    def dying(path, obj):
        if path.endswith(".json") and os.sep + "pieces" + os.sep in path:
            calls.append(path)
            if len(calls) == n_markers:
                raise KeyboardInterrupt("killed")
        real(path, obj)

    monkeypatch.setattr(prepare, "_write_json", dying)


def test_sharded_prepare_equals_unsharded(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    src = _mixed_source(tmp_path / "in")
    args = [f"--input={src}", "--eval_fraction=0.3"]
    prepare.main([*args, f"--output={tmp_path / 'one'}"])
    sharded = tmp_path / "sharded"

    def shard(i: int) -> None:
        prepare.main([*args, f"--output={sharded}", "--num_shards=3", f"--shard_index={i}"])

    shard(2)
    with monkeypatch.context() as m:  # shard 0 (units 0, 3, 6) is killed at its second unit
        _kill_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            shard(0)
    assert not (sharded / "index.json").exists()
    with pytest.raises(ValueError, match="unfinished prepare"):
        load_corpus(str(sharded), "train")
    shard(1)  # not the last to finish: shard 0 still misses units
    assert not (sharded / "index.json").exists()
    pending = [k for k in (0, 3, 6) if not (sharded / "pieces" / f"{k:06d}.json").exists()]
    assert len(pending) == 2  # the killed unit (its pieces written, no marker) and the next
    (sharded / "pieces" / f"{pending[0]:06d}.train.bin.tmp99").write_bytes(b"half")  # killed
    done, real = [], prepare._prepare_unit
    with monkeypatch.context() as m:
        m.setattr(prepare, "_prepare_unit", lambda t, k, u: done.append(k) or real(t, k, u))
        shard(0)  # the rerun redoes only the units without a marker, then writes the index
        assert sorted(done) == pending and (sharded / "index.json").exists()
        shard(1)  # rerunning a finished directory does nothing
        assert sorted(done) == pending
    assert not list(sharded.rglob("*.tmp*"))
    _assert_same_corpus(tmp_path / "one", sharded)
    with pytest.raises(ValueError, match="eval_fraction differ"):
        prepare.main([f"--input={src}", f"--output={sharded}", "--eval_fraction=0.1"])
    # Two local processes (forkserver) give the same directory as one.
    prepare.main([*args, f"--output={tmp_path / 'two'}", "--processes=2"])
    _assert_same_corpus(tmp_path / "one", tmp_path / "two")


def test_loader_over_pieces_equals_one_array(tmp_path):
    src = _mixed_source(tmp_path)
    out = tmp_path / "prepared"
    prepare.main([f"--input={src}", f"--output={out}", "--num_shards=2", "--shard_index=1"])
    prepare.main([f"--input={src}", f"--output={out}", "--num_shards=2", "--shard_index=0"])
    disk = load_corpus(str(out), "train")
    assert isinstance(disk.tokens, PiecedTokens) and len(disk.tokens.pieces) == 7
    mem = load_corpus(src, "train", eval_fraction=0.0)  # one contiguous array
    np.testing.assert_array_equal(disk.tokens[5:-3], mem.tokens[5:-3])
    kw = dict(seq_len=16, global_batch_size=8, seed=2)
    for process in range(2):
        kw.update(process_index=process, process_count=2)
        a, b = make_train_iterator(_cfg(out), **kw), make_train_iterator(_cfg(src), **kw)
        assert _same(_batches(a, 7), _batches(b, 7))
        state = a.get_state()
        expected = _batches(a, 4)
        resumed = make_train_iterator(_cfg(out), **kw)
        resumed.set_state(state)
        assert _same(_batches(resumed, 4), expected) and _same(_batches(b, 4), expected)


def test_num_epochs_one_refuses_a_run_that_would_repeat_data(tmp_path):
    (tmp_path / "a.txt").write_text(_text(400, seed=0))
    cfg = _cfg(tmp_path / "a.txt", num_epochs=1)
    kw = dict(seq_len=16, global_batch_size=4, seed=0)
    steps = make_train_iterator(cfg, **kw).steps_per_epoch
    it = make_train_iterator(cfg, **kw, num_steps=steps)  # exactly one epoch: fine
    assert len(_batches(it, steps)) == steps
    with pytest.raises(ValueError, match=rf"{steps + 1} steps .* would repeat data"):
        make_train_iterator(cfg, **kw, num_steps=steps + 1)
    make_train_iterator(_cfg(tmp_path / "a.txt"), **kw, num_steps=10 * steps)  # repeats allowed


# --- the "english" corpus ---------------------------------------------------------------


def _b64(n: int) -> str:
    digits = ""
    while True:
        n, r = divmod(n, 64)
        digits = english._B64[r] + digits
        if not n:
            return digits


def _dictzip(data: bytes, chunk: int, *, version: int = 1, comment: bool = False) -> bytes:
    """`data` in dictzip's format (dictzip(1)): a gzip member, flushed every `chunk` bytes,
    with the compressed chunk sizes in the header's RA field and a file name (as dictzip);
    `comment` adds a comment and a header CRC (the optional gzip fields)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [c.compress(data[i : i + chunk]) + c.flush(zlib.Z_FULL_FLUSH)
             for i in range(0, len(data), chunk)]  # fmt: skip
    parts[-1] += c.flush()
    ra = struct.pack(f"<HHH{len(parts)}H", version, chunk, len(parts), *map(len, parts))
    extra = b"XY\x02\x00ab" + b"RA" + struct.pack("<H", len(ra)) + ra  # another subfield first
    flags, tail = (0x1E, b"x.dict\0a comment\0\0\0") if comment else (0x0C, b"x.dict\0")
    header = b"\x1f\x8b\x08" + bytes([flags]) + bytes(6) + struct.pack("<H", len(extra))
    return header + extra + tail + b"".join(parts) + struct.pack("<II", zlib.crc32(data), len(data))


def test_dictzip_random_access(tmp_path):
    data = np.random.default_rng(0).integers(0, 16, 1000, np.uint8).tobytes()
    reads = [(130, 20), (0, 1000), (63, 2), (999, 1), (500, 0), (10, 300), (640, 64)]
    for comment in (False, True):
        (tmp_path / "x.dz").write_bytes(_dictzip(data, 64, comment=comment))
        assert gzip.decompress((tmp_path / "x.dz").read_bytes()) == data  # still a gzip file
        with DictzipReader(str(tmp_path / "x.dz")) as dz:
            assert [dz.read(o, n) for o, n in reads] == [data[o : o + n] for o, n in reads]
            assert dz.size == 16 * 64  # 1000 bytes in 16 chunks of 64: at most 1024
            for o, n in ((990, 20), (1000, 1), (5000, 1)):
                with pytest.raises(ValueError, match="past the end"):
                    dz.read(o, n)
            with pytest.raises(ValueError, match="must be ≥ 0"):
                dz.read(-1, 2)
    damaged = bytearray(_dictzip(data, 32))
    damaged[24:26] = struct.pack("<H", 64)  # CHLEN says 64, the chunks hold 32
    (tmp_path / "damaged.dz").write_bytes(damaged)
    with DictzipReader(str(tmp_path / "damaged.dz")) as dz, pytest.raises(ValueError, match="inf"):
        dz.read(0, 100)
    (tmp_path / "plain.gz").write_bytes(gzip.compress(data))  # no RA field
    (tmp_path / "v2.dz").write_bytes(_dictzip(data, 64, version=2))
    (tmp_path / "short").write_bytes(b"\x1f")
    for name in ("plain.gz", "v2.dz", "short"):
        with pytest.raises(ValueError, match=f"{name}: not a dictzip file"):
            DictzipReader(str(tmp_path / name))


def _stand_ins(root) -> english.EnglishPaths:
    """Small files in the Debian packages' formats: a `bible` script, a dictd GCIDE and
    WordNet data files."""
    bible = root / "bible"
    books = "".join(
        f"\n{b} 1\n\n  1 Verse of {b}. {_text(24, seed=i)}" for i, b in enumerate(english.KJV_BOOKS)
    )  # noqa: E501
    (root / "kjv.txt").write_text(books)
    bible.write_text(f"#!/bin/sh\ncat {root / 'kjv.txt'}\n")
    bible.chmod(bible.stat().st_mode | stat.S_IXUSR)
    entries = [("00-database-info", "header\n")] + [
        (w, f"{w} \\{w}\\ n.\n   {_text(16, seed=j)}") for j, w in enumerate(
            ["Abbey", "apple", "Crown", "dark", "Light", "river", "Stone", "Zeal", "3-D"])
    ]  # fmt: skip
    entries.append(("Stonework", "Stonework n. a mason\x92s work.\n"))  # a stray cp1252 byte
    data, index = b"", []
    for headword, text in entries:
        raw = text.encode("utf-8") if "\x92" not in text else text.encode("latin-1")
        index.append(f"{headword}\t{_b64(len(data))}\t{_b64(len(raw))}")
        data += raw
    index.append(f"Zealous\t{_b64(data.index(b'Zeal'))}\t{_b64(10)}")  # a 2nd headword
    index.append(f"Ardent\t{_b64(data.index(b'Light'))}\t{_b64(10)}")  # first in index order
    (root / "gcide.index").write_text("\n".join(sorted(index)) + "\n")
    (root / "gcide.dict.dz").write_bytes(_dictzip(data, 16))  # entries span chunks
    wordnet = root / "wordnet"
    wordnet.mkdir()
    lexfile = {"noun": (5, 18), "verb": (29, 38), "adj": (0, 44), "adv": (2, 2)}
    for pos, (a, b) in lexfile.items():
        lines = ["  1 This software and database is being provided ...  "]
        for k in range(6):
            lines.append(
                f"{k:08d} {(a, b)[k % 2]:02d} x 02 big_{pos}(a) 0 word{k} 0 000 | "
                f"a gloss {k} of {pos}; {_text(8, seed=k)}".rstrip()
            )
        (wordnet / f"data.{pos}").write_text("\n".join(lines) + "\n")
    return english.EnglishPaths(str(bible), str(root / "gcide"), str(wordnet))


def _group_split(source: str, eval_fraction: float) -> dict[str, set[str]]:
    """Which split each group's documents landed in, from the in-memory corpus."""
    tok = get_tokenizer(_cfg(source))
    text = {s: tok.decode(load_corpus(source, s, eval_fraction=eval_fraction).tokens)
            for s in ("train", "eval")}  # fmt: skip
    where: dict[str, set[str]] = {}
    for unit in units(source):
        for doc in read_unit(unit):
            where.setdefault(doc.group, set()).update(s for s in text if doc.text in text[s])
    return where


def test_english_split_by_document_on_stand_ins(tmp_path, monkeypatch):
    monkeypatch.setattr(english, "DEFAULT_PATHS", _stand_ins(tmp_path))
    corpus_lib._in_memory.cache_clear()
    try:
        source_units = units("english")
        kinds = [u.kind for u in source_units]
        assert (
            kinds.count("text") >= 30 and kinds[-11:] == ["kjv"] + ["gcide"] * 6 + ["wordnet"] * 4
        )
        docs = [d for u in source_units[-11:] for d in read_unit(u)]
        assert all(
            d.group in u.groups for u in source_units for d in read_unit(u) if u.kind != "text"
        )
        gcide = [d for d in docs if d.group.startswith("gcide:")]
        assert len(gcide) == 10 and not any("header" in d.text for d in gcide)  # metadata out
        stonework = next(d for d in gcide if d.text.startswith("Stonework"))
        assert "mason’s" in stonework.text and sum("Zeal" in d.text for d in gcide) == 1
        assert {d.group for d in gcide} == {f"gcide:{c}" for c in "#ACDRSZ"}
        assert next(d for d in gcide if d.text.startswith("Light")).group == "gcide:A"
        assert len([d for d in docs if d.group.startswith("kjv:")]) == 66
        assert "big adj, word0: a gloss 0 of adj" in next(
            d.text for d in docs if d.group == "wordnet:adj.all"
        )
        where = _group_split("english", 0.2)
        assert all(len(s) == 1 for s in where.values())  # no group straddles the split
        held = {g for g, s in where.items() if s == {"eval"}}
        splitter = Splitter(source_units, 0.2)
        assert held == {g for g in where if splitter.split(g) == "eval"}
        declared = {g for u in source_units for g in u.groups}
        assert sum(splitter.split(g) == "eval" for g in declared) == round(0.2 * len(declared))
        assert {g.split(":")[0] for g in held} >= {"shakespeare", "kjv"}  # mixed corpora
        corpus_lib._in_memory.cache_clear()
        assert _group_split("english", 0.2) == where  # deterministic
    finally:
        corpus_lib._in_memory.cache_clear()


def test_gcide_index_parses_like_dictd(tmp_path):
    lines = [
        "00-database-url\tA\tZ",  # metadata: skipped
        "ardor\tBA\tF",  # offset 64
        "Zeal\tBA\tG",  # the same entry: it belongs to "ardor", first in index order
        "été\tC\tD",  # not A–Z: "#"
        "ıota\tE\tD",  # "ı".upper() is "I"
        "ßtraße\tG\tD\r",  # "SS": "#"; a CRLF line end
        "zebra\tH\tD",
        "last\tI\tJ",  # no newline at the end of the file
    ]
    (tmp_path / "g.index").write_bytes("\n".join(lines).encode())
    offset, length, letter = english._gcide_index(str(tmp_path / "g.index"))
    assert offset.tolist() == [2, 4, 6, 7, 8, 64] and length.tolist() == [3, 3, 3, 3, 9, 5]
    assert bytes(letter) == b"#I#ZLA"
    (tmp_path / "empty.index").write_bytes(b"")
    assert [len(a) for a in english._gcide_index(str(tmp_path / "empty.index"))] == [0, 0, 0]


def test_gcide_bad_index_names_the_line(tmp_path):
    for i, (lines, error) in enumerate([
        (b"a\tA\tB\nb\tC\n", r"g0.index:2: not a dictd index line"),
        (b"a\tA\tB-\nb\tC-\tD\n", r"g1.index:1: b'-' is not a dictd base-64 digit"),
        (b"a\tA\tB\nb\tAAAAAAAAAAB\tD\n", r"g2.index:2: a number of > 10 digits"),
        (b"a\tA\tB\n\xe9t\xe9\tC\tD\n", r"g3.index:2: the headword is not UTF-8"),
        (b"a\tA\tB\tC\nb\tD\n", r"g4.index:1: not a dictd index line"),  # 4 tabs, 2 lines
        (b"a\tA\tAAAAAAAAAAB\nb\tAAAAAAAAAAB\tD\n", r"g5.index:1: a number of > 10 digits"),
    ]):  # fmt: skip
        (tmp_path / f"g{i}.index").write_bytes(lines)
        with pytest.raises(ValueError, match=error):
            english._gcide_index(str(tmp_path / f"g{i}.index"))


def test_english_missing_package_names_it(tmp_path, monkeypatch):
    paths = english.EnglishPaths(str(tmp_path / "no_bible"), english.DEFAULT_PATHS.gcide)
    monkeypatch.setattr(english, "DEFAULT_PATHS", paths)
    with pytest.raises(ValueError, match=r"'bible-kjv'.*make corpus.*apt-get install -y bible"):
        units("english")
    monkeypatch.setattr(english, "DEFAULT_PATHS", english.EnglishPaths("sh", str(tmp_path / "g")))
    with pytest.raises(ValueError, match="'dict-gcide'.*g.dict.dz"):
        units("english")


def test_english_corpus_installed():
    """The real corpus (``make corpus``): size, groups and a deterministic by-document split."""
    try:
        source_units = units("english")
    except ValueError as e:
        pytest.skip(f"run `make corpus` to install the english corpus ({e})")
    groups = [g for u in source_units for g in u.groups]
    assert len(groups) == len(set(groups)) == 42 + 66 + 27 + 45
    sizes = dict.fromkeys(source_units, 0)
    for unit in source_units:
        for doc in read_unit(unit):
            assert doc.group in unit.groups
            sizes[unit] += len(doc.text.encode())
    size = sum(sizes.values())
    assert size >= 50 * 10**6 and size >= 2**25  # ≥ 50 MB, ≥ 2^25 byte tokens
    for kind in ("kjv", "gcide"):  # the size hints that schedule their units: ±5% in all
        hinted = [(u.size, n) for u, n in sizes.items() if u.kind == kind]
        assert sum(h for h, _ in hinted) == pytest.approx(sum(n for _, n in hinted), rel=0.05)
    splitter = Splitter(source_units, 0.1)
    held = sorted(g for g in groups if splitter.split(g) == "eval")
    assert held == sorted(g for g in groups if Splitter(units("english"), 0.1).split(g) == "eval")
    assert len(held) == 18 and {g.split(":")[0] for g in held} == {
        "shakespeare", "kjv", "gcide", "wordnet"}  # fmt: skip


# --- bad input ------------------------------------------------------------------------------


def _prepare_fails(tmp_path, source, match, **kw):
    out = tempfile.mkdtemp(dir=tmp_path)
    with pytest.raises(ValueError, match=match):
        prepare.write_prepared(str(source), str(out), **kw)
    assert not os.path.exists(os.path.join(out, "index.json"))  # never a silent partial corpus
    assert not [f for f in os.listdir(os.path.join(out, "pieces")) if ".tmp" in f]
    with pytest.raises(ValueError, match=match):
        load_corpus(str(source), "train", eval_fraction=0.0, **kw)


def test_bad_input_names_the_file_and_row(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text(_text(80, seed=0))
    bad = tmp_path / "bad"
    bad.mkdir()

    def case(name, content):
        path = bad / name
        path.write_bytes(content) if isinstance(content, bytes) else content(path)
        return path

    # non-UTF-8 bytes: text and jsonl, with the line
    t = case("latin.txt", b"line one\nline two caf\xe9\n")
    _prepare_fails(tmp_path, t, r"latin.txt:2: not valid UTF-8")
    t.unlink()
    j = case("x.jsonl", b'{"text": "fine"}\n\n{"text": "caf\xe9"}\n')
    _prepare_fails(tmp_path, j, r"x.jsonl:3: not valid UTF-8")
    # missing text field: jsonl line, parquet column, parquet null row
    j.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    _prepare_fails(tmp_path, j, r"x.jsonl:2: expected a JSON object with a string field 'text'")
    j.write_text('{"text": "fine"}\n{"text": 7}\n')
    _prepare_fails(tmp_path, j, r"x.jsonl:2: field 'text' is not a string")
    j.unlink()
    p = bad / "x.parquet"
    pq.write_table(pa.table({"body": ["a", "b"]}), p)
    _prepare_fails(tmp_path, p, r"x.parquet' has no column 'text'")
    pq.write_table(pa.table({"text": ["a", None, "c"]}), p)
    _prepare_fails(tmp_path, p, r"x.parquet: row 1: column 'text' is null")
    # corrupt parquet: a truncated file, and a damaged page in row group 2 of 5
    pq.write_table(
        pa.table({"text": [f"row {i} " * 20 for i in range(500)]}), p, row_group_size=100
    )
    start = pq.ParquetFile(p).metadata.row_group(2).column(0).data_page_offset
    data = bytearray(p.read_bytes())
    p.write_bytes(data[: len(data) // 2])
    _prepare_fails(tmp_path, p, r"Cannot read parquet file .*x.parquet")
    for i in range(start + 20, start + 200):
        data[i] ^= 0xFF
    p.write_bytes(data)
    _prepare_fails(tmp_path, p, r"Corrupt parquet file .*x.parquet': row group 2 \(rows 200–299\)")
    p.unlink()
    # empty shards: an empty text file, a jsonl of blank lines, a parquet without rows
    for name, content in (("e.txt", b""), ("e.jsonl", b"\n\n")):
        e = case(name, content)
        _prepare_fails(tmp_path, e, rf"{name}' .*empty shard")
        e.unlink()
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), p)
    _prepare_fails(tmp_path, p, r"x.parquet' holds no documents \(an empty shard\)")
    # a prepared piece truncated after the index was written
    out = tmp_path / "prepared"
    prepare.write_prepared(str(good), str(out))
    piece = out / "pieces" / "000000.train.bin"
    piece.write_bytes(piece.read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"000000.train.bin' has \d+ bytes, but the index says"):
        load_corpus(str(out), "train")
    with pytest.raises(ValueError, match="Unknown tokenizer 'tok.vocab'.*tokenizer .json"):
        prepare.write_prepared(str(good), str(tmp_path / "o2"), tokenizer="tok.vocab")
    with pytest.raises(ValueError, match="not a Hugging Face tokenizer.json"):
        prepare.write_prepared(
            str(good), str(tmp_path / "o3"), tokenizer=str(case("t.json", b"{}"))
        )
