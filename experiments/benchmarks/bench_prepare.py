"""Tokenization throughput of `prepare` (1 vs 2 processes) and the "english" corpus end to end.

    python experiments/benchmarks/bench_prepare.py [--input=shakespeare --rounds=3 --corpus=english
        --out_dir=/dev/shm --no-trained]

Part 1: `write_prepared` of --input (default: Shakespeare, both editions, 9.6 MB in 77 files)
with the byte tokenizer, a SentencePiece 8k BPE and a Hugging Face `tokenizers` 32k byte-level
BPE (both trained here on the input; --no-trained leaves them out), and of --corpus (the
≈ 60 MB "english" corpus) with the byte tokenizer, each with --processes=1 and 2; rounds
interleave every (input, tokenizer, processes) case, the median is reported. MB/s = UTF-8 MB
of input text / wall time (a fresh output directory, in-process caches cleared). The
forkserver that forks the workers is started once per Python process, by an untimed warm-up;
its cost is printed on its own.

Part 2: ``python -m scion_jax.data.prepare`` of --corpus (the ≥ 50 MB "english" corpus) with the
byte tokenizer, 1 and 2 processes, in a child process: wall time and peak RSS (largest of the
child and its workers), beside the same for --input, to show that memory does not grow with
corpus size (pieces are streamed to disk).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from scion_jax.data import english, prepare, train_tokenizer

_RSS_CHILD = """
import resource, sys, time
from scion_jax.data import prepare
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
prepare.main(sys.argv[1:])
wall = time.perf_counter() - start
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print("RESULT", wall, max(own, workers), imported)
"""


def _prepare(source: str, tokenizer: str, processes: int, tmp: str) -> tuple[float, dict]:
    out = tempfile.mkdtemp(dir=tmp)
    # Load the tokenizer and GCIDE's index again, as `python -m scion_jax.data.prepare` and
    # the pool's workers do: one process would otherwise reuse what the last round loaded.
    prepare._tokenizer.cache_clear()
    english._gcide_index.cache_clear()
    start = time.perf_counter()
    index = prepare.write_prepared(source, out, tokenizer, processes=processes)
    wall = time.perf_counter() - start
    shutil.rmtree(out)
    return wall, index


def _child(source: str, processes: int, tmp: str) -> tuple[float, float, float, int]:
    """(wall s, peak RSS MiB, peak RSS MiB after the imports alone, byte tokens) of a prepare in
    a fresh Python process."""
    out = tempfile.mkdtemp(dir=tmp)
    args = [f"--input={source}", f"--output={out}", f"--processes={processes}"]
    run = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, *args], capture_output=True, text=True, check=True
    )
    line = next(x for x in run.stdout.splitlines() if x.startswith("RESULT"))
    wall, rss_kib, imported_kib = float(line.split()[1]), int(line.split()[2]), int(line.split()[3])
    with open(os.path.join(out, "index.json")) as f:
        index = json.load(f)
    shutil.rmtree(out)
    tokens = sum(s["num_tokens"] for s in index["splits"].values())
    return wall, rss_kib / 1024, imported_kib / 1024, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--input", default="shakespeare")
    parser.add_argument("--corpus", default="english")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default="")
    parser.add_argument(
        "--trained",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time a SentencePiece 8k and a tokenizers BPE 32k, trained on --input",
    )
    parser.add_argument(
        "--out_dir",
        default="",
        help="where outputs go (default: the system's temp dir; a tmpfs such as /dev/shm "
        "takes the disk's write-back out of the figures)",
    )
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_prepare_", dir=args.out_dir or None)
    results: dict = {"load_average_start": os.getloadavg(), "out_dir": tmp}
    try:
        tokenizers = {"byte": "byte"}
        trained = (("sentencepiece 8k", "sp.model", 8192), ("tokenizers 32k", "hf.json", 32768))
        for name, path, vocab in trained if args.trained else ():
            start = time.perf_counter()
            tokenizers[name] = train_tokenizer.train_tokenizer(
                args.input, os.path.join(tmp, path), vocab
            )
            print(f"trained {name} in {time.perf_counter() - start:.1f} s", flush=True)
        # The forkserver starts once per Python process: start it untimed, report its cost.
        results["forkserver_start_s"], _ = _prepare(args.input, "byte", 2, tmp)
        print(
            f"first 2-process prepare (starts the forkserver): "
            f"{results['forkserver_start_s']:.1f} s"
        )
        sources = list(dict.fromkeys((args.input, args.corpus)))
        cases = [(args.input, name, tok) for name, tok in tokenizers.items()]
        cases += [(args.corpus, "byte", "byte")] if args.corpus != args.input else []
        mb = {}
        for source in sources:
            _, index = _prepare(source, "byte", 1, tmp)  # byte tokens = UTF-8 bytes of text
            mb[source] = sum(s["num_tokens"] for s in index["splits"].values()) / 1e6
        walls: dict[tuple[str, str, int], list[float]] = {}
        for r in range(args.rounds):
            for source, name, tok in cases:
                for processes in (1, 2):
                    wall, _ = _prepare(source, tok, processes, tmp)
                    walls.setdefault((source, name, processes), []).append(wall)
            print(f"round {r + 1}/{args.rounds} done, load {os.getloadavg()[0]:.1f}", flush=True)
        print(f"\nmedian of {args.rounds} rounds")
        print("| input | tokenizer | MB | 1 process MB/s | 2 processes MB/s | 2 ÷ 1 |")
        print("|---|---|---:|---:|---:|---:|")
        for source, name, _ in cases:
            one, two = (statistics.median(walls[(source, name, p)]) for p in (1, 2))
            size = mb[source]
            print(f"| {source} | {name} | {size:.1f} | {size / one:.2f} | {size / two:.2f} | "
                  f"{one / two:.2f}× |")
            results[f"{source}/{name}"] = {
                "mb": size, "wall_1": walls[(source, name, 1)], "wall_2": walls[(source, name, 2)]
            }
        results["load_average_part1"] = os.getloadavg()
        print("\n| corpus | processes | wall s | byte tokens | peak RSS MiB (imports alone) |")
        print("|---|---:|---:|---:|---:|")
        for source in sources:
            for processes in (1, 2):
                wall, rss, imported, tokens = _child(source, processes, tmp)
                log2 = tokens.bit_length() - 1
                size = f"{tokens:,} (≥ 2^{log2})"
                print(
                    f"| {source} | {processes} | {wall:.1f} | {size} | {rss:.0f} ({imported:.0f}) |"
                )
                results[f"{source}/{processes}"] = {
                    "wall": wall,
                    "rss_mib": rss,
                    "imported_rss_mib": imported,
                    "tokens": tokens,
                }
        results["load_average_end"] = os.getloadavg()
        loads = results["load_average_start"], results["load_average_end"]
        print(f"\nload average (1, 5, 15 min): start {loads[0]}, end {loads[1]}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
