"""Benchmark the streaming data pipeline of train_accelerate.py: tokens per second and peak memory.

Throughput: train_accelerate's own functions (`parse_args` with --streaming, `load_raw_datasets`, `build_datasets`)
stream a generated .txt corpus, tokenize it with tiktoken and pack it into blocks; every training block is read.
The baseline is raw tiktoken on the same text: the file read into memory, cut into the pipeline's pieces of
10,000 lines, and encoded by one `encode_ordinary_batch` call (tiktoken's thread pool). Both run in this process,
in alternating order, for --rounds rounds; the table reports medians and their ratio.

Memory: the pipeline streams a corpus of each of --sizes megabytes in a fresh Python process, which reports its
peak resident memory (ru_maxrss) after importing train_accelerate and after reading every block.

The corpora are copies of --corpus written to a temporary folder and deleted at the end.

    python bench/bench_data.py                        # 20 MB for throughput, 20 and 200 MB for memory (~2 minutes)
    python bench/bench_data.py --sizes 10,100 --rounds 5 --out /tmp/data.json

Prints a table and writes every figure as JSON (--out). CPU only.
"""

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from machine import environment

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))
# Offline, as in the tests: tiktoken reads GPT-2's BPE files from ../shared when they are there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEFAULT_CORPUS = SHARED / "corpora" / "tinyshakespeare.txt"
if not DEFAULT_CORPUS.is_file():
    DEFAULT_CORPUS = ROOT / "data" / "default_corpus.txt"
LABELS = {"pipeline": "train_accelerate streaming", "raw_tiktoken": "raw tiktoken (encode_ordinary_batch)"}
LINES_PER_PIECE = 10_000  # the pipeline encodes a .txt file 10,000 lines at a time; the baseline uses the same pieces
# Linux carries a process's resident size at fork over into the child's ru_maxrss, even across exec: a probe started
# by this process (which holds torch and the throughput run's data) would report this process's size as its peak.
# Probes are started by this small launcher instead, so that what they report is their own.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,200", help="corpus sizes in MB for peak memory (default: 20,200)")
    parser.add_argument("--throughput-mb", type=int, default=20, help="corpus size in MB for tokens/s (default: 20)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated pipeline/raw rounds (default: 3)")
    parser.add_argument("--block-size", type=int, default=1024, help="tokens per packed block (default: 1024)")
    parser.add_argument("--corpus", default=str(DEFAULT_CORPUS), help=f"text to repeat (default: {DEFAULT_CORPUS})")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results_data.json"), help="JSON path")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: one memory run on this file
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes takes comma-separated integers such as 20,200, got {args.sizes!r}")
    for name in ("throughput_mb", "rounds", "block_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if any(size <= 0 for size in args.sizes):
        parser.error(f"--sizes must all be positive, got {args.sizes}")
    if not os.path.isfile(args.corpus) or os.path.getsize(args.corpus) == 0:
        parser.error(f"--corpus {args.corpus!r} is not a non-empty file")
    return args


def make_corpus(source: str, megabytes: int, path: Path) -> int:
    """Write whole copies of the source file to `path` until it holds at least `megabytes` MB; returns its size."""
    text = Path(source).read_text(encoding="utf-8")
    if not text.endswith("\n"):
        text += "\n"
    copies = -(-megabytes * 1_000_000 // len(text.encode("utf-8")))
    with open(path, "w", encoding="utf-8") as file:
        for _ in range(copies):
            file.write(text)
    return path.stat().st_size


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, kilobytes on Linux


def pipeline_blocks(path: str, block_size: int):
    """The training blocks of train_accelerate's streaming pipeline on `path`, built as its run() builds them."""
    import train_accelerate

    argv = ["--train_file", path, "--streaming", "--block_size", str(block_size)]
    args = train_accelerate.parse_args([*argv, "--per_device_eval_batch_size", "1", "--eval_iters", "1"])
    raw, documents = train_accelerate.load_raw_datasets(args)
    train, _ = train_accelerate.build_datasets(args, raw, documents, block_size)
    return train  # one block is held out for validation; the rest is what an epoch of training reads


def pipeline_tokens(path: str, block_size: int) -> int:
    return sum(len(row["input_ids"]) for row in pipeline_blocks(path, block_size))


def raw_tokens(path: str) -> int:
    from tokenization_gpt2edu import tiktoken_encoding

    with open(path, encoding="utf-8") as file:
        lines = file.readlines()
    pieces = ["".join(lines[i : i + LINES_PER_PIECE]) for i in range(0, len(lines), LINES_PER_PIECE)]
    del lines
    return sum(len(ids) for ids in tiktoken_encoding().encode_ordinary_batch(pieces))


def timed(function, *args) -> tuple[int, float]:
    gc.collect()
    start = time.perf_counter()
    tokens = function(*args)
    return tokens, time.perf_counter() - start


def measure_throughput(path: str, block_size: int, rounds: int) -> dict:
    """Pipeline and raw tiktoken on the same file, in alternating order; tokens/s of each round."""
    import train_accelerate  # noqa: F401  (warm-up: imports, tiktoken's BPE tables, the page cache)

    measures = {"pipeline": partial(pipeline_tokens, path, block_size), "raw_tiktoken": partial(raw_tokens, path)}
    runs = {name: [] for name in measures}
    timed(measures["raw_tiktoken"])
    for round_index in range(rounds):
        order = list(measures) if round_index % 2 == 0 else list(reversed(measures))
        for name in order:
            tokens, seconds = timed(measures[name])
            runs[name].append({"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds})
    medians = {name: statistics.median(run["tokens_per_s"] for run in runs[name]) for name in runs}
    pairs = zip(runs["pipeline"], runs["raw_tiktoken"], strict=True)
    paired = [pipeline["tokens_per_s"] / raw["tokens_per_s"] for pipeline, raw in pairs]
    return {
        "rounds": runs,
        "median_tokens_per_s": medians,
        "ratio_of_medians": medians["pipeline"] / medians["raw_tiktoken"],
        "median_paired_ratio": statistics.median(paired),
    }


def probe(path: str, block_size: int) -> None:
    """Run in a fresh process: stream every block of `path` and print the peak memory as JSON."""
    import train_accelerate  # noqa: F401  (imported first, so that its cost is measured on its own)

    after_import = peak_rss_mb()
    tokens, seconds = timed(pipeline_tokens, path, block_size)
    print(json.dumps({"tokens": tokens, "seconds": seconds, "rss_after_import_mb": after_import,
                      "peak_rss_mb": peak_rss_mb()}))  # fmt: skip


def measure_memory(path: Path, block_size: int) -> dict:
    probe_command = [sys.executable, __file__, "--probe", str(path), "--block-size", str(block_size)]
    command = [sys.executable, "-c", LAUNCHER, *probe_command]
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ.copy())
    if result.returncode != 0:
        raise RuntimeError(f"the memory probe failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def print_table(results: dict) -> None:
    env, speed, memory = results["environment"], results["throughput"], results["memory"]
    print(f"\n{env['date']}  {env['cpu']} ({env['cpu_count']} CPUs)  python {env['python']}  "
          f"datasets {env['datasets']}  pyarrow {env['pyarrow']}  tiktoken {env['tiktoken']}")  # fmt: skip
    print(f"load average at start / end: {env['load_average_at_start'][0]:.2f} / {env['load_average_at_end'][0]:.2f}")
    print(f"\nthroughput, {speed['corpus_mb']:.1f} MB corpus, block size {results['block_size']}, "
          f"median of {len(speed['rounds']['pipeline'])} alternated rounds")  # fmt: skip
    print(f"{'':<34}{'tokens/s':>12}")
    for name, label in LABELS.items():
        print(f"{label:<38}{speed['median_tokens_per_s'][name] / 1e6:>7.2f} M")
    print(f"{'pipeline / raw':<38}{speed['ratio_of_medians']:>7.2f} x   (median of per-round ratios "
          f"{speed['median_paired_ratio']:.2f} x; target >= 0.80)")  # fmt: skip
    print("\npeak memory of the streaming pipeline, fresh process each")
    print(f"{'corpus':>10}{'tokens':>14}{'tokens/s':>11}{'after import':>14}{'peak RSS':>11}")
    for row in memory:
        print(f"{row['corpus_mb']:>7.1f} MB{row['tokens']:>14,}{row['tokens'] / row['seconds'] / 1e6:>9.2f} M"
              f"{row['rss_after_import_mb']:>11.0f} MB{row['peak_rss_mb']:>8.0f} MB")  # fmt: skip
    growth = results["peak_growth_mb"]
    print(f"peak growth from {memory[0]['corpus_mb']:.0f} MB to {memory[-1]['corpus_mb']:.0f} MB of text: "
          f"{growth:+.0f} MB (target <= 100 MB)")  # fmt: skip
    verdict = {name: "met" if met else "MISSED" for name, met in results["targets_met"].items()}
    print(f"\ntargets: throughput {verdict['throughput']}, memory {verdict['memory']}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.probe:
        probe(args.probe, args.block_size)
        return 0
    results = {"block_size": args.block_size, "corpus_source": args.corpus}
    results["environment"] = environment("datasets", "pyarrow", "tiktoken")
    with tempfile.TemporaryDirectory(prefix="bench_data_") as folder:
        path = Path(folder) / f"corpus_{args.throughput_mb}mb.txt"
        size = make_corpus(args.corpus, args.throughput_mb, path)
        print(f"throughput: {size / 1e6:.1f} MB corpus, {args.rounds} rounds ...", flush=True)
        speed = measure_throughput(str(path), args.block_size, args.rounds)
        results["throughput"] = {"corpus_mb": size / 1e6, **speed}
        path.unlink()
        results["memory"] = []
        for megabytes in sorted(args.sizes):
            path = Path(folder) / f"corpus_{megabytes}mb.txt"
            size = make_corpus(args.corpus, megabytes, path)
            print(f"memory: {size / 1e6:.1f} MB corpus in a fresh process ...", flush=True)
            results["memory"].append({"corpus_mb": size / 1e6, **measure_memory(path, args.block_size)})
            path.unlink()
    results["environment"]["load_average_at_end"] = os.getloadavg()
    results["peak_growth_mb"] = results["memory"][-1]["peak_rss_mb"] - results["memory"][0]["peak_rss_mb"]
    results["targets_met"] = {
        "throughput": results["throughput"]["ratio_of_medians"] >= 0.8,
        "memory": results["peak_growth_mb"] <= 100,
    }
    print_table(results)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
