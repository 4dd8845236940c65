"""Tokenize a corpus once into a memmap-able directory: parallel, sharded and resumable.

    python -m scion_jax.data.prepare --input='data/*.jsonl' --output=DIR \
        --tokenizer=byte|tok.model|tokenizer.json [--text_field=text] [--eval_fraction=0.01] \
        [--processes=N] [--num_shards=S --shard_index=i]

The work is a list of units (one per input file, or slices of the embedded corpora;
`scion_jax.data.sources.units`), tokenized by N local processes. With S shards, task i (a
SLURM array element or pod worker, all writing the same shared DIR) takes the units k with
k mod S == i. A finished unit k leaves, for each split it has text in,
``pieces/{k:06d}.{train,eval}.bin`` (raw tokens) and ``pieces/{k:06d}.{train,eval}.docs.npy``
(document starts in the piece) and, last, the marker ``pieces/{k:06d}.json`` (token and
document counts of both splits); a rerun (with any S) skips units that have one. The task that finds
every unit done assembles the directory: ``{train,eval}.docs.npy`` (global document starts),
then ``index.json``. Every file is written under a temporary name and renamed, and the index
last, so a killed prepare never leaves a directory that looks complete: readers need
``index.json``. ``plan.json`` (written first) makes every task and rerun agree on the settings.

The held-out split is chosen by document group (file for .txt, play / book / letter for the
embedded corpora, line / row for jsonl / parquet), never by position inside a document.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import multiprocessing
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from scion_jax.data.corpus import FORMAT, INDEX, PLAN, SPLITS, no_train_text, tokenize_unit
from scion_jax.data.sources import Splitter, Unit, units
from scion_jax.data.tokenizers import load_tokenizer, token_dtype

PIECES = "pieces"


def _atomic(path: str, write: Callable[[str], None]) -> None:
    """`write(tmp)` then rename tmp → path (atomic on POSIX filesystems)."""
    tmp = f"{path}.tmp{os.getpid()}"
    write(tmp)
    os.replace(tmp, path)


def _write_json(path: str, obj: Any) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)

    _atomic(path, write)


def _save_npy(path: str, array: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)

    _atomic(path, write)


def _piece(k: int, suffix: str) -> str:
    return os.path.join(PIECES, f"{k:06d}.{suffix}")


@dataclasses.dataclass(frozen=True)
class _Task:
    """What every unit of one prepare shares (sent to each worker once, not with every unit:
    the splitter lists every known group)."""

    out_dir: str
    tokenizer: str
    text_field: str
    splitter: Splitter


_worker_task: _Task | None = None  # a pool worker's task, set by `_init_worker`


def _init_worker(task: _Task) -> None:
    global _worker_task
    _worker_task = task


def _prepare_in_worker(job: tuple[int, Unit]) -> dict[str, Any]:
    return _prepare_unit(_worker_task, *job)


@functools.lru_cache(maxsize=2)
def _tokenizer(spec: str):
    return load_tokenizer(spec)


def _prepare_unit(task: _Task, k: int, unit: Unit) -> dict[str, Any]:
    """Tokenizes unit k into its piece files, the marker last; returns the marker. A split the
    unit has no text in gets no files (the marker says 0 tokens)."""
    out_dir = task.out_dir
    tok = _tokenizer(task.tokenizer)
    dtype = token_dtype(tok.vocab_size)
    tmp = {s: os.path.join(out_dir, _piece(k, f"{s}.bin")) + f".tmp{os.getpid()}" for s in SPLITS}
    files: dict[str, Any] = {}  # opened on a split's first document; buffered writes
    counts = dict.fromkeys(SPLITS, 0)
    starts: dict[str, list[int]] = {s: [] for s in SPLITS}
    try:
        for split, ids in tokenize_unit(unit, tok, task.splitter, task.text_field):
            if split not in files:
                files[split] = open(tmp[split], "wb")  # noqa: SIM115 (closed below)
            starts[split].append(counts[split])
            counts[split] += len(ids)
            files[split].write(ids.astype(dtype, copy=False))
    except Exception:  # bad input: leave nothing behind but the error
        for f in files.values():
            f.close()
            os.remove(f.name)
        raise
    for f in files.values():
        f.close()
    marker: dict[str, Any] = {"unit": unit.name, "splits": {}}
    for s in files:
        os.replace(tmp[s], os.path.join(out_dir, _piece(k, f"{s}.bin")))
        _save_npy(
            os.path.join(out_dir, _piece(k, f"{s}.docs.npy")), np.asarray(starts[s], np.int64)
        )
    for s in SPLITS:
        marker["splits"][s] = {"num_tokens": counts[s], "num_documents": len(starts[s])}
    _write_json(os.path.join(out_dir, _piece(k, "json")), marker)
    return marker


def _size(unit: Unit) -> int:
    """About how many bytes `unit` reads: its hint, else its file's size (0: no file)."""
    if unit.size >= 0:
        return unit.size
    return os.path.getsize(unit.path) if os.path.isfile(unit.path) else 0


def _finished(out_dir: str, k: int, unit: Unit, itemsize: int) -> dict[str, Any] | None:
    """Unit k's marker if its pieces are complete, else None (then it is redone)."""
    try:
        with open(os.path.join(out_dir, _piece(k, "json"))) as f:
            marker = json.load(f)
        complete = marker["unit"] == unit.name and all(
            os.path.getsize(os.path.join(out_dir, _piece(k, f"{s}.bin")))
            == marker["splits"][s]["num_tokens"] * itemsize
            and os.path.exists(os.path.join(out_dir, _piece(k, f"{s}.docs.npy")))
            for s in SPLITS
            if marker["splits"][s]["num_documents"]
        )
    except (OSError, ValueError, KeyError):
        return None
    return marker if complete else None


def _remove_stale(out_dir: str, pending: set[int]) -> None:
    """Deletes the temporary files a killed run left for the units this task will redo."""
    for name in os.listdir(os.path.join(out_dir, PIECES)):
        k = name.split(".")[0]
        if ".tmp" in name and k.isdigit() and int(k) in pending:
            os.remove(os.path.join(out_dir, PIECES, name))


def _check_plan(out_dir: str, plan: dict[str, Any]) -> None:
    path = os.path.join(out_dir, PLAN)
    if not os.path.exists(path):
        _write_json(path, plan)
        return
    with open(path) as f:
        old = json.load(f)
    differ = sorted(k for k in plan.keys() | old.keys() if plan.get(k) != old.get(k))
    if differ:
        raise ValueError(
            f"Output directory {out_dir!r} holds a prepare with other settings "
            f"({', '.join(differ)} differ): use a new --output, or delete it to start over."
        )


def assemble(out_dir: str) -> dict[str, Any] | None:
    """Writes the global document offsets, then ``index.json``, once every unit is done;
    returns the index, or None while some unit is not."""
    with open(os.path.join(out_dir, PLAN)) as f:
        plan = json.load(f)
    itemsize = np.dtype(plan["dtype"]).itemsize
    names = plan["units"]
    markers = [_finished(out_dir, k, Unit(n, "", "", None), itemsize) for k, n in enumerate(names)]
    if any(m is None for m in markers):
        return None
    index = dict(plan, format=FORMAT, splits={})
    for s in SPLITS:
        counts = [m["splits"][s]["num_tokens"] for m in markers]
        bases = np.cumsum([0] + counts[:-1], dtype=np.int64)
        with_text = [k for k, m in enumerate(markers) if m["splits"][s]["num_documents"]]
        docs = [np.load(os.path.join(out_dir, _piece(k, f"{s}.docs.npy"))) for k in with_text]
        offsets = np.concatenate([d + bases[k] for d, k in zip(docs, with_text)] or [[]])
        _save_npy(os.path.join(out_dir, f"{s}.docs.npy"), offsets.astype(np.int64))
        index["splits"][s] = {
            "pieces": [
                {"tokens": _piece(k, f"{s}.bin"), "num_tokens": counts[k]} for k in with_text
            ],
            "documents": f"{s}.docs.npy",
            "num_tokens": int(sum(counts)),
            "num_documents": len(offsets),
        }
    if index["splits"]["train"]["num_tokens"] == 0:
        raise no_train_text(plan["source"])
    _write_json(os.path.join(out_dir, INDEX), index)
    return index


def write_prepared(
    source: str,
    out_dir: str,
    tokenizer: str = "byte",
    text_field: str = "text",
    eval_fraction: float = 0.0,
    *,
    processes: int = 1,
    num_shards: int = 1,
    shard_index: int = 0,
) -> dict[str, Any] | None:
    """Tokenizes this shard's pending units of `source` into `out_dir` (module docstring);
    returns the index once every shard is done, else None."""
    if processes < 1:
        raise ValueError(f"--processes must be ≥ 1, got {processes}.")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise ValueError(
            f"Need 0 ≤ --shard_index < --num_shards, got {shard_index} / {num_shards}."
        )
    tok = load_tokenizer(tokenizer)
    source_units = units(source)
    splitter = Splitter(source_units, eval_fraction)
    dtype = token_dtype(tok.vocab_size)
    plan = {
        "source": source,
        "tokenizer": tok.name,
        "vocab_size": tok.vocab_size,
        "eos_id": tok.eos_id,
        "dtype": dtype.name,
        "eval_fraction": eval_fraction,
        "text_field": text_field,
        "units": [u.name for u in source_units],
    }
    os.makedirs(os.path.join(out_dir, PIECES), exist_ok=True)
    _check_plan(out_dir, plan)
    task = _Task(out_dir, tok.name, text_field, splitter)
    jobs = [
        (k, u)
        for k, u in enumerate(source_units)
        if k % num_shards == shard_index and _finished(out_dir, k, u, dtype.itemsize) is None
    ]
    _remove_stale(out_dir, {k for k, _ in jobs})
    # Largest units first, so N processes finish together (equal sizes keep unit order).
    jobs.sort(key=lambda j: -_size(j[1]))
    if processes == 1 or len(jobs) < 2:
        for job in jobs:
            _prepare_unit(task, *job)
    else:
        # forkserver: workers fork from a fresh process, never from one running JAX threads.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["scion_jax.data.prepare"])
        workers = min(processes, len(jobs))
        with context.Pool(workers, initializer=_init_worker, initargs=(task,)) as pool:
            for _ in pool.imap_unordered(_prepare_in_worker, jobs):
                pass
    return assemble(out_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--input", required=True, help='"shakespeare", "english", a path/dir/glob')
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument(
        "--tokenizer", default="byte", help='"byte", a SentencePiece .model or a tokenizer.json'
    )
    parser.add_argument("--text_field", default="text", help="jsonl field / parquet column")
    parser.add_argument(
        "--eval_fraction", type=float, default=0.0, help="fraction of documents (groups) held out"
    )
    parser.add_argument("--processes", type=int, default=1, help="local tokenizer processes")
    parser.add_argument("--num_shards", type=int, default=1, help="independent tasks in all")
    parser.add_argument("--shard_index", type=int, default=0, help="this task, in [0, S)")
    args = parser.parse_args(argv)
    index = write_prepared(
        args.input,
        args.output,
        args.tokenizer,
        args.text_field,
        args.eval_fraction,
        processes=args.processes,
        num_shards=args.num_shards,
        shard_index=args.shard_index,
    )
    if index is None:
        print(f"Shard {args.shard_index} of {args.num_shards} done; other shards are pending.")
        return
    summary = {k: index[k] for k in ("tokenizer", "vocab_size", "eos_id", "dtype")}
    summary["splits"] = {
        s: {k: v for k, v in m.items() if k != "pieces"} for s, m in index["splits"].items()
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    # The importable module's main, so that workers can unpickle `_prepare_in_worker` by name.
    from scion_jax.data import prepare

    prepare.main()
